//! `cargo xtask bench train`: images per second of full FFC training steps on synthetic images.
//!
//! Each run adds or replaces one row of the page's table, keyed by network, batch size and
//! device, so that several configurations can stand side by side. The rows are also kept as
//! JSON in a comment inside the section, and the next run reads them back from there. Rows
//! measured on a different machine are dropped.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::head::{last_json_line, run_bench};
use super::machine::RunContext;
use super::page::{self, significant};
use crate::{cargo, paths};

/// Section of the page that this command rewrites.
const SECTION: &str = "train";

/// Opening of the comment that contains the rows as JSON.
const ROWS_COMMENT: &str = "<!-- bench:train:rows";

/// Options of `cargo xtask bench train`.
#[derive(Debug, Clone, Args)]
pub(crate) struct TrainBenchArgs {
    /// Backbone.
    #[arg(long, default_value = "mobilefacenet", value_parser = ["mobilefacenet", "iresnet50"])]
    network: String,

    /// Identities per step. Each view contains 1.5 times as many images.
    #[arg(long, default_value_t = 16, value_name = "B")]
    batch_size: u32,

    /// Device: cpu, wgpu[:N] or cuda[:N]. wgpu and cuda build ffc-bench with that feature.
    #[arg(long, default_value = "cpu", value_name = "D")]
    device: String,

    /// Timed steps; the median is reported.
    #[arg(long, default_value_t = 3, value_name = "S")]
    steps: u32,

    /// Untimed steps before the timed ones.
    #[arg(long, default_value_t = 1, value_name = "W")]
    warmup: u32,
}

/// The JSON line of `ffc-bench train`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct TrainRecord {
    network: String,
    batch_size: u32,
    device: String,
    threads: u32,
    images_per_step: u32,
    step_seconds: f64,
    images_per_second: f64,
}

/// One row of the table, with where and when it was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TrainRow {
    /// Backbone, as requested.
    pub(crate) network: String,
    /// Identities per step.
    pub(crate) batch_size: u32,
    /// Device, as requested.
    pub(crate) device: String,
    /// Device, as the backend names it.
    pub(crate) backend_device: String,
    /// Logical CPUs that ffc-bench reported.
    pub(crate) threads: u32,
    /// Images through the backbone per step, both views.
    pub(crate) images_per_step: u32,
    /// Median step time in seconds.
    pub(crate) step_seconds: f64,
    /// Images per second at the median step time.
    pub(crate) images_per_second: f64,
    /// Start time of the run.
    pub(crate) measured: String,
    /// Commit of the tree.
    pub(crate) commit: String,
    /// 1-minute load average at the start and at the end, formatted.
    pub(crate) load: String,
    /// Description of the machine.
    pub(crate) machine: String,
    /// The command that produced the row.
    pub(crate) command: String,
}

impl TrainRow {
    fn same_configuration(&self, other: &Self) -> bool {
        self.network == other.network
            && self.batch_size == other.batch_size
            && self.device == other.device
    }
}

/// Runs one measurement, prints it and records it in the page.
pub(crate) fn run(args: &TrainBenchArgs, page_path: &Path) -> Result<()> {
    if args.batch_size < 2 || args.steps == 0 {
        bail!("--batch-size must be at least 2 and --steps at least 1");
    }
    let root = paths::workspace_root();
    let features = device_features(&args.device);
    let bench = cargo::build_release_binary(&root, "ffc-train", "ffc-bench", &features)?;
    let mut context = RunContext::start(&root, &[page_path]);
    let stdout = run_bench(&bench, &bench_argv(args))?;
    context.finish();

    let record = parse_record(&stdout)?;
    let row = to_row(args, record, &context);
    println!(
        "{} batch {} on {} ({}, {} threads): {} images/s, {} s per step of {} images",
        row.network,
        row.batch_size,
        row.device,
        row.backend_device,
        row.threads,
        significant(row.images_per_second),
        significant(row.step_seconds),
        row.images_per_step
    );

    let page_text = page::read_page(page_path)?;
    let old_rows = match page::section_body(&page_text, SECTION)? {
        Some(body) => read_rows(body)?,
        None => Vec::new(),
    };
    let rows = merge_rows(old_rows, row);
    page::update_section(page_path, SECTION, &section(&rows)?)
}

