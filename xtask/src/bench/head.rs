//! `cargo xtask bench head`: the classifier head's step time and peak memory against the number
//! of identities N, for FFC's class pool and for a full N x 512 classifier.
//!
//! Every measurement is one `ffc-bench head` process, so that the peak resident memory of one
//! side and N does not mix with another's. The sweep runs both sides at every N with the same
//! pool size Q. A second series runs the FFC side at the largest N for larger pools, to compare
//! its step with the bare matrix products that every head needs.
//!
//! The flatness check compares the FFC step at the smallest and the largest N within single
//! `ffc-bench head-pair` processes, which run a step of each in turn. The speed of a shared
//! machine varies between processes by more than the 5% the check allows, and a pair of steps
//! in one process shares it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

use super::machine::{RunContext, load_average};
use super::page::{self, grouped, significant};
use super::plot;
use crate::{cargo, paths};

/// Section of the page that this command rewrites.
const SECTION: &str = "head";

/// File name of the plot, written beside the page.
pub(crate) const PLOT_FILE: &str = "bench_head.png";

/// Largest relative difference between the FFC step at the smallest and at the largest N that
/// still counts as flat.
const FLAT_TOLERANCE: f64 = 0.05;

/// Largest FFC step time, as a multiple of its bare matrix products, accepted at Q = 100 000.
const MAX_STEP_OVER_PRODUCTS: f64 = 2.0;

/// Options of `cargo xtask bench head`.
#[derive(Debug, Clone, Args)]
pub(crate) struct HeadArgs {
    /// Numbers of identities N, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,100000,1000000,10000000",
        value_name = "N,..."
    )]
    ids: Vec<u64>,

    /// Pool slots Q of the FFC side in the sweep over N.
    #[arg(long, default_value_t = 10_000, value_name = "Q")]
    queue_size: u64,

    /// Pool sizes of the step-against-products series, run at the largest N; empty for none.
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 0..,
        default_value = "100000,1000000",
        value_name = "Q,..."
    )]
    ratio_queue_sizes: Vec<u64>,

    /// Timed steps per process; the median is reported.
    #[arg(long, default_value_t = 10, value_name = "S")]
    steps: u32,

    /// Untimed steps per process before the timed ones.
    #[arg(long, default_value_t = 2, value_name = "W")]
    warmup: u32,

    /// Runs of every FFC process of the sweep, interleaved over N in alternating order; the run
    /// with the median step time is reported. Repeats keep a slow spell of a shared machine from
    /// landing on one N.
    #[arg(long, default_value_t = 9, value_name = "R")]
    rounds: u32,

    /// Steps of each N in every process of the flatness check, which runs one such process per
    /// round.
    #[arg(long, default_value_t = 40, value_name = "S")]
    pair_steps: u32,

    /// Also write the sweep as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// One `ffc-bench head --side ffc` result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct FfcRecord {
    /// Identities N.
    pub(crate) ids: u64,
    /// Pool slots Q.
    pub(crate) queue_size: u64,
    /// Gallery and probe features per pass.
    pub(crate) per_pass: u64,
    /// Median step time.
    pub(crate) median_ms: f64,
    /// Median time of the bare products, probe x row0^T forward and backward for both passes.
    pub(crate) matmul_ms: f64,
    /// Median time of one pass's pool update.
    pub(crate) pool_update_ms: f64,
    /// Peak resident memory of the process, in MiB.
    pub(crate) peak_mb: f64,
    /// Whether the peak was reset after the setup, so that it covers only the steps.
    #[serde(default)]
    pub(crate) peak_after_setup: bool,
}

/// One `ffc-bench head --side fc` result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FcRecord {
    /// The classifier fitted in memory and was timed.
    Measured {
        /// Identities N.
        ids: u64,
        /// Median step time.
        median_ms: f64,
        /// Peak resident memory of the process, in MiB.
        peak_mb: f64,
        /// Whether the peak was reset after the setup, so that it covers only the steps.
        peak_after_setup: bool,
    },
    /// Weight, gradient and momentum would not fit in the available memory.
    DoesNotFit {
        /// Identities N.
        ids: u64,
        /// Memory for weight, gradient and momentum, in MiB.
        required_mb: f64,
        /// Available memory when the process started, in MiB.
        available_mb: f64,
    },
}

impl FcRecord {
    /// Identities N.
    pub(crate) fn ids(&self) -> u64 {
        match self {
            Self::Measured { ids, .. } | Self::DoesNotFit { ids, .. } => *ids,
        }
    }

    /// Returns whether the peak excludes the setup, which is true when there is no peak.
    pub(crate) fn peak_after_setup(&self) -> bool {
        match self {
            Self::Measured { peak_after_setup, .. } => *peak_after_setup,
            Self::DoesNotFit { .. } => true,
        }
    }

    /// Step time and peak memory in MiB, when measured.
    pub(crate) fn measured(&self) -> Option<(f64, f64)> {
        match self {
            Self::Measured { median_ms, peak_mb, .. } => Some((*median_ms, *peak_mb)),
            Self::DoesNotFit { .. } => None,
        }
    }
}

/// One `ffc-bench head-pair` result: the FFC step at the smallest and the largest N of the
/// sweep, timed in turn in one process.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PairRecord {
    /// Median step time at the smallest N.
    pub(crate) smallest_ms: f64,
    /// Median step time at the largest N.
    pub(crate) largest_ms: f64,
}

impl PairRecord {
    /// Relative change of the step from the smallest to the largest N.
    pub(crate) fn change(&self) -> f64 {
        self.largest_ms / self.smallest_ms - 1.0
    }
}

