//! The machine and tree a measurement ran on, for the line above every section: CPU model,
//! logical CPUs, memory, OS, load average, date and commit.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use super::page::significant;

/// The machine, from `/proc` and `/etc/os-release`. Fields that cannot be read are `unknown`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Machine {
    /// `model name` of the first processor in `/proc/cpuinfo`.
    pub(crate) cpu: String,
    /// Logical CPUs as the standard library reports them (affinity and cgroup limits apply).
    pub(crate) logical_cpus: usize,
    /// `MemTotal` of `/proc/meminfo`, in GiB.
    pub(crate) memory_gib: Option<f64>,
    /// `PRETTY_NAME` of `/etc/os-release` and the kernel release.
    pub(crate) os: String,
}

impl Machine {
    /// Reads the description of this machine.
    pub(crate) fn detect() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let os_name = pretty_name(&os_release).unwrap_or_else(|| std::env::consts::OS.to_owned());
        let os = match kernel.trim() {
            "" => os_name,
            release => format!("{os_name}, kernel {release}"),
        };
        Self {
            cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown CPU".to_owned()),
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: mem_total_kib(&meminfo).map(|kib| kib as f64 / 1024.0 / 1024.0),
            os,
        }
    }

    /// One-line description: `CPU, N logical CPUs, M GiB memory, OS`.
    pub(crate) fn describe(&self) -> String {
        let memory = self.memory_gib.map_or("unknown".to_owned(), significant);
        format!(
            "{}, {} logical CPUs, {memory} GiB memory, {}",
            self.cpu, self.logical_cpus, self.os
        )
    }
}

/// When and on what a section was measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunContext {
    /// The machine.
    pub(crate) machine: Machine,
    /// UTC start time, `YYYY-MM-DD HH:MM UTC`.
    pub(crate) started: String,
    /// Short commit id, with a note when the tree has uncommitted changes.
    pub(crate) commit: String,
    /// 1-minute load average when the run started.
    pub(crate) load_at_start: Option<f64>,
    /// 1-minute load average when the run ended.
    pub(crate) load_at_end: Option<f64>,
}

impl RunContext {
    /// Records the machine, the time, the commit and the load at the start of a run. Changes to
    /// `outputs`, the files the bench commands write, do not count as uncommitted changes.
    pub(crate) fn start(root: &Path, outputs: &[&Path]) -> Self {
        Self {
            machine: Machine::detect(),
            started: utc_minutes(SystemTime::now()),
            commit: commit(root, outputs),
            load_at_start: load_average(),
            load_at_end: None,
        }
    }

    /// Records the load at the end of the run.
    pub(crate) fn finish(&mut self) {
        self.load_at_end = load_average();
    }

    /// Formats the paragraph above a section's results.
    pub(crate) fn describe(&self) -> String {
        let load = |value: Option<f64>| value.map_or("unknown".to_owned(), |v| format!("{v:.2}"));
        format!(
            "Measured {} on commit {}. Machine: {}. 1-minute load average: {} at the start, {} \
             at the end.",
            self.started,
            self.commit,
            self.machine.describe(),
            load(self.load_at_start),
            load(self.load_at_end),
        )
    }
}

/// Returns the `model name` of the first processor.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// Returns `MemTotal` in KiB.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    line["MemTotal:".len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Returns `PRETTY_NAME` without its quotes.
fn pretty_name(os_release: &str) -> Option<String> {
    let value = os_release.lines().find_map(|line| line.strip_prefix("PRETTY_NAME="))?;
    Some(value.trim().trim_matches('"').to_owned())
}

/// Returns the 1-minute load average of `/proc/loadavg`.
pub(crate) fn load_average() -> Option<f64> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Returns the short commit id of `HEAD`, marked when the tree differs from it in other files
/// than `outputs`.
fn commit(root: &Path, outputs: &[&Path]) -> String {
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .arg("--no-optional-locks")
            .args(args)
            .current_dir(root)
            .output()
            .ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let Some(id) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown (git failed)".to_owned();
    };
    let changed = git(&["status", "--porcelain"])
        .is_none_or(|status| has_changes_besides(&status, root, outputs));
    let id = id.trim();
    if changed { format!("{id} with uncommitted changes") } else { id.to_owned() }
}

/// Returns whether `git status --porcelain` output lists a path other than `outputs`. Its
/// lines are `XY path`, or `XY old -> new` for renames, with paths relative to `root`.
fn has_changes_besides(status: &str, root: &Path, outputs: &[&Path]) -> bool {
    status.lines().filter(|line| line.len() > 3).any(|line| {
        let path = line[3..].rsplit(" -> ").next().unwrap_or_default().trim_matches('"');
        !outputs.iter().any(|output| root.join(path) == *output)
    })
}

/// Formats a time as `YYYY-MM-DD HH:MM UTC`.
fn utc_minutes(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let minute_of_day = seconds % 86_400 / 60;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", minute_of_day / 60, minute_of_day % 60)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian `(year, month, day)`, by Howard
/// Hinnant's `civil_from_days` algorithm (eras of 400 years starting on March 1st).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn cpu_model_of_first_processor() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) \
                       CPU @ 2.20GHz\n\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("Intel(R) Xeon(R) CPU @ 2.20GHz"));
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }

    #[test]
    fn meminfo_total() {
        let meminfo = "MemTotal:       24609332 kB\nMemFree:        17000000 kB\n";
        assert_eq!(mem_total_kib(meminfo), Some(24_609_332));
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn os_release_pretty_name() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(pretty_name(text).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn output_files_are_not_changes() {
        let root = Path::new("/repo");
        let page = Path::new("/repo/docs/benchmarks.md");
        let plot = Path::new("/repo/docs/bench_head.png");
        let status = " M docs/benchmarks.md\n?? docs/bench_head.png\n";
        assert!(!has_changes_besides(status, root, &[page, plot]));
        assert!(!has_changes_besides("", root, &[page]));
        assert!(has_changes_besides(status, root, &[page]));
        assert!(has_changes_besides(" M xtask/src/main.rs\n", root, &[page, plot]));
        assert!(has_changes_besides("R  a.md -> docs/x.md\n", root, &[page]));
        assert!(!has_changes_besides("R  a.md -> docs/benchmarks.md\n", root, &[page]));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_426), (2025, 12, 4));
    }

    #[test]
    fn utc_formatting() {
        let time = UNIX_EPOCH + Duration::from_secs(20_426 * 86_400 + 17 * 3600 + 5 * 60 + 59);
        assert_eq!(utc_minutes(time), "2025-12-04 17:05 UTC");
    }

    #[test]
    fn description_names_every_field() {
        let machine = Machine {
            cpu: "Some CPU".to_owned(),
            logical_cpus: 2,
            memory_gib: Some(23.47),
            os: "Debian GNU/Linux 12 (bookworm), kernel 6.1.0".to_owned(),
        };
        assert_eq!(
            machine.describe(),
            "Some CPU, 2 logical CPUs, 23.5 GiB memory, Debian GNU/Linux 12 (bookworm), kernel 6.1.0"
        );
        let context = RunContext {
            machine,
            started: "2025-12-04 17:05 UTC".to_owned(),
            commit: "abc123".to_owned(),
            load_at_start: Some(2.5),
            load_at_end: None,
        };
        let text = context.describe();
        assert!(text.starts_with("Measured 2025-12-04 17:05 UTC on commit abc123."), "{text}");
        assert!(text.ends_with("2.50 at the start, unknown at the end."), "{text}");
    }
}
