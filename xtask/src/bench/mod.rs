//! `cargo xtask bench`: run the benchmarks and write their results into `docs/benchmarks.md`.
//!
//! Each subcommand rewrites only its own marked section of the page (see [`page`]), so the
//! sections can be refreshed one at a time and the hand-written text around them stays.

mod criterion;
mod head;
mod machine;
mod page;
mod plot;
mod train;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::paths;

/// Page written by default, relative to the workspace root.
const DEFAULT_PAGE: &str = "docs/benchmarks.md";

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// Markdown page to update [default: docs/benchmarks.md in the workspace root]. The head
    /// plot is written beside it.
    #[arg(long, global = true, value_name = "FILE")]
    page: Option<PathBuf>,

    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum BenchCommand {
    /// Time the classifier head step and its peak memory against N, FFC against a full FC.
    Head(head::HeadArgs),
    /// Run the ffc-lru criterion benchmarks.
    Lru(criterion::CriterionArgs),
    /// Run the ffc-pool criterion benchmarks.
    Pool(criterion::CriterionArgs),
    /// Measure images per second of full FFC training steps.
    Train(train::TrainBenchArgs),
}

/// Runs the chosen benchmark and updates the page.
pub(crate) fn run(args: BenchArgs) -> Result<()> {
    let page = match args.page {
        Some(path) => std::path::absolute(&path)
            .with_context(|| format!("failed to resolve {}", path.display()))?,
        None => paths::workspace_root().join(DEFAULT_PAGE),
    };
    match &args.command {
        BenchCommand::Head(head_args) => head::run(head_args, &page),
        BenchCommand::Lru(criterion_args) => criterion::run(criterion::LRU, criterion_args, &page),
        BenchCommand::Pool(criterion_args) => {
            criterion::run(criterion::POOL, criterion_args, &page)
        }
        BenchCommand::Train(train_args) => train::run(train_args, &page),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn head_defaults() {
        let parsed = Wrapper::try_parse_from(["bench", "head"]).unwrap();
        let BenchCommand::Head(head) = parsed.args.command else { panic!("not head") };
        let text = format!("{head:?}");
        assert!(text.contains("ids: [10000, 100000, 1000000, 10000000]"), "{text}");
        assert!(text.contains("queue_size: 10000"), "{text}");
        assert!(text.contains("ratio_queue_sizes: [100000, 1000000]"), "{text}");
    }

    #[test]
    fn page_option_after_subcommand() {
        let parsed =
            Wrapper::try_parse_from(["bench", "lru", "--page", "/tmp/b.md", "--", "--quick"])
                .unwrap();
        assert_eq!(parsed.args.page, Some(PathBuf::from("/tmp/b.md")));
        let BenchCommand::Lru(lru) = parsed.args.command else { panic!("not lru") };
        assert_eq!(format!("{lru:?}"), r#"CriterionArgs { criterion_args: ["--quick"] }"#);
    }

    #[test]
    fn unknown_network_rejected() {
        assert!(Wrapper::try_parse_from(["bench", "train", "--network", "r18"]).is_err());
        assert!(Wrapper::try_parse_from(["bench", "train", "--network", "iresnet50"]).is_ok());
    }

    #[test]
    fn empty_ratio_list_accepted() {
        let parsed =
            Wrapper::try_parse_from(["bench", "head", "--ratio-queue-sizes", "--steps", "2"])
                .unwrap();
        let BenchCommand::Head(head) = parsed.args.command else { panic!("not head") };
        assert!(format!("{head:?}").contains("ratio_queue_sizes: []"), "{head:?}");
    }
}
