//! Developer entry points for the ffc workspace, following the cargo-xtask convention: the
//! `xtask` alias in `.cargo/config.toml` expands `cargo xtask <command>` to
//! `cargo run --package xtask -- <command>`, so the commands need nothing installed beyond cargo.
//!
//! Commands:
//!
//! - `cargo xtask train`: downloads the AT&T/ORL faces if they are not cached yet, builds the
//!   `ffc` trainer in release mode and trains it on them with `configs/orl.toml`.
//! - `cargo xtask bench head|lru|pool|train`: runs a benchmark and writes its results into its
//!   section of `docs/benchmarks.md`.
//!
//! Downloads are cached in `$FFC_CACHE_DIR` if set, else `$XDG_CACHE_HOME/ffc`, else
//! `$HOME/.cache/ffc`.

mod bench;
mod cargo;
mod orl;
mod paths;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer commands for the ffc workspace.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train ffc on the AT&T/ORL faces, downloading them on first use.
    #[command(after_help = train::AFTER_HELP)]
    Train(train::TrainArgs),
    /// Run a benchmark and write its results into docs/benchmarks.md.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Bench(args) => bench::run(args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::FAILURE
    })
}
