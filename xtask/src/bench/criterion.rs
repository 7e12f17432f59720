//! `cargo xtask bench lru` and `cargo xtask bench pool`: run a crate's criterion benchmarks and
//! summarise them in the page.
//!
//! The benchmark ids come from criterion's standard output, which names every benchmark that
//! finished. The numbers come from the `new/estimates.json` that criterion writes for each of
//! them, so no figure is re-parsed from rounded text. Criterion writes to
//! `$CRITERION_HOME`, which this command sets to `<target folder>/criterion` unless the caller
//! has set it.

use std::collections::HashMap;
use std::env;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;

use super::machine::RunContext;
use super::page::{self, significant};
use crate::{cargo, paths};

/// A criterion bench target and how its table reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Suite {
    /// Page section and xtask subcommand.
    pub(crate) section: &'static str,
    /// Cargo package.
    pub(crate) package: &'static str,
    /// Bench target in the package.
    pub(crate) bench: &'static str,
    /// Name of the benchmark parameter, for the table header.
    pub(crate) parameter: &'static str,
    /// Unit of the reported time.
    pub(crate) per: Per,
}

/// The unit of the reported time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Per {
    /// Time per element of the declared throughput in ns, e.g. one LRU operation; the unit's
    /// singular and plural names.
    Element(&'static str, &'static str),
    /// Time per iteration in ms, e.g. one pass of gallery features; the unit's singular and
    /// plural names.
    Iteration(&'static str, &'static str),
}

/// `SlotLru` operations at 1e3, 1e5 and 1e7 slots, 4096 operations per iteration.
pub(crate) const LRU: Suite = Suite {
    section: "lru",
    package: "ffc-lru",
    bench: "lru",
    parameter: "capacity",
    per: Per::Element("op", "ops"),
};

/// One pool update of 768 gallery features at Q = 1e4, 1e5 and 1e6.
pub(crate) const POOL: Suite = Suite {
    section: "pool",
    package: "ffc-pool",
    bench: "pool",
    parameter: "Q",
    per: Per::Iteration("pass", "passes"),
};

/// Options of `cargo xtask bench lru` and `cargo xtask bench pool`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct CriterionArgs {
    /// Options passed to the criterion harness after `--noplot`, e.g. `-- --quick` or a filter.
    #[arg(last = true, value_name = "CRITERION_ARGS")]
    criterion_args: Vec<String>,
}

/// One finished benchmark.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BenchResult {
    /// Group and function id, joined by `/`.
    pub(crate) name: String,
    /// Parameter value, if the benchmark has one.
    pub(crate) parameter: Option<String>,
    /// Elements per iteration, from the declared throughput.
    pub(crate) elements: Option<u64>,
    /// Criterion's typical time per iteration (the slope estimate, else the mean), in ns.
    pub(crate) typical_ns: f64,
    /// Lower bound of its 95% confidence interval, in ns.
    pub(crate) lower_ns: f64,
    /// Upper bound of its 95% confidence interval, in ns.
    pub(crate) upper_ns: f64,
}

/// Runs the suite's benchmarks and rewrites its section of the page.
pub(crate) fn run(suite: Suite, args: &CriterionArgs, page_path: &Path) -> Result<()> {
    let root = paths::workspace_root();
    let home = match env::var_os("CRITERION_HOME") {
        Some(home) => PathBuf::from(home),
        None => cargo::target_directory(&root)?.join("criterion"),
    };
    let mut context = RunContext::start(&root, &[page_path]);
    let started = SystemTime::now();

    let argv = bench_argv(suite, args);
    let stdout = run_cargo_bench(&root, &home, &argv)?;
    context.finish();

    let ids = result_ids(&stdout);
    if ids.is_empty() {
        bail!("criterion reported no finished benchmark; check the output above");
    }
    let index = index_benchmarks(&home)?;
    let results =
        ids.iter().map(|id| load_result(&index, id, started)).collect::<Result<Vec<_>>>()?;
    if let Per::Element(unit, _) = suite.per
        && let Some(result) = results.iter().find(|result| result.elements.is_none())
    {
        bail!(
            "benchmark `{}` declares no element throughput, so its time per {unit} is unknown",
            result.name
        );
    }

    let command = format!("cargo xtask bench {}", suite.section)
        + &if args.criterion_args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.criterion_args.join(" "))
        };
    let body = section(suite, &results, &context, &command, &argv);
    page::update_section(page_path, suite.section, &body)
}