/// Both sides at one N.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SweepRow {
    /// The pool: the round with the median step time.
    pub(crate) ffc: FfcRecord,
    /// Step time of every round of the pool, in the order run.
    pub(crate) ffc_rounds: Vec<f64>,
    /// The full classifier.
    pub(crate) fc: FcRecord,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeadResults {
    /// Pool slots of the sweep.
    pub(crate) queue_size: u64,
    /// One row per N, in increasing N.
    pub(crate) sweep: Vec<SweepRow>,
    /// The FFC side at the largest N for each of the larger pools.
    pub(crate) ratio: Vec<FfcRecord>,
    /// The flatness check's processes, one per round.
    pub(crate) pairs: Vec<PairRecord>,
}

/// Runs the sweep and the pool-size series, then writes the page section, the plot and, if
/// asked, the JSON file.
pub(crate) fn run(args: &HeadArgs, page_path: &Path) -> Result<()> {
    let ids = checked_ids(&args.ids)?;
    if args.queue_size == 0 || args.ratio_queue_sizes.contains(&0) {
        bail!("pool sizes must be positive; pass --queue-size and --ratio-queue-sizes above 0");
    }
    if args.steps == 0 {
        bail!("--steps 0 times nothing; pass at least 1");
    }
    if args.rounds == 0 {
        bail!("--rounds 0 runs nothing; pass at least 1");
    }
    if args.pair_steps == 0 {
        bail!("invalid --pair-steps 0: there is nothing to time; pass at least 1");
    }
    let root = paths::workspace_root();
    let bench = cargo::build_release_binary(&root, "ffc-train", "ffc-bench", &[])?;
    let plot_path = plot_path(page_path);
    let mut context = RunContext::start(&root, &[page_path, &plot_path]);

    let mut commands = Vec::new();
    let mut runner = |argv: Vec<String>| -> Result<String> {
        commands.push(process_line(&argv, load_average()));
        run_bench(&bench, &argv)
    };

    let mut rounds: Vec<Vec<FfcRecord>> = vec![Vec::new(); ids.len()];
    for round in 0..args.rounds {
        for index in round_order(round, ids.len()) {
            let argv = head_argv("ffc", ids[index], args.queue_size, args);
            rounds[index].push(parse_ffc(&runner(argv)?)?);
        }
    }
    let mut sweep = Vec::new();
    for (runs, &n) in rounds.into_iter().zip(&ids) {
        let fc = parse_fc(&runner(head_argv("fc", n, args.queue_size, args))?)?;
        let ffc_rounds = runs.iter().map(|record| record.median_ms).collect();
        sweep.push(SweepRow { ffc: median_run(runs), ffc_rounds, fc });
    }
    let largest = *ids.last().expect("checked_ids rejects an empty list");
    let mut ratio = Vec::new();
    for &q in &args.ratio_queue_sizes {
        ratio.push(parse_ffc(&runner(head_argv("ffc", largest, q, args))?)?);
    }
    let mut pairs = Vec::new();
    if ids.len() > 1 {
        for round in 0..args.rounds {
            let pair = pair_ids(round, [ids[0], largest]);
            pairs.push(parse_pair(&runner(pair_argv(pair, args))?, [ids[0], largest])?);
        }
    }
    context.finish();

    let results = HeadResults { queue_size: args.queue_size, sweep, ratio, pairs };
    write_outputs(args, page_path, &results, &context, &commands)
}

fn write_outputs(
    args: &HeadArgs,
    page_path: &Path,
    results: &HeadResults,
    context: &RunContext,
    commands: &[String],
) -> Result<()> {
    let plot_path = plot_path(page_path);
    plot::draw_head(&plot_path, results)
        .with_context(|| format!("failed to draw {}", plot_path.display()))?;
    eprintln!("xtask: wrote {}", plot_path.display());

    let body = section(results, context, &xtask_command(args), commands);
    page::update_section(page_path, SECTION, &body)?;

    if let Some(json_path) = &args.json {
        let text = serde_json::to_string_pretty(&sweep_json(results))? + "\n";
        page::write_file(json_path, text.as_bytes())?;
        eprintln!("xtask: wrote {}", json_path.display());
    }
    for check in targets(results) {
        eprintln!("xtask: {}", check.line());
    }
    Ok(())
}

/// Returns the order in which round `round` (from 0) visits the `count` values of N: ascending in
/// even rounds and descending in odd ones. The step time depends on the position in a round on a
/// shared machine, so alternating keeps that effect from landing on one end of the sweep.
fn round_order(round: u32, count: usize) -> Vec<usize> {
    if round.is_multiple_of(2) { (0..count).collect() } else { (0..count).rev().collect() }
}

/// Returns the two N of round `round`'s flatness process: the smallest first in even rounds and
/// the largest first in odd ones, so that neither always runs first.
fn pair_ids(round: u32, [smallest, largest]: [u64; 2]) -> [u64; 2] {
    if round.is_multiple_of(2) { [smallest, largest] } else { [largest, smallest] }
}

/// Returns the run with the median step time (the upper one of an even count).
fn median_run(mut runs: Vec<FfcRecord>) -> FfcRecord {
    runs.sort_by(|a, b| a.median_ms.total_cmp(&b.median_ms));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

/// Returns the path of the plot, beside the page.
fn plot_path(page_path: &Path) -> PathBuf {
    page_path.parent().unwrap_or(Path::new(".")).join(PLOT_FILE)
}

/// Sorts the identity counts and rejects an empty list, zeros and repeats.
fn checked_ids(ids: &[u64]) -> Result<Vec<u64>> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        bail!("--ids is empty; pass at least one number of identities");
    }
    if sorted[0] == 0 {
        bail!("--ids contains 0; every number of identities must be positive");
    }
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
        bail!("--ids lists {} twice; list each number of identities once", pair[0]);
    }
    Ok(sorted)
}

