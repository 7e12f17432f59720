//! FFC's dual data loader: an instance loader and an identity loader merged into two views.
//!
//! Each step with batch size `B` (even) takes
//!
//! - `B` images from the instance loader, which visits every image once per epoch in a shuffled
//!   order and drops the last partial batch, so an epoch has `num_images / B` steps;
//! - `B` identities from the identity loader, which visits the identities in a shuffled order,
//!   starts a new pass with a new shuffle when a pass runs out of whole batches, and restarts
//!   at every epoch. Each identity gives two distinct images, or its only image twice.
//!
//! and forms `x = [first identity images; first half of the instance batch]` and
//! `y = [second identity images; second half]`, `1.5 * B` images per view. Row `j < B` of `x`
//! and `y` show the same identity. With `flip`, every image is mirrored with probability 0.5.
//!
//! Batches are reproducible and resumable. Every shuffle, pair choice, flip and replacement of an
//! unreadable image is drawn from a ChaCha8 generator keyed by the seed and the position (epoch
//! with step or identity pass), never from state carried between steps. Batch content does not
//! depend on the number of worker threads either, because workers decode whole batches and the
//! loader hands them out in step order.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::augment::Augment;
use crate::sampling::{BatchPlan, Planner, Slot, Stream, stream_rng};
use crate::{DataError, FaceSource, Preprocess};

/// Number of skipped images that are logged one by one before the loader goes quiet.
const LOGGED_SKIPS: usize = 10;

/// Maximum replacement attempts for one unreadable image before the batch fails.
const MAX_SUBSTITUTES: usize = 16;

/// Settings of the [`DualLoader`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Identities per step, which is also the instance images per step. Must be even.
    pub batch_size: usize,
    /// Seed of every shuffle, pair choice and flip.
    pub seed: u64,
    /// Decoding threads; 0 decodes on the thread that calls [`DualLoader::next_batch`].
    pub workers: usize,
    /// Maximum number of batches planned or decoded ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// Random flips, shifts, zooms, rotations and tone changes of the training images.
    pub augment: Augment,
    /// Replace unreadable or undecodable images instead of failing the batch. The replacement
    /// is another image of the same identity when it has one, otherwise a random image whose
    /// label the row then takes, so an identity-part row of `x` may then differ in identity
    /// from the same row of `y`.
    pub skip_bad_images: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            seed: 0,
            workers: 4,
            prefetch: 4,
            augment: Augment { flip: true, ..Augment::default() },
            skip_bad_images: false,
        }
    }
}

/// Position of a batch in the loader's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoaderPosition {
    /// Epoch, counting from 0.
    pub epoch: usize,
    /// Step within the epoch, counting from 0.
    pub step: usize,
}

/// The two decoded views of one training step.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// First view, `[images_per_view, 3, height, width]` in row-major (NCHW) order.
    pub x: Vec<f32>,
    /// Second view, same shape as `x`.
    pub y: Vec<f32>,
    /// Identity label of each row of `x`.
    pub x_labels: Vec<u64>,
    /// Identity label of each row of `y`.
    pub y_labels: Vec<u64>,
    /// Rows per view, `1.5 * batch_size`; the first `batch_size` rows are the identity part.
    pub images_per_view: usize,
    /// Epoch of this batch.
    pub epoch: usize,
    /// Step of this batch within its epoch.
    pub step: usize,
    /// Images that failed to read or decode and were replaced (only with `skip_bad_images`).
    pub skipped_images: usize,
}

/// The dual instance + identity loader; see the module documentation.
pub struct DualLoader {
    steps_per_epoch: usize,
    position: LoaderPosition,
    mode: Mode,
    failed: Option<String>,
}

/// Batch production strategy.
enum Mode {
    /// `workers = 0`: plan and decode on the caller's thread.
    Inline { planner: Box<Planner>, decoder: Decoder },
    /// Background planner and worker threads.
    Threaded(Pipeline),
}

