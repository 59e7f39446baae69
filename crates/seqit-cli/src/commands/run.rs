//! `seqit run CONFIG.toml`: the whole experiment, stage by stage, resuming what is done.

use anyhow::{Context, Result};
use seqit_run::runner::human_seconds;
use seqit_run::Decision;

use crate::cli::RunArgs;

pub fn run(args: RunArgs) -> Result<()> {
    let experiment = seqit_run::load(&args.config, args.output.as_deref())?;
    let options = seqit_run::Options {
        dry_run: args.dry_run,
        only: args.only,
        from: args.from,
        exe: std::env::current_exe().context("cannot find the seqit binary to run stages with")?,
    };
    let mut err = std::io::stderr();
    let summary = seqit_run::run(&experiment, &options, &mut err)?;
    if args.dry_run {
        return Ok(());
    }
    let ran = summary
        .stages
        .iter()
        .filter(|s| matches!(s.decision, Decision::Run(_) | Decision::Resume))
        .count();
    eprintln!(
        "finished in {}: {ran} stage(s) run, {} skipped; {} training tokens",
        human_seconds(summary.seconds),
        summary.stages.len() - ran,
        summary.train_tokens
    );
    if let Some(report) = summary.report {
        eprintln!("report: {}", report.display());
    }
    Ok(())
}
