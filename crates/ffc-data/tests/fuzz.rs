//! Randomised robustness tests on stable Rust: mutated RecordIO files and validation packs must
//! produce errors, never panics or hangs.
//!
//! Inputs are mutations (bit flips, overwritten words, truncations, deletions, insertions,
//! splices) of the checked-in fixtures and of shrunken copies of them. The copies cut image bytes
//! to a few bytes, so that most mutations land in frame headers and pickle opcodes. Some pack
//! inputs also get a run of deeply nesting opcodes, which must be rejected without overflowing
//! the stack.
//!
//! Environment variables:
//!
//! - `FFC_FUZZ_INPUTS`: inputs per target (default 20000);
//! - `FFC_FUZZ_SEED`: generator seed (default 0);
//! - `FFC_FUZZ_START`: index of the first input (default 0), to replay a reported input.
//!
//! A long run: `FFC_FUZZ_INPUTS=1000000 cargo test --release -p ffc-data --test fuzz`.

mod common;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ffc_data::recordio::{MAGIC, RecordReader, encode_frames, parse_frame};
use ffc_data::{DataError, FaceSource, RecordDataset, ValidationPack};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// An input that makes no progress for this long counts as a hang.
const HANG_LIMIT: Duration = Duration::from_secs(10);

/// Share of inputs mutated from the full-size fixtures rather than the shrunken ones.
const FULL_SIZE_SHARE: f64 = 0.05;

/// Share of pack inputs that also get a run of deeply nesting opcodes.
const NESTING_SHARE: f64 = 0.02;

/// Records and images read per input, bounding the work of inputs with huge indexes.
const MAX_READS: usize = 200;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("{name}={text} is not an integer")),
        Err(_) => default,
    }
}

/// Fuzzing run settings read from the environment.
#[derive(Clone, Copy)]
struct Settings {
    inputs: u64,
    seed: u64,
    start: u64,
}

impl Settings {
    fn from_env() -> Self {
        Self {
            inputs: env_number("FFC_FUZZ_INPUTS", 20_000),
            seed: env_number("FFC_FUZZ_SEED", 0),
            start: env_number("FFC_FUZZ_START", 0),
        }
    }

    /// Returns the generator of input `index` of `target`.
    fn rng(&self, target: u64, index: u64) -> ChaCha8Rng {
        let mut key = [0u8; 32];
        for (chunk, word) in key.chunks_exact_mut(8).zip([self.seed, target, index, 0]) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        ChaCha8Rng::from_seed(key)
    }
}

/// Runs `run_input(index)` for every input on a worker thread, failing on a panic or on an
/// input that runs longer than [`HANG_LIMIT`]. Prints outcome counts and throughput.
fn fuzz<F>(name: &str, settings: Settings, run_input: F)
where
    F: Fn(u64) -> String + Send + Sync + 'static,
{
    let progress = Arc::new(AtomicUsize::new(0));
    let worker_progress = Arc::clone(&progress);
    let started = Instant::now();
    let worker = std::thread::spawn(move || {
        let mut outcomes = BTreeMap::<String, u64>::new();
        for index in settings.start..settings.start + settings.inputs {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run_input(index)))
                .map_err(|_| index)?;
            *outcomes.entry(outcome).or_default() += 1;
            worker_progress.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, u64>(outcomes)
    });

    let (mut last_count, mut last_change) = (0, Instant::now());
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
        let count = progress.load(Ordering::Relaxed);
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
        } else if last_change.elapsed() > HANG_LIMIT {
            panic!(
                "{name}: input {} ran for more than {HANG_LIMIT:?}; replay it with \
                 FFC_FUZZ_SEED={} FFC_FUZZ_START={0} FFC_FUZZ_INPUTS=1",
                settings.start + count as u64,
                settings.seed
            );
        }
    }

    let outcomes = worker.join().expect("the worker catches panics").unwrap_or_else(|index| {
        panic!(
            "{name}: input {index} panicked; replay it with FFC_FUZZ_SEED={} \
             FFC_FUZZ_START={index} FFC_FUZZ_INPUTS=1",
            settings.seed
        )
    });
    let elapsed = started.elapsed();
    eprintln!(
        "{name}: {} inputs in {:.1} s ({:.0} inputs/s), seed {}",
        settings.inputs,
        elapsed.as_secs_f64(),
        settings.inputs as f64 / elapsed.as_secs_f64(),
        settings.seed
    );
    for (outcome, count) in &outcomes {
        eprintln!("  {count:>9}  {outcome}");
    }
}