impl DualLoader {
    /// Creates a loader whose first batch is the one at `start`.
    ///
    /// Fails when `batch_size` is odd or zero, when the source has fewer than `batch_size`
    /// images or identities, when the target image size is zero, or when `start.step` is not
    /// below [`DualLoader::steps_per_epoch`].
    pub fn new(
        source: Arc<dyn FaceSource>,
        preprocess: Preprocess,
        config: LoaderConfig,
        start: LoaderPosition,
    ) -> Result<Self, DataError> {
        validate(source.as_ref(), &preprocess, &config, start)?;
        warn_about_singletons(source.as_ref());

        let planner = Planner::new(
            Arc::clone(&source),
            config.batch_size,
            config.seed,
            config.augment,
            start,
        );
        let steps_per_epoch = planner.steps_per_epoch();
        let decoder = Decoder {
            source,
            preprocess,
            seed: config.seed,
            skip_bad_images: config.skip_bad_images,
            skips_logged: Arc::new(AtomicUsize::new(0)),
        };
        let mode = if config.workers == 0 {
            Mode::Inline { planner: Box::new(planner), decoder }
        } else {
            Mode::Threaded(Pipeline::start(planner, decoder, config.workers, config.prefetch))
        };
        Ok(Self { steps_per_epoch, position: start, mode, failed: None })
    }

    /// Returns the number of steps per epoch, `num_images / batch_size`.
    pub fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }

    /// Returns the position of the batch that the next call to [`DualLoader::next_batch`]
    /// returns.
    pub fn position(&self) -> LoaderPosition {
        self.position
    }

    /// Returns the batch at [`DualLoader::position`] and advances by one step.
    ///
    /// After an error the loader stops: later calls return [`DataError::LoaderStopped`], and a
    /// new loader created at [`DualLoader::position`] retries the failed batch.
    pub fn next_batch(&mut self) -> Result<Batch, DataError> {
        if let Some(reason) = &self.failed {
            return Err(DataError::LoaderStopped { reason: reason.clone() });
        }

        let result = match &mut self.mode {
            Mode::Inline { planner, decoder } => decoder.decode(&planner.next_plan()),
            Mode::Threaded(pipeline) => pipeline.next(),
        };
        match result {
            Ok(batch) => {
                self.advance();
                Ok(batch)
            }
            Err(error) => {
                let LoaderPosition { epoch, step } = self.position;
                self.failed = Some(format!(
                    "the batch at epoch {epoch} step {step} failed; fix the data and create a \
                     new loader at that position"
                ));
                Err(error)
            }
        }
    }

    fn advance(&mut self) {
        self.position.step += 1;
        if self.position.step == self.steps_per_epoch {
            self.position = LoaderPosition { epoch: self.position.epoch + 1, step: 0 };
        }
    }
}

/// Checks the configuration against the source.
fn validate(
    source: &dyn FaceSource,
    preprocess: &Preprocess,
    config: &LoaderConfig,
    start: LoaderPosition,
) -> Result<(), DataError> {
    let batch_size = config.batch_size;
    let config_error = |reason: String| Err(DataError::Config { reason });
    if let Err(reason) = config.augment.validate() {
        return config_error(reason);
    }
    if batch_size == 0 || batch_size % 2 == 1 {
        return config_error(format!(
            "batch_size {batch_size} must be even and positive, because each step splits the \
             instance batch into two halves (use e.g. {})",
            (batch_size / 2 + 1) * 2
        ));
    }

    let (images, identities) = (source.len(), source.num_identities());
    let largest = images.min(identities) / 2 * 2;
    if largest < 2 {
        return config_error(format!(
            "the training set has {} of {}, but each step needs batch_size identities and \
             batch_size must be even and at least 2, so training needs at least 2 identities \
             (add identities to the data)",
            counted(images, "image", "images"),
            counted(identities, "identity", "identities"),
        ));
    }
    if images < batch_size || identities < batch_size {
        return config_error(format!(
            "the training set has {images} images and {identities} identities, but each step \
             needs at least batch_size = {batch_size} of both (lower batch_size to {largest} \
             or less, or add data)"
        ));
    }
    if u32::try_from(images).is_err() {
        return config_error(format!(
            "the training set has {images} images; the loader supports at most {} (split the \
             data into several sets)",
            u32::MAX
        ));
    }
    if preprocess.height == 0 || preprocess.width == 0 {
        return config_error(format!(
            "image size {}x{} must be positive",
            preprocess.height, preprocess.width
        ));
    }

    let steps_per_epoch = images / batch_size;
    if start.step >= steps_per_epoch {
        return config_error(format!(
            "start step {} is not below the {steps_per_epoch} steps of an epoch (use step 0 of \
             epoch {})",
            start.step,
            start.epoch + 1
        ));
    }
    Ok(())
}

/// Formats `count` with the singular or plural noun.
fn counted(count: usize, singular: &str, plural: &str) -> String {
    format!("{count} {}", if count == 1 { singular } else { plural })
}

