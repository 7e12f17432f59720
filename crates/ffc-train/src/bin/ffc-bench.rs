//! `ffc-bench`: one measurement per process, printed as a JSON line, for `cargo xtask bench`.
//!
//! ```text
//! ffc-bench head --side ffc|fc --ids N [--queue-size Q] [--steps S] [--warmup W]
//! ffc-bench head-pair --ids N1,N2 [--queue-size Q] [--steps S] [--warmup W]
//! ffc-bench train [--network mbf|r50] [--batch-size B] [--device D] [--steps S] [--warmup W]
//! ```
//!
//! `head` times one classifier-head step at the feature level, with no images: 64 identities
//! per step drawn uniformly from N plus 32 instance labels per view, unit features from a seeded
//! generator. The `ffc` side runs both FFC passes (pool update, two margin losses per pass,
//! gradient with respect to the probe features) on a pool filled by state import; it also times
//! the bare matrix products of those passes (probe x row-0 transposed, forward and backward) in
//! the same process. The `fc` side runs a full N x D classifier: the same margin loss over all N
//! classes, backward, and an SGD-with-momentum update of the weight; it reports that it does not
//! fit when weight, gradient and momentum exceed the free memory. Every run reports its peak
//! resident memory from the end of the setup (pool or weight filled) to the end of the run, so
//! run one process per side and N.
//!
//! `head-pair` times the `ffc` side at two N in one process, a step of each in turn, and prints
//! the median step time of each. Both share the speed of the machine and the process,
//! which on a shared machine varies more between processes than the two N differ.

use std::time::Instant;

use anyhow::bail;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, ElementConversion, Tensor};
use clap::{Args, Parser, Subcommand};
use ffc_loss::{LossKind, MarginLoss, StepInputs, ffc_step, hard_negatives_for};
use ffc_lru::LruState;
use ffc_pool::{ClassPool, PoolState};
use ffc_train::device::DeviceSpec;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

type Ad = burn::backend::Autodiff<burn::backend::Flex>;
type Inner = burn::backend::Flex;

/// The CPU device of every measurement without `--device`.
const CPU: burn::backend::flex::FlexDevice = burn::backend::flex::FlexDevice;

const FEAT_DIM: usize = 512;
const ID_PER_STEP: usize = 64;
const INSTANCE_PER_VIEW: usize = 32;

#[derive(Parser)]
#[command(name = "ffc-bench", about = "Single measurements for `cargo xtask bench`")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by `head` and `head-pair`.
#[derive(Args, Clone, Copy)]
struct HeadOptions {
    /// Pool slots Q of the FFC side.
    #[arg(long, default_value_t = 10_000)]
    queue_size: usize,
    /// Gallery and probe features per pass (the reference's batch per device is 96).
    #[arg(long, default_value_t = ID_PER_STEP + INSTANCE_PER_VIEW)]
    per_pass: usize,
    /// Timed steps, of each N for `head-pair`.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first, of each N for `head-pair`.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
}