/// Formats one process for the page, with the load when it started, where other work on a
/// shared machine shows up.
fn process_line(argv: &[String], load: Option<f64>) -> String {
    let load = load.map_or("unknown".to_owned(), |value| format!("{value:.2}"));
    format!("ffc-bench {}  # 1-minute load average {load} at its start", argv.join(" "))
}

/// Arguments of one `ffc-bench head` process.
fn head_argv(side: &str, ids: u64, queue_size: u64, args: &HeadArgs) -> Vec<String> {
    let mut argv = vec!["head".to_owned(), "--side".to_owned(), side.to_owned()];
    argv.extend(["--ids".to_owned(), ids.to_string()]);
    if side == "ffc" {
        argv.extend(["--queue-size".to_owned(), queue_size.to_string()]);
    }
    argv.extend(["--steps".to_owned(), args.steps.to_string()]);
    argv.extend(["--warmup".to_owned(), args.warmup.to_string()]);
    argv
}

/// Arguments of one `ffc-bench head-pair` process.
fn pair_argv([first, second]: [u64; 2], args: &HeadArgs) -> Vec<String> {
    let mut argv = vec!["head-pair".to_owned(), "--ids".to_owned(), format!("{first},{second}")];
    argv.extend(["--queue-size".to_owned(), args.queue_size.to_string()]);
    argv.extend(["--steps".to_owned(), args.pair_steps.to_string()]);
    argv.extend(["--warmup".to_owned(), args.warmup.to_string()]);
    argv
}

/// Returns the command line that reproduces this run.
fn xtask_command(args: &HeadArgs) -> String {
    let list = |values: &[u64]| values.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    // An empty list is the bare option, which clap reads as no values.
    let ratio = match list(&args.ratio_queue_sizes) {
        sizes if sizes.is_empty() => String::new(),
        sizes => format!(" {sizes}"),
    };
    let mut command = format!(
        "cargo xtask bench head --ids {} --queue-size {} --ratio-queue-sizes{ratio} --steps {} \
         --warmup {} --rounds {} --pair-steps {}",
        list(&args.ids),
        args.queue_size,
        args.steps,
        args.warmup,
        args.rounds,
        args.pair_steps
    );
    if let Some(json) = &args.json {
        command.push_str(&format!(" --json {}", json.display()));
    }
    command
}

/// Runs `ffc-bench` and returns its standard output. Its standard error streams through.
pub(crate) fn run_bench(bench: &Path, argv: &[String]) -> Result<String> {
    eprintln!("xtask: running ffc-bench {}", argv.join(" "));
    let output = Command::new(bench)
        .args(argv)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start {}", bench.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "`ffc-bench {}` failed with {}; its output was:\n{stdout}",
            argv.join(" "),
            output.status
        );
    }
    Ok(stdout)
}

/// Returns the last line of `stdout` that contains a JSON object.
pub(crate) fn last_json_line(stdout: &str) -> Result<&str> {
    stdout
        .lines()
        .map(str::trim)
        .rfind(|line| line.starts_with('{'))
        .with_context(|| format!("ffc-bench printed no JSON line; its output was:\n{stdout}"))
}

/// Parses the output of `ffc-bench head --side ffc`.
pub(crate) fn parse_ffc(stdout: &str) -> Result<FfcRecord> {
    #[derive(Deserialize)]
    struct Line {
        side: String,
        fits: bool,
        #[serde(flatten)]
        record: FfcRecord,
    }

    let text = last_json_line(stdout)?;
    let line: Line =
        serde_json::from_str(text).with_context(|| format!("invalid ffc result line: {text}"))?;
    if line.side != "ffc" || !line.fits {
        bail!("expected an ffc result that fits, got: {text}");
    }
    Ok(line.record)
}

/// Parses the output of `ffc-bench head-pair`, whose two N must be `smallest` and `largest` in
/// either order.
pub(crate) fn parse_pair(stdout: &str, [smallest, largest]: [u64; 2]) -> Result<PairRecord> {
    #[derive(Deserialize)]
    struct Line {
        side: String,
        ids: [u64; 2],
        median_ms: [f64; 2],
    }

    let text = last_json_line(stdout)?;
    let line: Line =
        serde_json::from_str(text).with_context(|| format!("invalid head-pair line: {text}"))?;
    if line.side != "ffc-pair" {
        bail!("expected an ffc-pair result, got: {text}");
    }
    let [first, second] = line.median_ms;
    match line.ids {
        [a, b] if [a, b] == [smallest, largest] => {
            Ok(PairRecord { smallest_ms: first, largest_ms: second })
        }
        [a, b] if [a, b] == [largest, smallest] => {
            Ok(PairRecord { smallest_ms: second, largest_ms: first })
        }
        other => {
            bail!("expected N = {smallest} and {largest} in the head-pair line, got {other:?}")
        }
    }
}