// --- mutations --------------------------------------------------------------------------------

const INTERESTING_WORDS: [u32; 9] =
    [0, 1, 2, 3, 0x7fff_ffff, 0xffff_ffff, MAGIC, (1 << 29) - 1, 1 << 29];

/// Applies one to four random mutations to `bytes`; `donors` supply spliced chunks.
fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>, donors: &[&[u8]]) {
    for _ in 0..rng.random_range(1..=4) {
        mutate_once(rng, bytes, donors);
    }
}

fn mutate_once(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>, donors: &[&[u8]]) {
    if bytes.is_empty() {
        bytes.extend((0..rng.random_range(1..16)).map(|_| rng.random::<u8>()));
        return;
    }
    let len = bytes.len();
    let position = rng.random_range(0..len);
    match rng.random_range(0..9) {
        0 => bytes[position] ^= 1 << rng.random_range(0..8),
        1 => bytes[position] = [0, 1, 0x7f, 0x80, 0xff][rng.random_range(0..5)],
        2 => {
            // Overwrite an aligned word, where frame headers and lengths live.
            let aligned = position / 4 * 4;
            let word = if rng.random_bool(0.5) {
                INTERESTING_WORDS[rng.random_range(0..INTERESTING_WORDS.len())]
            } else {
                (rng.random_range(0..8u32) << 29) | rng.random_range(0..64u32)
            };
            let end = (aligned + 4).min(len);
            bytes[aligned..end].copy_from_slice(&word.to_le_bytes()[..end - aligned]);
        }
        3 => bytes.truncate(position),
        4 => {
            let end = (position + rng.random_range(1..64)).min(len);
            bytes.drain(position..end);
        }
        5 => {
            let count = rng.random_range(1..16);
            let inserted: Vec<u8> = (0..count).map(|_| rng.random()).collect();
            bytes.splice(position..position, inserted);
        }
        6 | 7 => {
            let donor = donors[rng.random_range(0..donors.len())];
            if donor.is_empty() {
                return;
            }
            let start = rng.random_range(0..donor.len());
            let end = (start + rng.random_range(1..256)).min(donor.len());
            let chunk = donor[start..end].to_vec();
            if rng.random_bool(0.5) {
                bytes.splice(position..position, chunk);
            } else {
                let end = (position + chunk.len()).min(len);
                bytes[position..end].copy_from_slice(&chunk[..end - position]);
            }
        }
        _ => {
            // Repeat a chunk of the input itself, e.g. a frame header.
            let end = (position + rng.random_range(1..64)).min(len);
            let chunk = bytes[position..end].to_vec();
            let at = rng.random_range(0..=len);
            bytes.splice(at..at, chunk);
        }
    }
}

/// Mutates `.idx` text line-wise: changed offsets, dropped, repeated or garbled lines.
fn mutate_index(rng: &mut ChaCha8Rng, idx: &[u8], rec_len: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(idx);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return idx.to_vec();
    }
    for _ in 0..rng.random_range(1..=3) {
        let line = rng.random_range(0..lines.len());
        let key = lines[line].split('\t').next().unwrap_or("0").to_string();
        match rng.random_range(0..6) {
            0 => lines[line] = format!("{key}\t{}", rng.random_range(0..rec_len.max(1) + 64)),
            1 => lines[line] = format!("{key}\t{}", rng.random_range(0..rec_len.max(1)) / 4 * 4),
            2 => {
                lines.remove(line);
                if lines.is_empty() {
                    break;
                }
            }
            3 => {
                let copy = lines[line].clone();
                lines.insert(line, copy);
            }
            4 => lines[line] = format!("{}\t{}", rng.random::<u32>(), rng.random::<u64>()),
            _ => {
                let at = rng.random_range(0..=lines[line].len());
                if lines[line].is_char_boundary(at) {
                    lines[line].insert(at, ' ');
                }
            }
        }
    }
    (lines.join("\n") + "\n").into_bytes()
}