impl HeadOptions {
    /// Returns the sizes of a run at `ids` identities, rejecting any size of 0.
    fn sizes(&self, ids: usize) -> anyhow::Result<Sizes> {
        let Self { queue_size, per_pass, steps, warmup } = *self;
        for (name, value) in
            [("--ids", ids), ("--queue-size", queue_size), ("--per-pass", per_pass)]
        {
            if value == 0 {
                bail!("invalid {name} 0: there is nothing to time; pass at least 1");
            }
        }
        Ok(Sizes { ids, queue_size, per_pass, steps, warmup })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Time one classifier-head step at N identities.
    Head {
        /// `ffc` (the class pool) or `fc` (a full N-way classifier).
        #[arg(long)]
        side: String,
        /// Number of identities N.
        #[arg(long)]
        ids: usize,
        #[command(flatten)]
        options: HeadOptions,
    },
    /// Time the FFC step at two numbers of identities in one process, alternating steps.
    HeadPair {
        /// The two numbers of identities, comma-separated.
        #[arg(long, value_delimiter = ',', num_args = 1)]
        ids: Vec<usize>,
        #[command(flatten)]
        options: HeadOptions,
    },
    /// Time full FFC training steps on synthetic images.
    Train {
        /// Backbone: `mbf` (MobileFaceNet) or `r50` (IResNet-50); long names also accepted.
        #[arg(long, default_value = "mbf")]
        network: String,
        /// Identities per step (each view holds 1.5 x this many images).
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// Device.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Timed steps.
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
    },
}

fn main() -> anyhow::Result<()> {
    if !ffc_train::memory::retain_freed_buffers() {
        eprintln!(
            "ffc-bench: allocator thresholds unchanged (not glibc, or glibc rejected them); \
             each pass maps its large buffers anew, unlike the runs on docs/benchmarks.md"
        );
    }
    match Cli::parse().command {
        Command::Head { side, ids, options } => {
            let sizes = options.sizes(ids)?;
            match side.as_str() {
                "ffc" => ffc_head(&sizes),
                "fc" => fc_head(&sizes),
                other => bail!("unknown side `{other}` (expected ffc or fc)"),
            }
        }
        Command::HeadPair { ids, options } => {
            let &[first, second] = ids.as_slice() else {
                bail!("--ids takes two numbers of identities, as in `--ids 10000,10000000`");
            };
            ffc_pair([options.sizes(first)?, options.sizes(second)?])
        }
        Command::Train { network, batch_size, device, steps, warmup } => {
            train_throughput(&network, batch_size, device, steps, warmup)
        }
    }
}

struct Sizes {
    ids: usize,
    queue_size: usize,
    per_pass: usize,
    steps: usize,
    warmup: usize,
}

fn loss(queue_size: usize) -> MarginLoss {
    MarginLoss {
        kind: LossKind::Am,
        scale: 32.0,
        margin: 0.4,
        sv_t: ffc_loss::SV_T,
        hard_negatives: hard_negatives_for(queue_size),
    }
}

/// Random unit rows, `[rows, FEAT_DIM]`.
fn unit_rows<B: Backend>(rows: usize, device: &B::Device) -> Tensor<B, 2> {
    let x = Tensor::<B, 2>::random([rows, FEAT_DIM], Distribution::Normal(0.0, 1.0), device);
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    x / norm
}

/// Labels of one step: the identity part shared by both views, then each view's instances.
fn step_labels(rng: &mut ChaCha8Rng, ids: usize, per_pass: usize) -> (Vec<u64>, Vec<u64>) {
    let id_part = per_pass * 2 / 3;
    let instances = per_pass - id_part;
    let shared: Vec<u64> =
        sample(rng, ids, id_part.min(ids)).into_iter().map(|i| i as u64).collect();
    let mut x = shared.clone();
    let mut y = shared;
    while x.len() < per_pass {
        x.push(rng.random_range(0..ids as u64));
    }
    while y.len() < per_pass {
        y.push(rng.random_range(0..ids as u64));
    }
    debug_assert_eq!(x.len() - id_part, instances);
    (x, y)
}

/// Builds a pool containing min(N, Q) random identities, as after a long run.
fn filled_pool(ids: usize, q: usize, rng: &mut ChaCha8Rng) -> anyhow::Result<ClassPool<Inner>> {
    let pooled_ids = ids.min(q);
    let labels = sample(rng, ids, pooled_ids);
    let device = CPU;
    let queue = unit_rows::<Inner>(2 * q, &device).into_data().into_vec::<f32>().expect("f32");
    let state = PoolState {
        queue_size: q,
        feat_dim: FEAT_DIM,
        queue,
        positions: (0..q).map(|_| rng.random_range(0..2u8)).collect(),
        lru: LruState {
            capacity: q,
            next_free: pooled_ids,
            entries: labels.into_iter().enumerate().map(|(slot, l)| (l as u64, slot)).collect(),
        },
    };
    Ok(ClassPool::from_state(&state, &device)?)
}

/// The FFC side at one N: the pool, the label stream and the loss.
struct FfcWorkload {
    ids: usize,
    per_pass: usize,
    pool: ClassPool<Inner>,
    rng: ChaCha8Rng,
    loss: MarginLoss,
}

impl FfcWorkload {
    /// Fills a pool of `queue_size` slots for `ids` identities, with its own seeded generator.
    fn new(ids: usize, queue_size: usize, per_pass: usize) -> anyhow::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let pool = filled_pool(ids, queue_size, &mut rng)?;
        Ok(Self { ids, per_pass, pool, rng, loss: loss(queue_size) })
    }