/// Parses the output of `ffc-bench head --side fc`.
pub(crate) fn parse_fc(stdout: &str) -> Result<FcRecord> {
    #[derive(Deserialize)]
    struct Line {
        side: String,
        ids: u64,
        fits: bool,
        median_ms: Option<f64>,
        peak_mb: Option<f64>,
        required_mb: Option<f64>,
        available_mb: Option<f64>,
        #[serde(default)]
        peak_after_setup: bool,
    }

    let text = last_json_line(stdout)?;
    let line: Line =
        serde_json::from_str(text).with_context(|| format!("invalid fc result line: {text}"))?;
    if line.side != "fc" {
        bail!("expected an fc result, got: {text}");
    }
    let missing = |field: &str| format!("fc result without `{field}`: {text}");
    let record = if line.fits {
        FcRecord::Measured {
            ids: line.ids,
            median_ms: line.median_ms.with_context(|| missing("median_ms"))?,
            peak_mb: line.peak_mb.with_context(|| missing("peak_mb"))?,
            peak_after_setup: line.peak_after_setup,
        }
    } else {
        FcRecord::DoesNotFit {
            ids: line.ids,
            required_mb: line.required_mb.with_context(|| missing("required_mb"))?,
            available_mb: line.available_mb.with_context(|| missing("available_mb"))?,
        }
    };
    Ok(record)
}

/// Builds the `--json` document: `{"queue_size": Q, "rows": [{"ids", "ffc_ms", "ffc_peak_mb", "fc_ms",
/// "fc_peak_mb"}], "flat_pairs": [{"smallest_ms", "largest_ms"}], "flat_change"}`, with `null`
/// FC fields where the classifier does not fit and a `null` change without paired processes.
pub(crate) fn sweep_json(results: &HeadResults) -> Value {
    let rows: Vec<Value> = results
        .sweep
        .iter()
        .map(|row| {
            let fc = row.fc.measured();
            json!({
                "ids": row.ffc.ids,
                "ffc_ms": row.ffc.median_ms,
                "ffc_peak_mb": row.ffc.peak_mb,
                "fc_ms": fc.map(|(ms, _)| ms),
                "fc_peak_mb": fc.map(|(_, peak)| peak),
            })
        })
        .collect();
    let pairs: Vec<Value> = results
        .pairs
        .iter()
        .map(|pair| json!({ "smallest_ms": pair.smallest_ms, "largest_ms": pair.largest_ms }))
        .collect();
    json!({
        "queue_size": results.queue_size,
        "rows": rows,
        "flat_pairs": pairs,
        "flat_change": median_change(&results.pairs),
    })
}

/// One acceptance target and how the run did against it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    /// Requirement, in words.
    pub(crate) goal: String,
    /// `Some(true)` if met, `Some(false)` if missed, `None` if this run did not measure it.
    pub(crate) met: Option<bool>,
    /// The numbers behind the verdict.
    pub(crate) detail: String,
}

impl Target {
    /// Formats a markdown list item: verdict, target, numbers.
    pub(crate) fn line(&self) -> String {
        let verdict = match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        format!("{verdict}: {}. {}", self.goal, self.detail)
    }
}

/// Checks the three acceptance targets of the head benchmark.
pub(crate) fn targets(results: &HeadResults) -> Vec<Target> {
    vec![flat_target(results), fc_growth_target(results), products_target(results)]
}

/// Checks that the FFC step at the largest N is within 5% of the step at the smallest N. The
/// verdict uses the processes that time both N in turn, when the run has them.
fn flat_target(results: &HeadResults) -> Target {
    let (Some(first), Some(last)) = (results.sweep.first(), results.sweep.last()) else {
        return Target { goal: "FFC step flat in N".to_owned(), met: None, detail: String::new() };
    };
    let goal = format!(
        "FFC step time at N = {} within {:.0}% of N = {} (Q = {})",
        grouped(last.ffc.ids),
        FLAT_TOLERANCE * 100.0,
        grouped(first.ffc.ids),
        grouped(results.queue_size)
    );
    if results.sweep.len() < 2 {
        let detail = "The sweep has a single N.".to_owned();
        return Target { goal, met: None, detail };
    }
    let separate = last.ffc.median_ms / first.ffc.median_ms - 1.0;
    let own_change = step_over_products(&last.ffc) / step_over_products(&first.ffc) - 1.0;
    let separate_detail = format!(
        "In separate processes: {} ms against {} ms, a change of {:+.1}%; against the products \
         timed in the same process, {:.3} against {:.3}, a change of {:+.1}%.",
        significant(last.ffc.median_ms),
        significant(first.ffc.median_ms),
        separate * 100.0,
        step_over_products(&last.ffc),
        step_over_products(&first.ffc),
        own_change * 100.0
    );
    let Some(change) = median_change(&results.pairs) else {
        return Target {
            goal,
            met: Some(separate.abs() <= FLAT_TOLERANCE),
            detail: separate_detail,
        };
    };
    let per_process: Vec<String> =
        results.pairs.iter().map(|pair| format!("{:+.1}", pair.change() * 100.0)).collect();
    let detail = format!(
        "A step of each in turn in one process: a median change of {:+.1}% over {} processes \
         ({}%). {separate_detail}",
        change * 100.0,
        results.pairs.len(),
        per_process.join(", ")
    );
    Target { goal, met: Some(change.abs() <= FLAT_TOLERANCE), detail }
}

/// Returns the median of the processes' changes (the upper one of an even count), or `None`
/// without processes.
fn median_change(pairs: &[PairRecord]) -> Option<f64> {
    let mut changes: Vec<f64> = pairs.iter().map(PairRecord::change).collect();
    changes.sort_by(f64::total_cmp);
    changes.get(changes.len() / 2).copied()
}

/// Step time over the bare products timed in the same process. The two share the machine's
/// speed during the process, which varies between processes on a shared machine.
fn step_over_products(record: &FfcRecord) -> f64 {
    record.median_ms / record.matmul_ms
}