/// Logs how many identities have a single image, which the identity loader uses twice.
fn warn_about_singletons(source: &dyn FaceSource) {
    let singletons = (0..source.num_identities())
        .filter(|&identity| source.identity_images(identity).len() == 1)
        .count();
    if singletons > 0 {
        tracing::warn!(
            singletons,
            identities = source.num_identities(),
            "identities with a single image; the identity loader uses that image for both views"
        );
    }
}

/// Turns batch plans into decoded batches.
#[derive(Clone)]
struct Decoder {
    source: Arc<dyn FaceSource>,
    preprocess: Preprocess,
    seed: u64,
    skip_bad_images: bool,
    skips_logged: Arc<AtomicUsize>,
}

impl Decoder {
    /// Decodes both views of `plan`.
    fn decode(&self, plan: &BatchPlan) -> Result<Batch, DataError> {
        let rows = plan.x.len();
        let image_len = self.preprocess.image_len();
        let mut batch = Batch {
            x: vec![0.0; rows * image_len],
            y: vec![0.0; rows * image_len],
            x_labels: Vec::with_capacity(rows),
            y_labels: Vec::with_capacity(rows),
            images_per_view: rows,
            epoch: plan.epoch,
            step: plan.step,
            skipped_images: 0,
        };

        let mut substitutes =
            stream_rng(self.seed, Stream::Substitute, plan.epoch as u64, plan.step as u64);
        let views = [
            (&plan.x, &mut batch.x, &mut batch.x_labels),
            (&plan.y, &mut batch.y, &mut batch.y_labels),
        ];
        for (slots, pixels, labels) in views {
            for (slot, out) in slots.iter().zip(pixels.chunks_exact_mut(image_len)) {
                let (image, skipped) = self.decode_slot(*slot, out, &mut substitutes)?;
                labels.push(self.source.label(image));
                batch.skipped_images += skipped;
            }
        }
        Ok(batch)
    }

    /// Decodes one slot into `out`, replacing unreadable images when allowed. Returns the image
    /// actually decoded and how many were skipped.
    fn decode_slot(
        &self,
        slot: Slot,
        out: &mut [f32],
        substitutes: &mut impl Rng,
    ) -> Result<(usize, usize), DataError> {
        let mut image = slot.image;
        for skipped in 0..=MAX_SUBSTITUTES {
            let error = match self.decode_image(image, slot.jitter.flip, out) {
                Ok(()) => {
                    slot.jitter.apply(out, self.preprocess.height, self.preprocess.width);
                    return Ok((image, skipped));
                }
                Err(error) => error,
            };
            if !self.skip_bad_images || skipped == MAX_SUBSTITUTES {
                return Err(error);
            }
            self.log_skip(image, &error);
            image = self.substitute(image, substitutes);
        }
        unreachable!("the loop returns on its last iteration")
    }

    /// Reads and decodes `image` into `out`.
    fn decode_image(&self, image: usize, flip: bool, out: &mut [f32]) -> Result<(), DataError> {
        let bytes = self.source.read(image)?;
        self.preprocess
            .decode_into(&bytes, flip, out)
            .map_err(|error| DataError::decode(self.source.describe(image), error))
    }

    /// Picks a replacement for `image`: another image of its identity if it has one, otherwise
    /// any other image.
    fn substitute(&self, image: usize, rng: &mut impl Rng) -> usize {
        let images = self.source.identity_images(self.source.identity_of(image));
        let candidates = if images.len() > 1 { images } else { 0..self.source.len() };
        // Draw from the candidates without `image` itself; the source has at least 2 images.
        let offset = rng.random_range(0..candidates.len() - 1);
        let pick = candidates.start + offset;
        if pick >= image { pick + 1 } else { pick }
    }

    fn log_skip(&self, image: usize, error: &DataError) {
        let logged = self.skips_logged.fetch_add(1, Ordering::Relaxed);
        if logged < LOGGED_SKIPS {
            tracing::warn!(
                image = %self.source.describe(image),
                error = %error_chain(error),
                "skipping an unreadable image and using another one"
            );
        } else if logged == LOGGED_SKIPS {
            tracing::warn!(
                "more images were skipped; Batch::skipped_images counts them without logging"
            );
        }
    }
}