/// Cargo features that compile in the backend of `device`.
fn device_features(device: &str) -> Vec<&'static str> {
    match device.split(':').next() {
        Some("wgpu") => vec!["wgpu"],
        Some("cuda") => vec!["cuda"],
        _ => Vec::new(),
    }
}

fn bench_argv(args: &TrainBenchArgs) -> Vec<String> {
    [
        "train",
        "--network",
        &args.network,
        "--batch-size",
        &args.batch_size.to_string(),
        "--device",
        &args.device,
        "--steps",
        &args.steps.to_string(),
        "--warmup",
        &args.warmup.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn parse_record(stdout: &str) -> Result<TrainRecord> {
    let line = last_json_line(stdout)?;
    serde_json::from_str(line).with_context(|| format!("invalid ffc-bench train line: {line}"))
}

fn to_row(args: &TrainBenchArgs, record: TrainRecord, context: &RunContext) -> TrainRow {
    let load = |value: Option<f64>| value.map_or("unknown".to_owned(), |v| format!("{v:.2}"));
    TrainRow {
        network: args.network.clone(),
        batch_size: record.batch_size,
        device: args.device.clone(),
        backend_device: record.device,
        threads: record.threads,
        images_per_step: record.images_per_step,
        step_seconds: record.step_seconds,
        images_per_second: record.images_per_second,
        measured: context.started.clone(),
        commit: context.commit.clone(),
        load: format!("{} / {}", load(context.load_at_start), load(context.load_at_end)),
        machine: context.machine.describe(),
        command: format!(
            "cargo xtask bench train --network {} --batch-size {} --device {} --steps {} \
             --warmup {}",
            args.network, args.batch_size, args.device, args.steps, args.warmup
        ),
    }
}

/// Reads the rows kept in the section's JSON comment; a section without one has no rows.
fn read_rows(body: &str) -> Result<Vec<TrainRow>> {
    let Some(start) = body.find(ROWS_COMMENT) else {
        return Ok(Vec::new());
    };
    let json_start = start + ROWS_COMMENT.len();
    let length = body[json_start..]
        .find("-->")
        .context("the train section's rows comment has no closing `-->`; delete the comment")?;
    serde_json::from_str(&body[json_start..json_start + length])
        .context("invalid rows in the train section's comment; delete the comment to start over")
}

/// Replaces the row of the same configuration, drops rows from other machines and sorts.
fn merge_rows(old: Vec<TrainRow>, new: TrainRow) -> Vec<TrainRow> {
    let mut rows: Vec<TrainRow> = old
        .into_iter()
        .filter(|row| {
            let keep = row.machine == new.machine;
            if !keep {
                eprintln!("xtask: dropped a row measured on another machine: {}", row.command);
            }
            keep && !row.same_configuration(&new)
        })
        .collect();
    rows.push(new);
    rows.sort_by(|a, b| {
        (&a.device, &a.network, a.batch_size).cmp(&(&b.device, &b.network, b.batch_size))
    });
    rows
}

/// Builds the markdown of the section: the machine, the table and the rows as JSON.
fn section(rows: &[TrainRow]) -> Result<String> {
    let machine = rows.first().map_or("unknown", |row| row.machine.as_str());
    let mut out = format!(
        "Machine: {machine}. Images per step count both views. A step runs four backbone \
         forwards (the probe and the gallery network on each view), the FFC head, one backward \
         pass through both probe forwards and the optimizer update.\n\n"
    );
    out.push_str("| network | batch size | images per step | device | threads | step (s) | images/s | measured | commit | load at start / end | command |\n");
    out.push_str("|---|---:|---:|---|---:|---:|---:|---|---|---|---|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | `{}` |\n",
            row.network,
            row.batch_size,
            row.images_per_step,
            row.device,
            row.backend_device,
            row.threads,
            significant(row.step_seconds),
            significant(row.images_per_second),
            row.measured,
            row.commit,
            row.load,
            row.command
        ));
    }
    let json = serde_json::to_string_pretty(rows)?;
    out.push_str(&format!("\n{ROWS_COMMENT}\n{json}\n-->\n"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"batch_size":16,"device":"Cpu","images_per_second":6.5,"images_per_step":48,"network":"mbf","note":"images per step count both views","step_seconds":7.38,"threads":2}"#;

    fn row(network: &str, batch_size: u32, machine: &str) -> TrainRow {
        TrainRow {
            network: network.to_owned(),
            batch_size,
            device: "cpu".to_owned(),
            backend_device: "Cpu".to_owned(),
            threads: 2,
            images_per_step: 3 * batch_size,
            step_seconds: 7.38,
            images_per_second: 6.5,
            measured: "2025-12-04 17:05 UTC".to_owned(),
            commit: "abc".to_owned(),
            load: "1.00 / 2.00".to_owned(),
            machine: machine.to_owned(),
            command: format!("cargo xtask bench train --network {network}"),
        }
    }

    #[test]
    fn record_parsed() {
        let record = parse_record(&format!("loading\n{LINE}\n")).unwrap();
        assert_eq!(
            record,
            TrainRecord {
                network: "mbf".to_owned(),
                batch_size: 16,
                device: "Cpu".to_owned(),
                threads: 2,
                images_per_step: 48,
                step_seconds: 7.38,
                images_per_second: 6.5,
            }
        );
        assert!(parse_record(r#"{"network":"mbf"}"#).is_err());
    }

    #[test]
    fn rows_survive_the_page() {
        let rows = vec![row("iresnet50", 4, "m"), row("mobilefacenet", 16, "m")];
        let body = section(&rows).unwrap();
        assert!(
            body.contains("| mobilefacenet | 16 | 48 | cpu (Cpu) | 2 | 7.38 | 6.50 |"),
            "{body}"
        );
        let page = page::replace_section("# Benchmarks\n", SECTION, &body).unwrap();
        let back = read_rows(page::section_body(&page, SECTION).unwrap().unwrap()).unwrap();
        assert_eq!(back, rows);
    }

    #[test]
    fn merge_replaces_same_configuration() {
        let mut newer = row("mobilefacenet", 16, "m");
        newer.images_per_second = 9.0;
        let rows = merge_rows(vec![row("mobilefacenet", 16, "m"), row("iresnet50", 4, "m")], newer);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].network, "iresnet50");
        assert_eq!(rows[1].images_per_second, 9.0);
    }

    #[test]
    fn merge_drops_other_machines() {
        let rows = merge_rows(vec![row("iresnet50", 4, "old")], row("mobilefacenet", 16, "new"));
        assert_eq!(rows, [row("mobilefacenet", 16, "new")]);
    }

    #[test]
    fn section_without_rows_comment() {
        assert_eq!(read_rows("\nhand-written text\n").unwrap(), []);
        let err = read_rows("<!-- bench:train:rows [").unwrap_err().to_string();
        assert!(err.contains("no closing"), "{err}");
        let err = read_rows("<!-- bench:train:rows [1] -->").unwrap_err().to_string();
        assert!(err.contains("invalid rows"), "{err}");
    }

    #[test]
    fn features_follow_device() {
        assert!(device_features("cpu").is_empty());
        assert_eq!(device_features("wgpu"), ["wgpu"]);
        assert_eq!(device_features("cuda:1"), ["cuda"]);
    }
}