/// Names an outcome for the summary: "ok" or the error variant, with the frame error's variant.
fn outcome_name(stage: &str, error: &DataError) -> String {
    let variant = |debug: String| debug.split([' ', '{', '(']).next().unwrap_or("").to_string();
    match error {
        DataError::Frame { source, .. } => {
            format!("{stage}: Frame/{}", variant(format!("{source:?}")))
        }
        other => format!("{stage}: {}", variant(format!("{other:?}"))),
    }
}

// --- RecordIO target --------------------------------------------------------------------------

/// A `.rec` file and its `.idx` text.
#[derive(Clone)]
struct RecFiles {
    rec: Vec<u8>,
    idx: Vec<u8>,
}

fn fixture_rec(layout: &str) -> RecFiles {
    let dir = common::data_dir().join(layout);
    RecFiles {
        rec: std::fs::read(dir.join("train.rec")).unwrap(),
        idx: std::fs::read(dir.join("train.idx")).unwrap(),
    }
}

/// Rewrites a fixture with every image cut to 8 bytes. Every seventh record also gets the magic
/// word at an aligned offset, so that it is stored as a multi-part record.
fn shrunken_rec(files: &RecFiles) -> RecFiles {
    let reader = RecordReader::from_bytes("f.rec", "f.idx", files.rec.clone(), &files.idx).unwrap();
    let mut shrunk = RecFiles { rec: Vec::new(), idx: Vec::new() };
    for key in reader.keys() {
        let record = reader.read(key).unwrap();
        let mut payload = Vec::new();
        record.header.write_to(&mut payload);
        let data = &record.data[..record.data.len().min(8)];
        payload.extend_from_slice(data);
        if !data.is_empty() && key % 7 == 3 {
            payload.extend_from_slice(&MAGIC.to_le_bytes());
            payload.extend_from_slice(b"tail");
        }
        shrunk.idx.extend(format!("{key}\t{}\n", shrunk.rec.len()).into_bytes());
        encode_frames(&payload, &mut shrunk.rec);
    }
    shrunk
}

/// Parses `files` at every level: raw frames, the reader, and the dataset with its images.
fn read_everything(files: RecFiles, offsets: &[usize]) -> String {
    for &offset in offsets {
        let _ = parse_frame(&files.rec, offset);
    }

    let reader = match RecordReader::from_bytes("f.rec", "f.idx", files.rec, &files.idx) {
        Ok(reader) => reader,
        Err(error) => return outcome_name("open", &error),
    };
    let keys: Vec<u64> = reader.keys().take(MAX_READS).collect();
    for key in keys {
        if let Ok(record) = reader.read(key) {
            assert_eq!(record.header.label.len(), (record.header.flag as usize).max(1));
        }
    }

    let dataset = match RecordDataset::from_reader(reader, None) {
        Ok(dataset) => dataset,
        Err(error) => return outcome_name("dataset", &error),
    };
    check_dataset(&dataset)
}

/// Reads the images of an opened dataset and checks the identity table's invariants.
fn check_dataset(dataset: &RecordDataset) -> String {
    let mut first_error = None;
    for image in 0..dataset.len().min(MAX_READS) {
        let identity = dataset.identity_of(image);
        assert!(dataset.identity_images(identity).contains(&image));
        assert_eq!(dataset.label(image), dataset.identity_label(identity));
        let _ = dataset.describe(image);
        if let Err(error) = dataset.read(image) {
            first_error.get_or_insert(error);
        }
    }
    for identity in 0..dataset.num_identities() {
        assert!(!dataset.identity_images(identity).is_empty());
    }
    match first_error {
        Some(error) => outcome_name("image", &error),
        None => "ok".to_string(),
    }
}