/// Checks that the full classifier is measured at every N up to one million and that its time
/// grows with N.
fn fc_growth_target(results: &HeadResults) -> Target {
    const UP_TO: u64 = 1_000_000;
    let goal = format!("FC measured at every N up to {} and growing with N", grouped(UP_TO));
    let rows: Vec<&FcRecord> =
        results.sweep.iter().map(|row| &row.fc).filter(|fc| fc.ids() <= UP_TO).collect();
    if rows.len() < 2 {
        let detail = "The sweep has fewer than two N in this range.".to_owned();
        return Target { goal, met: None, detail };
    }
    let times: Vec<Option<f64>> = rows.iter().map(|fc| fc.measured().map(|(ms, _)| ms)).collect();
    let all_measured = times.iter().all(Option::is_some);
    let growing = all_measured && times.windows(2).all(|pair| pair[0] < pair[1]);
    let listed: Vec<String> = rows
        .iter()
        .zip(&times)
        .map(|(fc, ms)| {
            let time = ms.map_or("does not fit".to_owned(), |ms| format!("{} ms", significant(ms)));
            format!("{}: {time}", grouped(fc.ids()))
        })
        .collect();
    Target { goal, met: Some(growing), detail: format!("{}.", listed.join(", ")) }
}

/// Checks that at Q = 100 000 the FFC step costs at most twice its bare matrix products.
fn products_target(results: &HeadResults) -> Target {
    const QUEUE_SIZE: u64 = 100_000;
    let goal = format!(
        "FFC step at most {MAX_STEP_OVER_PRODUCTS:.0}x its bare matrix products at Q = {}",
        grouped(QUEUE_SIZE)
    );
    let Some(record) = results.ratio.iter().find(|r| r.queue_size == QUEUE_SIZE) else {
        let detail = "The run has no pool of this size.".to_owned();
        return Target { goal, met: None, detail };
    };
    let ratio = record.median_ms / record.matmul_ms;
    let detail = format!(
        "{} ms against {} ms of products at N = {}, {:.2}x.",
        significant(record.median_ms),
        significant(record.matmul_ms),
        grouped(record.ids),
        ratio
    );
    Target { goal, met: Some(ratio <= MAX_STEP_OVER_PRODUCTS), detail }
}

/// Builds the markdown of the section: context, command, both tables, the plot, the targets
/// and the processes run.
pub(crate) fn section(
    results: &HeadResults,
    context: &RunContext,
    command: &str,
    processes: &[String],
) -> String {
    let mut out = String::new();
    out.push_str(&context.describe());
    out.push_str(&format!("\n\nCommand: `{command}`\n\n"));
    out.push_str(&sweep_table(results));
    out.push_str(&format!("\n![Step time and peak memory against N]({PLOT_FILE})\n\n"));
    if !results.ratio.is_empty() {
        out.push_str(&ratio_table(results));
        out.push('\n');
    }
    out.push_str("Acceptance targets:\n\n");
    for target in targets(results) {
        out.push_str(&format!("- {}\n", target.line()));
    }
    out.push_str(
        "\nThe processes it ran, in order (`ffc-bench` is `target/release/ffc-bench`):\n\n",
    );
    out.push_str("```text\n");
    for process in processes {
        out.push_str(process);
        out.push('\n');
    }
    out.push_str("```\n");
    out
}

fn sweep_table(results: &HeadResults) -> String {
    let mut out = format!(
        "Step time (median) and peak resident memory of the process. FFC: Q = {} slots, {} \
         features per pass. {}\n\n",
        grouped(results.queue_size),
        results.sweep.first().map_or(0, |row| row.ffc.per_pass),
        peak_note(results),
    );
    out.push_str("| N identities | FFC step (ms) | FFC products (ms) | FFC step / products | FFC peak (MiB) | FC step (ms) | FC peak (MiB) | FC / FFC time |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in &results.sweep {
        let ffc = &row.ffc;
        let (fc_time, fc_peak, ratio) = match &row.fc {
            FcRecord::Measured { median_ms, peak_mb, .. } => (
                significant(*median_ms),
                significant(*peak_mb),
                format!("{:.2}", median_ms / ffc.median_ms),
            ),
            FcRecord::DoesNotFit { required_mb, available_mb, .. } => (
                format!(
                    "does not fit: needs {} MiB, {} MiB available",
                    significant(*required_mb),
                    significant(*available_mb)
                ),
                "-".to_owned(),
                "-".to_owned(),
            ),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} | {} | {fc_time} | {fc_peak} | {ratio} |\n",
            grouped(ffc.ids),
            significant(ffc.median_ms),
            significant(ffc.matmul_ms),
            step_over_products(ffc),
            significant(ffc.peak_mb),
        ));
    }
    out.push_str(&rounds_note(results));
    out
}

/// Lists the step time of every FFC round, so that the spread behind each median is visible.
fn rounds_note(results: &HeadResults) -> String {
    let rounds = results.sweep.first().map_or(0, |row| row.ffc_rounds.len());
    if rounds < 2 {
        return String::new();
    }
    let per_n: Vec<String> = results
        .sweep
        .iter()
        .map(|row| {
            let times: Vec<String> = row.ffc_rounds.iter().map(|&ms| significant(ms)).collect();
            format!("{}: {}", grouped(row.ffc.ids), times.join(", "))
        })
        .collect();
    format!(
        "\nThe FFC columns come from the round with the median step time of {rounds} rounds, run \
         interleaved over N: ascending in odd-numbered rounds and descending in even-numbered ones. \
         FFC step time of every round, in ms: {}.\n",
        per_n.join("; ")
    )
}