/// Arguments of `cargo bench` for the suite. Only the bench target runs, because the unit
/// tests' harness rejects criterion's options.
fn bench_argv(suite: Suite, args: &CriterionArgs) -> Vec<String> {
    let mut argv: Vec<String> = ["bench", "-p", suite.package, "--bench", suite.bench, "--"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    argv.push("--noplot".to_owned());
    argv.extend(args.criterion_args.iter().cloned());
    argv
}

/// Runs `cargo <argv>` with `CRITERION_HOME` set, echoes its standard output to our standard
/// error as it comes, and returns it.
fn run_cargo_bench(root: &Path, home: &Path, argv: &[String]) -> Result<String> {
    eprintln!("xtask: CRITERION_HOME={} cargo {}", home.display(), argv.join(" "));
    let mut child = Command::new(cargo::cargo_command())
        .args(argv)
        .env("CRITERION_HOME", home)
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("failed to start cargo bench")?;
    let mut stdout = String::new();
    let pipe = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(pipe).lines() {
        let line = line.context("failed to read the output of cargo bench")?;
        eprintln!("{line}");
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let status = child.wait().context("failed to wait for cargo bench")?;
    if !status.success() {
        bail!("`cargo {}` failed with {status}", argv.join(" "));
    }
    Ok(stdout)
}

/// Returns the ids of the benchmarks that criterion reported, in order.
///
/// Criterion prints `<id>  time:   [low estimate high]` for every finished benchmark, or the id
/// alone on one line and the `time:` line indented under it when the id is longer than 23
/// characters. Comparisons with an earlier run print an indented `time:` line under `change:`,
/// which names no benchmark.
pub(crate) fn result_ids(stdout: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut previous: Option<String> = None;
    for raw in stdout.lines() {
        let line = strip_ansi(raw);
        let indented = line.starts_with(char::is_whitespace);
        match line.split_once("time:") {
            Some((head, rest)) if rest.trim_start().starts_with('[') => {
                let head = head.trim();
                if !indented && !head.is_empty() {
                    ids.push(head.to_owned());
                } else if head.is_empty() {
                    ids.extend(previous.take());
                }
            }
            _ => {}
        }
        previous = (!indented && !line.trim().is_empty() && !line.contains("time:"))
            .then(|| line.trim().to_owned());
    }
    ids
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), in case criterion colours its output.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The fields of criterion's `benchmark.json` used here.
#[derive(Debug, Clone, Deserialize)]
struct BenchmarkJson {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<Throughput>,
    full_id: String,
    title: String,
}

/// Criterion's declared throughput per iteration.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
enum Throughput {
    Bytes(u64),
    BytesDecimal(u64),
    Elements(u64),
    Bits(u64),
}

/// The fields of criterion's `estimates.json` used here, in ns per iteration.
#[derive(Debug, Clone, Deserialize)]
struct EstimatesJson {
    mean: Estimate,
    slope: Option<Estimate>,
}

#[derive(Debug, Clone, Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Debug, Clone, Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

/// Maps the title and the full id of every benchmark under `home` to its `new` folder.
fn index_benchmarks(home: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut index = HashMap::new();
    let mut pending = vec![home.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = fs::read_dir(&folder)
            .with_context(|| format!("failed to list {}", folder.display()))?;
        for entry in entries {
            let path = entry?.path();
            if !path.is_dir() {
                continue;
            }
            let file = path.join("benchmark.json");
            if path.file_name().is_some_and(|name| name == "new") && file.is_file() {
                let id = read_json::<BenchmarkJson>(&file)?;
                index.insert(id.full_id, path.clone());
                index.insert(id.title, path);
            } else {
                pending.push(path);
            }
        }
    }
    Ok(index)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("invalid criterion file {}", path.display()))
}

/// Reads the result of benchmark `id`, which must have been written after `started`.
fn load_result(
    index: &HashMap<String, PathBuf>,
    id: &str,
    started: SystemTime,
) -> Result<BenchResult> {
    let folder = index
        .get(id)
        .with_context(|| format!("criterion reported `{id}` but wrote no benchmark.json for it"))?;
    let estimates_path = folder.join("estimates.json");
    let modified = fs::metadata(&estimates_path)
        .and_then(|meta| meta.modified())
        .with_context(|| format!("failed to read the time of {}", estimates_path.display()))?;
    // Allow for file systems whose modification times are rounded to whole seconds.
    if modified + Duration::from_secs(2) < started {
        bail!(
            "{} predates this run; another process may share CRITERION_HOME",
            estimates_path.display()
        );
    }
    let benchmark: BenchmarkJson = read_json(&folder.join("benchmark.json"))?;
    let estimates: EstimatesJson = read_json(&estimates_path)?;
    Ok(to_result(benchmark, estimates))
}

fn to_result(benchmark: BenchmarkJson, estimates: EstimatesJson) -> BenchResult {
    let typical = estimates.slope.unwrap_or(estimates.mean);
    let name = match &benchmark.function_id {
        Some(function) => format!("{}/{function}", benchmark.group_id),
        None => benchmark.group_id.clone(),
    };
    let elements = match benchmark.throughput {
        Some(Throughput::Elements(count)) => Some(count),
        _ => None,
    };
    BenchResult {
        name,
        parameter: benchmark.value_str,
        elements,
        typical_ns: typical.point_estimate,
        lower_ns: typical.confidence_interval.lower_bound,
        upper_ns: typical.confidence_interval.upper_bound,
    }
}

/// Builds the markdown of the section: context, commands and the table.
pub(crate) fn section(
    suite: Suite,
    results: &[BenchResult],
    context: &RunContext,
    command: &str,
    cargo_argv: &[String],
) -> String {
    let mut out = context.describe();
    out.push_str(&format!(
        "\n\nCommand: `{command}`, which runs `cargo {}`.\n\n",
        cargo_argv.join(" ")
    ));
    out.push_str(&table(suite, results));
    out
}

/// Formats the summary table, one row per benchmark.
pub(crate) fn table(suite: Suite, results: &[BenchResult]) -> String {
    let (time_header, rate_header) = match suite.per {
        Per::Element(unit, units) => {
            (format!("ns per {unit} [95% CI]"), format!("million {units}/s"))
        }
        Per::Iteration(unit, units) => (format!("ms per {unit} [95% CI]"), format!("{units}/s")),
    };
    let mut out = format!(
        "| benchmark | {} | {time_header} | {rate_header} |\n|---|---:|---:|---:|\n",
        suite.parameter
    );
    for result in results {
        // Times in ns per element give millions per second as 1000 / time, and times in ms
        // per iteration give iterations per second the same way.
        let divisor = match suite.per {
            Per::Element(..) => result.elements.unwrap_or(1) as f64,
            Per::Iteration(..) => 1e6,
        };
        let [typical, lower, upper] =
            [result.typical_ns, result.lower_ns, result.upper_ns].map(|ns| ns / divisor);
        let parameter = result.parameter.as_deref().map_or("-".to_owned(), grouped_text);
        out.push_str(&format!(
            "| {} | {parameter} | {} [{} - {}] | {} |\n",
            result.name,
            significant(typical),
            significant(lower),
            significant(upper),
            significant(1e3 / typical),
        ));
    }
    out
}

/// Groups the digits of an integer parameter; other text is left as it is.
fn grouped_text(text: &str) -> String {
    text.parse::<u64>().map_or_else(|_| text.to_owned(), page::grouped)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STDOUT: &str = "\
Gnuplot not found, using plotters backend
get_hit/1000            time:   [59.113 µs 60.213 µs 61.544 µs]
                        thrpt:  [66.553 Melem/s 68.024 Melem/s 69.290 Melem/s]
                 change:
                        time:   [-2.1% +0.4% +3.0%] (p = 0.80 > 0.05)
                        thrpt:  [-2.9% -0.4% +2.1%]
                        No change in performance detected.
Found 2 outliers among 20 measurements (10.00%)
  2 (10.00%) high mild
try_get_rollback/10000000
                        time:   [1.2 ms 1.3 ms 1.4 ms]
                        thrpt:  [2.9 Melem/s 3.1 Melem/s 3.4 Melem/s]

\u{1b}[32mpool_pass/insert/10000\u{1b}[0m
                        time:   [\u{1b}[2m101.0 µs\u{1b}[0m \u{1b}[1m103.0 µs\u{1b}[0m 105.0 µs]
";

    #[test]
    fn ids_parsed_from_output() {
        assert_eq!(
            result_ids(STDOUT),
            ["get_hit/1000", "try_get_rollback/10000000", "pool_pass/insert/10000"]
        );
    }

    #[test]
    fn lines_without_result_give_no_ids() {
        let stdout = "Found 1 outliers among 10 measurements (10.00%)\n  1 (10.00%) high mild\n\
                      Benchmarking peek/1000: Analyzing\n\n";
        assert!(result_ids(stdout).is_empty());
    }

    #[test]
    fn ansi_codes_removed() {
        assert_eq!(strip_ansi("\u{1b}[1m\u{1b}[32mget_hit\u{1b}[0m/1"), "get_hit/1");
    }

    fn estimates(slope: Option<f64>) -> EstimatesJson {
        let estimate = |value: f64| Estimate {
            point_estimate: value,
            confidence_interval: Interval { lower_bound: value * 0.9, upper_bound: value * 1.1 },
        };
        EstimatesJson { mean: estimate(80_000.0), slope: slope.map(estimate) }
    }

    #[test]
    fn criterion_files_parsed() {
        let benchmark: BenchmarkJson = serde_json::from_str(
            r#"{"group_id":"pool_pass","function_id":"insert","value_str":"10000",
            "throughput":{"Elements":768},"full_id":"pool_pass/insert/10000",
            "directory_name":"pool_pass/insert/10000","title":"pool_pass/insert/10000"}"#,
        )
        .unwrap();
        let estimates: EstimatesJson = serde_json::from_str(
            r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":60167.5,
            "upper_bound":63091.4},"point_estimate":61645.0,"standard_error":749.1},
            "median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,
            "upper_bound":2.0},"point_estimate":1.5,"standard_error":0.1},"slope":null}"#,
        )
        .unwrap();
        let result = to_result(benchmark, estimates);
        assert_eq!(
            result,
            BenchResult {
                name: "pool_pass/insert".to_owned(),
                parameter: Some("10000".to_owned()),
                elements: Some(768),
                typical_ns: 61645.0,
                lower_ns: 60167.5,
                upper_ns: 63091.4,
            }
        );
    }

    #[test]
    fn slope_preferred_over_mean() {
        let benchmark = BenchmarkJson {
            group_id: "peek".to_owned(),
            function_id: None,
            value_str: Some("1000".to_owned()),
            throughput: Some(Throughput::Bytes(10)),
            full_id: "peek/1000".to_owned(),
            title: "peek/1000".to_owned(),
        };
        let result = to_result(benchmark.clone(), estimates(Some(40_960.0)));
        assert_eq!(result.typical_ns, 40_960.0);
        assert_eq!(result.name, "peek");
        assert_eq!(result.elements, None, "only element counts are used");
        assert_eq!(to_result(benchmark, estimates(None)).typical_ns, 80_000.0);
    }

    fn result(name: &str, parameter: &str, elements: u64, ns: f64) -> BenchResult {
        BenchResult {
            name: name.to_owned(),
            parameter: Some(parameter.to_owned()),
            elements: Some(elements),
            typical_ns: ns,
            lower_ns: ns * 0.9,
            upper_ns: ns * 1.1,
        }
    }

    #[test]
    fn lru_table_per_operation() {
        let text = table(LRU, &[result("get_hit", "1000", 4096, 40_960.0)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "| benchmark | capacity | ns per op [95% CI] | million ops/s |");
        assert_eq!(lines[2], "| get_hit | 1 000 | 10.0 [9.00 - 11.0] | 100 |");
    }

    #[test]
    fn pool_table_per_pass() {
        let text = table(POOL, &[result("pool_pass/insert", "1000000", 768, 250_000.0)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "| benchmark | Q | ms per pass [95% CI] | passes/s |");
        assert_eq!(lines[2], "| pool_pass/insert | 1 000 000 | 0.250 [0.225 - 0.275] | 4 000 |");
    }

    #[test]
    fn bench_arguments() {
        let args = CriterionArgs { criterion_args: vec!["--quick".to_owned()] };
        assert_eq!(
            bench_argv(POOL, &args).join(" "),
            "bench -p ffc-pool --bench pool -- --noplot --quick"
        );
    }

    #[test]
    fn results_loaded_from_criterion_home() {
        let home = tempfile::tempdir().unwrap();
        let new = home.path().join("get_hit").join("1000").join("new");
        fs::create_dir_all(&new).unwrap();
        fs::create_dir_all(home.path().join("get_hit").join("1000").join("base")).unwrap();
        fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"get_hit","function_id":null,"value_str":"1000",
            "throughput":{"Elements":4096},"full_id":"get_hit/1000",
            "directory_name":"get_hit/1000","title":"get_hit/1000"}"#,
        )
        .unwrap();
        fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"confidence_interval":{"lower_bound":1.0,"upper_bound":3.0},
            "point_estimate":2.0}, "slope":null}"#,
        )
        .unwrap();

        let index = index_benchmarks(home.path()).unwrap();
        let before = SystemTime::now() - Duration::from_secs(60);
        let loaded = load_result(&index, "get_hit/1000", before).unwrap();
        assert_eq!(loaded.typical_ns, 2.0);
        assert_eq!(loaded.elements, Some(4096));

        let err = load_result(&index, "peek/1000", before).unwrap_err().to_string();
        assert!(err.contains("wrote no benchmark.json"), "{err}");
        let later = SystemTime::now() + Duration::from_secs(60);
        let err = load_result(&index, "get_hit/1000", later).unwrap_err().to_string();
        assert!(err.contains("predates this run"), "{err}");
    }
}