#[test]
fn record_reader_survives_mutations() {
    let full = [fixture_rec("rec_meta"), fixture_rec("rec_plain")];
    let shrunk = [shrunken_rec(&full[0]), shrunken_rec(&full[1])];
    for files in &shrunk {
        let reader = RecordReader::from_bytes("s.rec", "s.idx", files.rec.clone(), &files.idx);
        let dataset = RecordDataset::from_reader(reader.unwrap(), None).unwrap();
        assert_eq!(dataset.len(), 60, "the shrunken corpus must stay valid");
    }

    let corpus: Arc<Vec<RecFiles>> = Arc::new(full.into_iter().chain(shrunk).collect());
    let settings = Settings::from_env();
    fuzz("record reader", settings, move |index| {
        let mut rng = settings.rng(1, index);
        let full_size = rng.random_bool(FULL_SIZE_SHARE);
        let base = &corpus[if full_size { 0 } else { 2 } + rng.random_range(0..2)];
        let donors: Vec<&[u8]> = corpus.iter().map(|files| files.rec.as_slice()).collect();

        let mut files = base.clone();
        if rng.random_bool(0.8) {
            mutate(&mut rng, &mut files.rec, &donors);
        }
        if rng.random_bool(0.3) {
            files.idx = mutate_index(&mut rng, &files.idx, files.rec.len());
        }
        let offsets: Vec<usize> =
            (0..4).map(|_| rng.random_range(0..files.rec.len() + 8) / 4 * 4).collect();
        read_everything(files, &offsets)
    });
}

// --- validation pack target -------------------------------------------------------------------

/// Argument layout of the pickle opcodes that occur in the fixture packs.
enum Argument {
    None,
    Fixed(usize),
    /// A byte, string or unicode payload with a length field of this many bytes.
    Sized(usize),
    Lines(usize),
}

fn argument(opcode: u8) -> Option<Argument> {
    Some(match opcode {
        b']' | b')' | b'(' | b'\x94' | b'\x93' | b'\x85' | b'\x86' | b'\x87' | b't' | b'R'
        | b'b' | b'\x88' | b'\x89' | b'N' | b'e' | b'a' | b'.' | b'}' | b's' | b'u' => {
            Argument::None
        }
        b'\x80' | b'K' | b'q' | b'h' => Argument::Fixed(1),
        b'M' => Argument::Fixed(2),
        b'J' | b'r' | b'j' => Argument::Fixed(4),
        b'\x95' => Argument::Fixed(8),
        b'U' | b'C' | b'\x8c' => Argument::Sized(1),
        b'T' | b'B' | b'X' => Argument::Sized(4),
        b'c' => Argument::Lines(2),
        _ => return None,
    })
}

/// Rewrites a pickle with every string or byte payload longer than 16 bytes cut to its first
/// 8 bytes (8 characters for unicode), dropping `FRAME` opcodes whose sizes no longer hold.
fn shrunken_pickle(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let opcode = bytes[position];
        position += 1;
        match argument(opcode).unwrap_or_else(|| panic!("opcode 0x{opcode:02x} not handled")) {
            Argument::None => out.push(opcode),
            Argument::Fixed(size) => {
                if opcode != b'\x95' {
                    out.push(opcode);
                    out.extend_from_slice(&bytes[position..position + size]);
                }
                position += size;
            }
            Argument::Sized(size) => {
                let mut length = [0u8; 8];
                length[..size].copy_from_slice(&bytes[position..position + size]);
                let length = u64::from_le_bytes(length) as usize;
                let payload = &bytes[position + size..position + size + length];
                position += size + length;
                let payload = shorten(opcode, payload);
                out.push(opcode);
                out.extend_from_slice(&(payload.len() as u64).to_le_bytes()[..size]);
                out.extend_from_slice(&payload);
            }
            Argument::Lines(count) => {
                out.push(opcode);
                for _ in 0..count {
                    let end =
                        position + bytes[position..].iter().position(|&b| b == b'\n').unwrap();
                    out.extend_from_slice(&bytes[position..=end]);
                    position = end + 1;
                }
            }
        }
        if opcode == b'.' {
            break;
        }
    }
    out
}

