//! `seqit augment`: Seq-Instruct over a dataset (classify, rewrite, regenerate,
//! iterate) with the IT control, or verified answers to program-checked chains
//! (`--verify`); the job is `seqit_augment::augment`. Also the runtime and the
//! progress display that `seqit seqeval build` shares.

use std::sync::Arc;

use anyhow::{Context, Result};
use seqit_augment::{AugmentOptions, Teacher};

use crate::printer::{note, Printer};

/// A one-thread async runtime: the work is waiting on the teacher.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(options: AugmentOptions) -> Result<()> {
    let job = options.job()?;
    let report = runtime()?.block_on(seqit_augment::augment(&job, printer_for))?;
    note(report.summary(&job.paths));
    Ok(())
}

/// The printer, with the teacher's generated tokens as its token rate.
pub fn printer_for(teacher: &Teacher) -> Printer {
    let ledger = teacher.client().ledger().clone();
    Printer::new().with_tokens(Arc::new(move || {
        ledger.tallies().values().map(|t| t.completion_tokens).sum()
    }))
}