    /// Runs one step on fresh features and returns its time and the time of its bare products,
    /// in ms.
    fn step(&mut self, step: usize) -> (f64, f64) {
        let device = CPU;
        let n = self.per_pass;
        let (x_labels, y_labels) = step_labels(&mut self.rng, self.ids, n);
        let inputs = StepInputs {
            probe_x: unit_rows::<Inner>(n, &device),
            probe_y: unit_rows::<Inner>(n, &device),
            gallery_x: unit_rows::<Inner>(n, &device),
            gallery_y: unit_rows::<Inner>(n, &device),
            x_labels,
            y_labels,
        };
        let (probe_x, probe_y) = (inputs.probe_x.clone(), inputs.probe_y.clone());
        let started = Instant::now();
        let outcome = ffc_step(&mut self.pool, &self.loss, inputs, true);
        let checksum: f32 = outcome.grad_probe_y.sum().into_scalar().elem();
        let elapsed = started.elapsed().as_secs_f64() * 1e3;

        let started = Instant::now();
        let products = bare_products(&self.pool, &[probe_x, probe_y]);
        let products_elapsed = started.elapsed().as_secs_f64() * 1e3;
        assert!(checksum.is_finite(), "non-finite gradient at step {step}");
        assert!(products.is_finite(), "non-finite matrix products at step {step}");
        (elapsed, products_elapsed)
    }
}

fn ffc_head(sizes: &Sizes) -> anyhow::Result<()> {
    let mut workload = FfcWorkload::new(sizes.ids, sizes.queue_size, sizes.per_pass)?;
    let peak_after_setup = reset_peak();

    let mut step_ms = Vec::new();
    let mut matmul_ms = Vec::new();
    for step in 0..sizes.warmup + sizes.steps {
        let (elapsed, products_elapsed) = workload.step(step);
        if step >= sizes.warmup {
            step_ms.push(elapsed);
            matmul_ms.push(products_elapsed);
        }
    }
    let pool_ms = time_pool_update(&mut workload.pool, sizes, &mut workload.rng);
    let n = sizes.per_pass;
    println!(
        "{}",
        json!({
            "side": "ffc", "ids": sizes.ids, "queue_size": sizes.queue_size, "per_pass": n,
            "median_ms": median(&mut step_ms), "matmul_ms": median(&mut matmul_ms),
            "pool_update_ms": pool_ms, "peak_mb": peak_mb(), "peak_after_setup": peak_after_setup,
            "fits": true,
        })
    );
    Ok(())
}

/// Times the FFC step at two numbers of identities in one process, one step of each in turn, so
/// that both share the speed of the machine and the process. Prints the median step time of
/// each.
///
/// The order stays the same every step, so each N's step always follows the other's. Swapping
/// it every step puts two steps of one N back to back, and in a 40-step test the second of those
/// ran 5% to 13% slower than the first.
fn ffc_pair(pair: [Sizes; 2]) -> anyhow::Result<()> {
    let mut workloads = [
        FfcWorkload::new(pair[0].ids, pair[0].queue_size, pair[0].per_pass)?,
        FfcWorkload::new(pair[1].ids, pair[1].queue_size, pair[1].per_pass)?,
    ];
    let sizes = &pair[0];
    let mut times = [Vec::new(), Vec::new()];
    for step in 0..sizes.warmup + sizes.steps {
        for (workload, times) in workloads.iter_mut().zip(&mut times) {
            let elapsed = workload.step(step).0;
            if step >= sizes.warmup {
                times.push(elapsed);
            }
        }
    }
    let medians = times.map(|mut times| median(&mut times));
    println!(
        "{}",
        json!({
            "side": "ffc-pair", "ids": [pair[0].ids, pair[1].ids], "queue_size": sizes.queue_size,
            "per_pass": sizes.per_pass, "steps": sizes.steps, "median_ms": medians,
        })
    );
    Ok(())
}