fn shorten(opcode: u8, payload: &[u8]) -> Vec<u8> {
    if payload.len() <= 16 {
        return payload.to_vec();
    }
    let is_unicode = matches!(opcode, b'X' | b'\x8c');
    if is_unicode {
        let text = std::str::from_utf8(payload).unwrap();
        text.chars().take(8).collect::<String>().into_bytes()
    } else {
        payload[..8].to_vec()
    }
}

/// Inserts opcodes that nest values up to 20,000 levels deep, enough to overflow the stack of a
/// recursive parser. The run nests empty lists appended into one another, marks closed by
/// `LIST`, 1-tuples around `None`, or lists that each contain a memo reference to the previous
/// one. It goes right after the protocol header or at a random position.
fn insert_nesting(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>) {
    let depth = rng.random_range(200..20_000);
    let mut run = Vec::new();
    match rng.random_range(0..4) {
        0 => {
            run.extend(std::iter::repeat_n(b']', depth));
            run.extend(std::iter::repeat_n(b'a', depth - 1));
        }
        1 => {
            run.extend(std::iter::repeat_n(b'(', depth));
            run.extend(std::iter::repeat_n(b'l', depth));
        }
        2 => {
            run.push(b'N');
            run.extend(std::iter::repeat_n(0x85, depth));
        }
        _ => {
            // LONG_BINPUT the first list as entry 0, then x_i = [x_(i-1)] as entry i.
            run.extend([b']', b'r', 0, 0, 0, 0]);
            for id in 0..depth as u32 {
                run.extend([b']', b'j']);
                run.extend(id.to_le_bytes());
                run.extend([b'a', b'r']);
                run.extend((id + 1).to_le_bytes());
            }
        }
    }
    let position =
        if rng.random_bool(0.5) { bytes.len().min(2) } else { rng.random_range(0..=bytes.len()) };
    bytes.splice(position..position, run);
}

#[test]
fn pack_reader_survives_mutations() {
    let names = ["pairs_py2.bin", "pairs_p2_codecs.bin", "pairs_p4.bin", "pairs_numpy.bin"];
    let full: Vec<Vec<u8>> =
        names.iter().map(|name| std::fs::read(common::data_dir().join(name)).unwrap()).collect();
    let shrunk: Vec<Vec<u8>> = full.iter().map(|bytes| shrunken_pickle(bytes)).collect();
    for (name, bytes) in names.iter().zip(&shrunk) {
        let pack = ValidationPack::from_bytes(Path::new(name), bytes).unwrap();
        assert_eq!(pack.pairs(), 40, "the shrunken {name} must stay valid");
        assert!(pack.images.iter().all(|image| image.len() == 8), "{name}");
    }

    let corpus: Arc<Vec<Vec<u8>>> = Arc::new(full.into_iter().chain(shrunk).collect());
    let settings = Settings::from_env();
    fuzz("pack reader", settings, move |index| {
        let mut rng = settings.rng(2, index);
        let full_size = rng.random_bool(FULL_SIZE_SHARE);
        let base = &corpus[if full_size { 0 } else { 4 } + rng.random_range(0..4)];
        let donors: Vec<&[u8]> = corpus.iter().map(Vec::as_slice).collect();
        let mut bytes = base.clone();
        mutate(&mut rng, &mut bytes, &donors);
        if rng.random_bool(NESTING_SHARE) {
            insert_nesting(&mut rng, &mut bytes);
        }

        match ValidationPack::from_bytes(Path::new("fuzz.bin"), &bytes) {
            Ok(pack) => {
                assert_eq!(pack.images.len(), 2 * pack.pairs());
                assert!(pack.images.iter().all(|image| !image.is_empty()));
                "ok".to_string()
            }
            Err(error) => outcome_name("open", &error),
        }
    });
}