/// Describes what the peak columns cover.
fn peak_note(results: &HeadResults) -> String {
    let ffc = results.sweep.iter().map(|row| &row.ffc).chain(&results.ratio);
    let with_setup: Vec<String> = ffc
        .filter(|record| !record.peak_after_setup)
        .map(|record| {
            format!("FFC at N = {}, Q = {}", grouped(record.ids), grouped(record.queue_size))
        })
        .chain(
            results
                .sweep
                .iter()
                .filter(|row| !row.fc.peak_after_setup())
                .map(|row| format!("FC at N = {}", grouped(row.fc.ids()))),
        )
        .collect();
    if with_setup.is_empty() {
        "The peak is the resident-set high-water mark from the end of the setup (pool or \
         weight filled) to the end of the process."
            .to_owned()
    } else {
        format!(
            "The peak is the resident-set high-water mark of the process; it includes the setup \
             (filling the pool or the weight) for {}.",
            with_setup.join(", ")
        )
    }
}

fn ratio_table(results: &HeadResults) -> String {
    let ids = results.ratio.first().map_or(0, |r| r.ids);
    let mut out = format!(
        "FFC step against its bare matrix products (probe x row 0 transposed, forward and \
         backward, both passes) at N = {}:\n\n",
        grouped(ids)
    );
    out.push_str("| Q slots | features per pass | FFC step (ms) | bare products (ms) | step / products | pool update of one pass (ms) | peak (MiB) |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|\n");
    let sweep_row = results.sweep.iter().map(|row| &row.ffc).filter(|ffc| ffc.ids == ids);
    for record in sweep_row.chain(&results.ratio) {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {} | {} |\n",
            grouped(record.queue_size),
            record.per_pass,
            significant(record.median_ms),
            significant(record.matmul_ms),
            step_over_products(record),
            significant(record.pool_update_ms),
            significant(record.peak_mb),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::machine::Machine;

    const FFC_LINE: &str = r#"{"fits":true,"ids":10000,"matmul_ms":54.5,"median_ms":171.9,"peak_mb":83.6,"per_pass":96,"pool_update_ms":0.087,"queue_size":10000,"side":"ffc"}"#;
    const FC_LINE: &str =
        r#"{"fits":true,"ids":10000,"median_ms":216.2,"peak_mb":140.9,"per_pass":96,"side":"fc"}"#;
    const FC_TOO_BIG: &str = r#"{"available_mb":22909.1,"fits":false,"ids":10000000,"required_mb":58593.75,"side":"fc"}"#;

    fn ffc(ids: u64, queue_size: u64, median_ms: f64, matmul_ms: f64) -> FfcRecord {
        FfcRecord {
            ids,
            queue_size,
            per_pass: 96,
            median_ms,
            matmul_ms,
            pool_update_ms: 0.1,
            peak_mb: 84.0,
            peak_after_setup: true,
        }
    }

    fn measured(ids: u64, median_ms: f64) -> FcRecord {
        FcRecord::Measured { ids, median_ms, peak_mb: ids as f64 * 0.01, peak_after_setup: true }
    }

    fn results() -> HeadResults {
        HeadResults {
            queue_size: 10_000,
            sweep: vec![
                SweepRow {
                    ffc: ffc(10_000, 10_000, 100.0, 50.0),
                    ffc_rounds: vec![100.0],
                    fc: measured(10_000, 200.0),
                },
                SweepRow {
                    ffc: ffc(100_000, 10_000, 101.0, 50.0),
                    ffc_rounds: vec![101.0],
                    fc: measured(100_000, 2e3),
                },
                SweepRow {
                    ffc: ffc(10_000_000, 10_000, 104.0, 50.0),
                    ffc_rounds: vec![104.0],
                    fc: FcRecord::DoesNotFit {
                        ids: 10_000_000,
                        required_mb: 58_593.75,
                        available_mb: 22_909.1,
                    },
                },
            ],
            ratio: vec![ffc(10_000_000, 100_000, 1500.0, 600.0)],
            pairs: Vec::new(),
        }
    }

    fn pair(smallest_ms: f64, largest_ms: f64) -> PairRecord {
        PairRecord { smallest_ms, largest_ms }
    }

    #[test]
    fn ffc_line_parsed() {
        let stdout = format!("some log line\n{FFC_LINE}\n");
        let record = parse_ffc(&stdout).unwrap();
        let expected = FfcRecord {
            pool_update_ms: 0.087,
            peak_mb: 83.6,
            peak_after_setup: false,
            ..ffc(10_000, 10_000, 171.9, 54.5)
        };
        assert_eq!(record, expected, "a line without peak_after_setup counts the setup");
        let newer = FFC_LINE.replace(r#""fits":true"#, r#""fits":true,"peak_after_setup":true"#);
        assert!(parse_ffc(&newer).unwrap().peak_after_setup);
    }

    #[test]
    fn fc_lines_parsed() {
        assert_eq!(
            parse_fc(FC_LINE).unwrap(),
            FcRecord::Measured {
                ids: 10_000,
                median_ms: 216.2,
                peak_mb: 140.9,
                peak_after_setup: false
            }
        );
        let record = parse_fc(FC_TOO_BIG).unwrap();
        assert_eq!(
            record,
            FcRecord::DoesNotFit {
                ids: 10_000_000,
                required_mb: 58_593.75,
                available_mb: 22_909.1
            }
        );
        assert_eq!(record.measured(), None);
    }

    #[test]
    fn wrong_side_rejected() {
        let err = parse_ffc(FC_LINE).unwrap_err().to_string();
        assert!(err.contains("invalid ffc result line"), "{err}");
        let err = parse_fc(FFC_LINE).unwrap_err().to_string();
        assert!(err.contains("expected an fc result"), "{err}");
    }

    #[test]
    fn incomplete_lines_rejected() {
        let err = parse_fc(r#"{"side":"fc","ids":5,"fits":true,"peak_mb":1.0}"#).unwrap_err();
        assert!(err.to_string().contains("without `median_ms`"), "{err}");
        let nan_median = FFC_LINE.replace("171.9", "null");
        assert!(parse_ffc(&nan_median).is_err());
        let err = parse_ffc("warming up\n").unwrap_err().to_string();
        assert!(err.contains("printed no JSON line"), "{err}");
    }

    #[test]
    fn json_has_the_documented_shape() {
        let value = sweep_json(&results());
        let expected = json!({
            "queue_size": 10000,
            "rows": [
                {"ids": 10000, "ffc_ms": 100.0, "ffc_peak_mb": 84.0, "fc_ms": 200.0, "fc_peak_mb": 100.0},
                {"ids": 100000, "ffc_ms": 101.0, "ffc_peak_mb": 84.0, "fc_ms": 2000.0, "fc_peak_mb": 1000.0},
                {"ids": 10000000, "ffc_ms": 104.0, "ffc_peak_mb": 84.0, "fc_ms": null, "fc_peak_mb": null},
            ],
            "flat_pairs": [],
            "flat_change": null,
        });
        assert_eq!(value, expected);
        let mut paired = results();
        paired.pairs = vec![pair(100.0, 98.0)];
        let value = sweep_json(&paired);
        assert_eq!(value["flat_pairs"], json!([{"smallest_ms": 100.0, "largest_ms": 98.0}]));
        assert!((value["flat_change"].as_f64().unwrap() + 0.02).abs() < 1e-12);
    }

    #[test]
    fn targets_met_and_missed() {
        let checks = targets(&results());
        assert_eq!(checks.len(), 3);
        assert_eq!(checks[0].met, Some(true), "{}", checks[0].line());
        assert!(checks[0].detail.contains("+4.0%"), "{}", checks[0].detail);
        assert!(checks[0].detail.contains("2.080 against 2.000"), "{}", checks[0].detail);
        assert_eq!(checks[1].met, Some(true), "{}", checks[1].line());
        assert_eq!(checks[2].met, Some(false), "{}", checks[2].line());
        assert!(checks[2].line().starts_with("MISSED: "));
        assert!(checks[2].detail.contains("2.50x"), "{}", checks[2].detail);
    }

    #[test]
    fn flat_target_counts_both_directions() {
        let mut faster = results();
        faster.sweep[2].ffc.median_ms = 94.0;
        assert_eq!(targets(&faster)[0].met, Some(false));
        assert!(targets(&faster)[0].detail.contains("-6.0%"));

        // A slower machine during one process moves step and products together.
        let mut slow_process = results();
        slow_process.sweep[2].ffc.matmul_ms = 55.0;
        slow_process.sweep[2].ffc.median_ms = 110.0;
        let check = &targets(&slow_process)[0];
        assert_eq!(check.met, Some(false), "the raw step time decides");
        assert!(check.detail.contains("+10.0%"), "{}", check.detail);
        assert!(
            check.detail.contains("2.000 against 2.000, a change of +0.0%"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn fc_target_needs_growth_and_fit() {
        let mut flat = results();
        flat.sweep[1].fc = measured(100_000, 150.0);
        assert_eq!(targets(&flat)[1].met, Some(false));

        let mut too_big = results();
        too_big.sweep[1].fc =
            FcRecord::DoesNotFit { ids: 100_000, required_mb: 1.0, available_mb: 0.5 };
        let check = &targets(&too_big)[1];
        assert_eq!(check.met, Some(false));
        assert!(check.detail.contains("100 000: does not fit"), "{}", check.detail);
    }

    #[test]
    fn unmeasured_targets_say_so() {
        let single =
            HeadResults { sweep: results().sweep[..1].to_vec(), ratio: vec![], ..results() };
        let checks = targets(&single);
        assert!(checks.iter().all(|check| check.met.is_none()), "{checks:?}");
        assert!(checks[2].line().starts_with("not measured: "));
    }

    #[test]
    fn section_lists_tables_and_targets() {
        let context = RunContext {
            machine: Machine {
                cpu: "Test CPU".to_owned(),
                logical_cpus: 2,
                memory_gib: Some(23.5),
                os: "Linux".to_owned(),
            },
            started: "2025-12-04 17:05 UTC".to_owned(),
            commit: "abc".to_owned(),
            load_at_start: Some(1.0),
            load_at_end: Some(2.0),
        };
        let processes = ["ffc-bench head --side ffc --ids 10000".to_owned()];
        let text = section(&results(), &context, "cargo xtask bench head", &processes);
        assert!(
            text.contains("| 10 000 | 100 | 50.0 | 2.000 | 84.0 | 200 | 100 | 2.00 |"),
            "{text}"
        );
        assert!(text.contains("does not fit: needs 58 594 MiB, 22 909 MiB available"), "{text}");
        assert!(text.contains("| 10 000 | 96 | 104 | 50.0 | 2.08 | 0.100 | 84.0 |"), "{text}");
        assert!(text.contains("| 100 000 | 96 | 1 500 | 600 | 2.50 | 0.100 | 84.0 |"), "{text}");
        assert!(text.contains("![Step time and peak memory against N](bench_head.png)"));
        assert!(text.contains("- MISSED: FFC step at most 2x"), "{text}");
        assert!(text.contains("from the end of the setup (pool or weight filled)"), "{text}");

        let mut old_binary = results();
        old_binary.ratio[0].peak_after_setup = false;
        let text = section(&old_binary, &context, "cargo xtask bench head", &processes);
        assert!(text.contains("includes the setup (filling the pool or the weight) for FFC at N = 10 000 000, Q = 100 000."), "{text}");
        assert!(text.contains("```text\nffc-bench head --side ffc --ids 10000\n```"), "{text}");
    }

    #[test]
    fn ids_checked_and_sorted() {
        assert_eq!(checked_ids(&[100, 10]).unwrap(), [10, 100]);
        assert!(checked_ids(&[]).unwrap_err().to_string().contains("empty"));
        assert!(checked_ids(&[0, 5]).unwrap_err().to_string().contains("contains 0"));
        assert!(checked_ids(&[5, 5]).unwrap_err().to_string().contains("lists 5 twice"));
    }

    #[test]
    fn round_order_alternates() {
        assert_eq!(round_order(0, 4), vec![0, 1, 2, 3]);
        assert_eq!(round_order(1, 4), vec![3, 2, 1, 0]);
        assert_eq!(round_order(2, 4), vec![0, 1, 2, 3]);
        assert_eq!(round_order(1, 1), vec![0]);
    }

    #[test]
    fn rounds_listed_per_n() {
        let mut three = results();
        for row in &mut three.sweep {
            row.ffc_rounds = vec![100.0, 98.5, 120.0];
        }
        let note = rounds_note(&three);
        assert!(note.contains("median step time of 3 rounds"), "{note}");
        assert!(note.contains("10 000: 100, 98.5, 120; 100 000: 100, 98.5, 120"), "{note}");
        assert_eq!(rounds_note(&results()), "");
    }

    #[test]
    fn median_run_picks_the_middle_time() {
        let runs = vec![ffc(10, 7, 30.0, 1.0), ffc(10, 7, 10.0, 2.0), ffc(10, 7, 20.0, 3.0)];
        assert_eq!(median_run(runs).matmul_ms, 3.0);
        let pair = vec![ffc(10, 7, 30.0, 1.0), ffc(10, 7, 10.0, 2.0)];
        assert_eq!(median_run(pair).median_ms, 30.0);
    }

    #[test]
    fn process_arguments() {
        let args = HeadArgs {
            ids: vec![10],
            queue_size: 7,
            ratio_queue_sizes: vec![],
            steps: 3,
            warmup: 1,
            rounds: 2,
            pair_steps: 5,
            json: None,
        };
        assert_eq!(
            head_argv("ffc", 10, 7, &args).join(" "),
            "head --side ffc --ids 10 --queue-size 7 --steps 3 --warmup 1"
        );
        assert_eq!(
            head_argv("fc", 10, 7, &args).join(" "),
            "head --side fc --ids 10 --steps 3 --warmup 1"
        );
        let line = process_line(&head_argv("fc", 10, 7, &args), Some(3.456));
        assert_eq!(
            line,
            "ffc-bench head --side fc --ids 10 --steps 3 --warmup 1  # 1-minute load average 3.46 \
             at its start"
        );
        assert!(process_line(&[], None).ends_with("load average unknown at its start"));
        assert_eq!(
            xtask_command(&args),
            "cargo xtask bench head --ids 10 --queue-size 7 --ratio-queue-sizes --steps 3 --warmup 1 \
             --rounds 2 --pair-steps 5"
        );
        assert_eq!(
            pair_argv([10, 1000], &args).join(" "),
            "head-pair --ids 10,1000 --queue-size 7 --steps 5 --warmup 1"
        );
    }

    #[test]
    fn pair_lines_parsed_in_either_order() {
        let line = r#"{"ids":[10000,10000000],"median_ms":[25.6,24.5],"per_pass":96,"queue_size":10000,"side":"ffc-pair","steps":40}"#;
        assert_eq!(parse_pair(line, [10_000, 10_000_000]).unwrap(), pair(25.6, 24.5));
        let swapped = line.replace("[10000,10000000]", "[10000000,10000]");
        assert_eq!(parse_pair(&swapped, [10_000, 10_000_000]).unwrap(), pair(24.5, 25.6));

        let error = parse_pair(line, [10_000, 100_000]).unwrap_err().to_string();
        assert!(error.contains("expected N = 10000 and 100000"), "{error}");
        let error = parse_pair(FFC_LINE, [10_000, 10_000_000]).unwrap_err().to_string();
        assert!(error.contains("invalid head-pair line"), "{error}");
    }

    #[test]
    fn pair_order_alternates() {
        assert_eq!(pair_ids(0, [10, 1000]), [10, 1000]);
        assert_eq!(pair_ids(1, [10, 1000]), [1000, 10]);
        assert_eq!(pair_ids(2, [10, 1000]), [10, 1000]);
    }

    #[test]
    fn flat_target_uses_paired_processes() {
        // Separate processes put 1e7 10% above 1e4, the paired ones 2% at the median.
        let mut slow_process = results();
        slow_process.sweep[2].ffc.median_ms = 110.0;
        slow_process.pairs = vec![pair(100.0, 102.0), pair(100.0, 90.0), pair(100.0, 103.0)];
        let check = &targets(&slow_process)[0];
        assert_eq!(check.met, Some(true), "{}", check.line());
        assert!(
            check.detail.contains("median change of +2.0% over 3 processes"),
            "{}",
            check.detail
        );
        assert!(check.detail.contains("(+2.0, -10.0, +3.0%)"), "{}", check.detail);
        assert!(check.detail.contains("In separate processes: 110 ms"), "{}", check.detail);

        // Six processes: the upper median decides.
        slow_process.pairs.extend([pair(100.0, 107.0), pair(100.0, 108.0), pair(100.0, 109.0)]);
        let check = &targets(&slow_process)[0];
        assert_eq!(check.met, Some(false), "{}", check.line());
        assert!(check.detail.contains("median change of +7.0% over 6"), "{}", check.detail);
    }
}