/// Formats an error with its causes, `outer: inner: innermost`.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// Background threads: one planner and `workers` decoders, with results re-ordered by step.
///
/// The planner takes a credit before each plan, and the consumer returns one per batch taken,
/// so at most `prefetch` batches are planned, decoding or waiting at any time.
struct Pipeline {
    credits: Sender<()>,
    results: Receiver<(u64, Result<Batch, DataError>)>,
    pending: BTreeMap<u64, Result<Batch, DataError>>,
    next_sequence: u64,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    fn start(mut planner: Planner, decoder: Decoder, workers: usize, prefetch: usize) -> Self {
        let prefetch = prefetch.max(1);
        let (credits, credit_receiver) = crossbeam_channel::bounded::<()>(prefetch);
        for _ in 0..prefetch {
            credits.try_send(()).expect("channel has room for every initial credit");
        }
        let (jobs, job_receiver) = crossbeam_channel::unbounded::<(u64, BatchPlan)>();
        let (result_sender, results) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));

        let mut threads = Vec::with_capacity(workers + 1);
        let planner_stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            for sequence in 0.. {
                if credit_receiver.recv().is_err() || planner_stop.load(Ordering::Relaxed) {
                    return;
                }
                if jobs.send((sequence, planner.next_plan())).is_err() {
                    return;
                }
            }
        }));
        for _ in 0..workers {
            let (job_receiver, result_sender) = (job_receiver.clone(), result_sender.clone());
            let (decoder, stop) = (decoder.clone(), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                run_worker(&decoder, &job_receiver, &result_sender, &stop);
            }));
        }

        Self { credits, results, pending: BTreeMap::new(), next_sequence: 0, stop, threads }
    }

    /// Waits for the next batch in step order.
    fn next(&mut self) -> Result<Batch, DataError> {
        let result = loop {
            if let Some(result) = self.pending.remove(&self.next_sequence) {
                break result;
            }
            let Ok((sequence, result)) = self.results.recv() else {
                return Err(DataError::LoaderStopped {
                    reason: "all worker threads exited".into(),
                });
            };
            self.pending.insert(sequence, result);
        };
        self.next_sequence += 1;
        // The planner consumed a credit for this batch, so the channel has room.
        let _ = self.credits.try_send(());
        result
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Replacing the credit sender disconnects the planner's receiver; its exit closes the
        // job channel, which ends the workers.
        let (disconnected, _) = crossbeam_channel::bounded(0);
        drop(std::mem::replace(&mut self.credits, disconnected));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Decodes plans until the job channel closes or the loader stops.
fn run_worker(
    decoder: &Decoder,
    jobs: &Receiver<(u64, BatchPlan)>,
    results: &Sender<(u64, Result<Batch, DataError>)>,
    stop: &AtomicBool,
) {
    while let Ok((sequence, plan)) = jobs.recv() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| decoder.decode(&plan)))
            .unwrap_or_else(|_| {
                Err(DataError::LoaderStopped {
                    reason: format!(
                        "a worker panicked while decoding epoch {} step {}",
                        plan.epoch, plan.step
                    ),
                })
            });
        if results.send((sequence, result)).is_err() {
            return;
        }
    }
}

/// Decodes `images` of `source` in parallel into one `[images.len(), 3, height, width]` array.
///
/// Intended for evaluation: every image is mirrored when `flip` is set, and the first failing
/// image is returned as the error.
pub fn load_images(
    source: &dyn FaceSource,
    images: &[usize],
    preprocess: &Preprocess,
    flip: bool,
) -> Result<Vec<f32>, DataError> {
    decode_parallel(images.len(), preprocess, |index, out| {
        let image = images[index];
        let bytes = source.read(image)?;
        preprocess
            .decode_into(&bytes, flip, out)
            .map_err(|error| DataError::decode(source.describe(image), error))
    })
}

/// Runs `decode(index, out)` for `0..count` on all available cores, each writing one image.
pub(crate) fn decode_parallel(
    count: usize,
    preprocess: &Preprocess,
    decode: impl Fn(usize, &mut [f32]) -> Result<(), DataError> + Sync,
) -> Result<Vec<f32>, DataError> {
    let image_len = preprocess.image_len();
    let mut out = vec![0.0; count * image_len];
    if count == 0 || image_len == 0 {
        return Ok(out);
    }

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(count);
    let images_per_thread = count.div_ceil(threads);
    let decode = &decode;
    std::thread::scope(|scope| {
        let handles: Vec<_> = out
            .chunks_mut(images_per_thread * image_len)
            .enumerate()
            .map(|(chunk, pixels)| {
                scope.spawn(move || {
                    for (offset, image_out) in pixels.chunks_exact_mut(image_len).enumerate() {
                        decode(chunk * images_per_thread + offset, image_out)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|handle| handle.join().expect("decode threads return errors, not panics"))
    })?;
    Ok(out)
}