/// Forward and backward of `probe x row0^T` for both passes: the products no FFC head avoids.
fn bare_products(pool: &ClassPool<Inner>, probes: &[Tensor<Inner, 2>]) -> f32 {
    let row0 = pool.row0();
    let mut sum = 0.0;
    for probe in probes {
        let logits = probe.clone().matmul(row0.clone().transpose()); // [n, Q]
        let grad = logits.matmul(row0.clone()); // [n, D]
        sum += grad.sum().into_scalar().elem::<f32>();
    }
    sum
}

fn time_pool_update(pool: &mut ClassPool<Inner>, sizes: &Sizes, rng: &mut ChaCha8Rng) -> f64 {
    let device = CPU;
    let mut times = Vec::new();
    for _ in 0..sizes.steps.max(5) {
        let (labels, _) = step_labels(rng, sizes.ids, sizes.per_pass);
        let features = unit_rows::<Inner>(sizes.per_pass, &device);
        let started = Instant::now();
        pool.insert(&labels, features);
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    median(&mut times)
}

fn fc_head(sizes: &Sizes) -> anyhow::Result<()> {
    let need = 3 * sizes.ids * FEAT_DIM * 4;
    let available = available_bytes();
    if need as f64 > 0.9 * available as f64 {
        println!(
            "{}",
            json!({
                "side": "fc", "ids": sizes.ids, "fits": false,
                "required_mb": need as f64 / 1048576.0, "available_mb": available as f64 / 1048576.0,
            })
        );
        return Ok(());
    }

    let device = CPU;
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let loss = MarginLoss { hard_negatives: 1, ..loss(sizes.ids) };
    let mut weight = unit_rows::<Inner>(sizes.ids, &device);
    let mut momentum = Tensor::<Inner, 2>::zeros([sizes.ids, FEAT_DIM], &device);
    let peak_after_setup = reset_peak();
    let mut times = Vec::new();
    for step in 0..sizes.warmup + sizes.steps {
        let (x_labels, y_labels) = step_labels(&mut rng, sizes.ids, sizes.per_pass);
        let labels: Vec<i64> = x_labels.iter().chain(&y_labels).map(|&l| l as i64).collect();
        let probe = unit_rows::<Inner>(labels.len(), &device);

        let started = Instant::now();
        let (next_weight, next_momentum) = fc_step(weight, momentum, probe, &labels, &loss);
        weight = next_weight;
        momentum = next_momentum;
        let checksum: f32 = weight.clone().slice([0..1, 0..1]).into_scalar().elem();
        if step >= sizes.warmup {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        assert!(checksum.is_finite(), "non-finite weight at step {step}");
    }
    println!(
        "{}",
        json!({
            "side": "fc", "ids": sizes.ids, "per_pass": sizes.per_pass,
            "median_ms": median(&mut times), "peak_mb": peak_mb(),
            "peak_after_setup": peak_after_setup, "fits": true,
        })
    );
    Ok(())
}

/// Runs one full-classifier step: cosine logits against the row-normalised weight, margin loss,
/// backward, and SGD with momentum 0.9 (lr 0.1) on the weight.
fn fc_step(
    weight: Tensor<Inner, 2>,
    momentum: Tensor<Inner, 2>,
    probe: Tensor<Inner, 2>,
    labels: &[i64],
    loss: &MarginLoss,
) -> (Tensor<Inner, 2>, Tensor<Inner, 2>) {
    let tracked = Tensor::<Ad, 2>::from_inner(weight.clone()).require_grad();
    let norm = tracked.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-12);
    let cos = Tensor::<Ad, 2>::from_inner(probe).matmul((tracked.clone() / norm).transpose());
    let grads = loss.forward(cos, labels).backward();
    let grad = tracked.grad(&grads).expect("the loss depends on the weight");
    let momentum = momentum * 0.9 + grad;
    (weight - momentum.clone() * 0.1, momentum)
}

fn train_throughput(
    network: &str,
    batch_size: usize,
    device: DeviceSpec,
    steps: usize,
    warmup: usize,
) -> anyhow::Result<()> {
    let network = match network {
        "mbf" | "mobilefacenet" => "mbf",
        "r50" | "iresnet50" => "r50",
        other => bail!("unknown network `{other}` (expected mobilefacenet or iresnet50)"),
    };
    if !device.is_compiled() {
        bail!(device.not_compiled());
    }
    match device {
        DeviceSpec::Cpu => run_train::<Ad>(network, batch_size, &CPU, steps, warmup),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(index) => run_train::<burn::backend::Autodiff<burn::backend::Wgpu>>(
            network,
            batch_size,
            &burn::backend::wgpu::WgpuDevice::DiscreteGpu(index),
            steps,
            warmup,
        ),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(index) => run_train::<burn::backend::Autodiff<burn::backend::Cuda>>(
            network,
            batch_size,
            &burn::backend::cuda::CudaDevice::new(index),
            steps,
            warmup,
        ),
        #[allow(unreachable_patterns)]
        other => bail!(other.not_compiled()),
    }
}

fn run_train<B: AutodiffBackend>(
    network: &str,
    batch_size: usize,
    device: &B::Device,
    steps: usize,
    warmup: usize,
) -> anyhow::Result<()> {
    let text = format!(
        "rec = \"synthetic\"\nnetwork = \"{network}\"\nqueue_size = 10000\nbatch_size = {batch_size}\n\
         lr = 0.1\nnum_epoch = 1\n"
    );
    let config = ffc_train::TrainConfig::parse(&text, std::path::Path::new("bench"), &[])?;
    let mut state = ffc_train::nets::FfcState::<B>::new(&config, device);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let per_view = config.images_per_view();
    let image_len = 3 * config.input_size[0] * config.input_size[1];

    let mut times = Vec::new();
    for step in 0..warmup + steps {
        let pixels = |rng: &mut ChaCha8Rng| -> Vec<f32> {
            (0..per_view * image_len).map(|_| rng.random_range(-1.0..1.0)).collect()
        };
        let (x_labels, y_labels) = step_labels(&mut rng, 1_000_000, per_view);
        let batch = ffc_data::Batch {
            x: pixels(&mut rng),
            y: pixels(&mut rng),
            x_labels,
            y_labels,
            images_per_view: per_view,
            epoch: 0,
            step,
            skipped_images: 0,
        };
        let started = Instant::now();
        state.train_step(&config, &batch, 0.01, step + 1)?;
        if step >= warmup {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    let seconds = median(&mut times);
    println!(
        "{}",
        json!({
            "network": network, "batch_size": batch_size, "device": device_name(device),
            "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "images_per_step": 2 * per_view, "step_seconds": seconds,
            "images_per_second": (2 * per_view) as f64 / seconds,
            "note": "images per step count both views (4 backbone forwards, 2 backward)",
        })
    );
    Ok(())
}

fn device_name<D: std::fmt::Debug>(device: &D) -> String {
    format!("{device:?}")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Resets the peak resident set size to the current one (Linux `clear_refs`, since 4.0), so that
/// the transient copies made while filling the pool or the weight do not count. Returns false,
/// after a warning, where that is not possible; the peak then includes the setup.
fn reset_peak() -> bool {
    match std::fs::write("/proc/self/clear_refs", "5") {
        Ok(()) => true,
        Err(err) => {
            eprintln!("ffc-bench: cannot reset the peak memory ({err}); it includes the setup");
            false
        }
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), or NaN elsewhere.
fn peak_mb() -> f64 {
    read_status_kb("VmHWM:").map_or(f64::NAN, |kb| kb as f64 / 1024.0)
}

/// Free memory in bytes (Linux `MemAvailable`); 0 when unknown, so nothing is assumed to fit.
fn available_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| field_kb(&text, "MemAvailable:"))
        .map_or(0, |kb| kb * 1024)
}

fn read_status_kb(field: &str) -> Option<u64> {
    field_kb(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

fn field_kb(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}
