//! Calls into cargo shared by the commands: building a release binary and finding the target
//! folder.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Returns the cargo executable that runs us (`$CARGO`), or `cargo` from the `PATH`.
pub(crate) fn cargo_command() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs `cargo build --release -p <package> --bin <bin>` with the given features in `root` and
/// returns the path of the executable.
///
/// Cargo's JSON messages name the executable, so a custom target folder (`CARGO_TARGET_DIR` or
/// `build.target-dir`) is found as well as the default `target/release/<bin>`.
pub(crate) fn build_release_binary(
    root: &Path,
    package: &str,
    bin: &str,
    features: &[&str],
) -> Result<PathBuf> {
    let mut build_args = vec!["build", "--release", "-p", package, "--bin", bin];
    let joined_features = features.join(",");
    if !features.is_empty() {
        build_args.extend(["--features", &joined_features]);
    }
    eprintln!("xtask: cargo {}", build_args.join(" "));

    let cargo = cargo_command();
    let output = Command::new(&cargo)
        .args(&build_args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to run {}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        bail!("`cargo {}` failed with {}", build_args.join(" "), output.status);
    }
    find_executable(&String::from_utf8_lossy(&output.stdout), bin)
}

/// Returns the target folder of the workspace at `root`, as `cargo metadata` reports it.
pub(crate) fn target_directory(root: &Path) -> Result<PathBuf> {
    #[derive(Deserialize)]
    struct Metadata {
        target_directory: PathBuf,
    }

    let cargo = cargo_command();
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to run {}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        bail!("`cargo metadata` failed with {}", output.status);
    }
    let metadata: Metadata = serde_json::from_slice(&output.stdout)
        .context("`cargo metadata` printed no target_directory")?;
    Ok(metadata.target_directory)
}

/// The fields of a cargo JSON message that locate a built executable.
#[derive(Debug, Deserialize)]
struct CargoMessage {
    reason: String,
    target: Option<CargoTarget>,
    executable: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct CargoTarget {
    name: String,
    kind: Vec<String>,
}

/// Returns the executable of binary target `name` from cargo's JSON message lines.
fn find_executable(messages: &str, name: &str) -> Result<PathBuf> {
    let found = messages
        .lines()
        .filter_map(|line| serde_json::from_str::<CargoMessage>(line).ok())
        .filter(|m| m.reason == "compiler-artifact")
        .filter(|m| {
            m.target.as_ref().is_some_and(|t| t.name == name && t.kind.iter().any(|k| k == "bin"))
        })
        .find_map(|m| m.executable);
    found.with_context(|| format!("cargo reported no executable for the `{name}` binary"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_found_in_cargo_messages() {
        let messages = [
            r#"{"reason":"compiler-artifact","target":{"name":"ffc_train","kind":["lib"]},"#,
            r#""executable":null}"#,
            "\nnot json at all\n",
            r#"{"reason":"compiler-artifact","target":{"name":"ffc","kind":["bin"]},"#,
            r#""executable":"/t/release/ffc"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .concat();
        assert_eq!(find_executable(&messages, "ffc").unwrap(), PathBuf::from("/t/release/ffc"));
    }

    #[test]
    fn executable_matches_whole_name() {
        let messages = [
            r#"{"reason":"compiler-artifact","target":{"name":"ffc","kind":["bin"]},"#,
            r#""executable":"/t/release/ffc"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"ffc-bench","kind":["bin"]},"#,
            r#""executable":"/t/release/ffc-bench"}"#,
        ]
        .concat();
        let found = find_executable(&messages, "ffc-bench").unwrap();
        assert_eq!(found, PathBuf::from("/t/release/ffc-bench"));
    }

    #[test]
    fn missing_executable_is_an_error() {
        let messages = r#"{"reason":"build-finished","success":true}"#;
        let err = find_executable(messages, "ffc").unwrap_err().to_string();
        assert!(err.contains("no executable for the `ffc` binary"), "{err}");
    }

    #[test]
    fn workspace_target_directory() {
        let root = crate::paths::workspace_root();
        let target = target_directory(&root).unwrap();
        assert!(target.is_absolute(), "{}", target.display());
    }
}
