//! `seqit train`: LoRA or full fine-tuning on a dataset, with settings from flags and a
//! config file (`seqit_train::TrainSettings`), per-step progress lines and a summary.

use std::time::Instant;

use anyhow::Result;
use seqit_train::{run_training, TrainSettings};

use crate::printer::{detail, note, Printer};

pub fn run(settings: TrainSettings) -> Result<()> {
    let job = settings.with_config_file()?.job(&Printer::new())?;
    detail(format!("resolved settings: {:?}", job.config));
    let started = Instant::now();
    let summary = run_training(&job, &mut |m, total| {
        let eval = m
            .eval_loss
            .map(|l| format!("  eval-loss {l:.4}"))
            .unwrap_or_default();
        note(format!(
            "step {}/{total}  loss {:.4}  lr {:.2e}  grad-norm {:.3}  {:.0} tokens/s{eval}",
            m.step, m.loss, m.lr, m.grad_norm, m.tokens_per_second
        ));
    })?;
    if summary.skipped_without_labels > 0 {
        note(format!(
            "skipped {} examples that had no assistant token within --max-len {}",
            summary.skipped_without_labels, job.config.max_len
        ));
    }
    note(format!(
        "trained {} updates on {} examples in {:.1}s; model written to {}",
        summary.updates,
        summary.examples,
        started.elapsed().as_secs_f64(),
        summary.model_dir.display()
    ));
    if let Some(adapter) = &summary.adapter_dir {
        note(format!(
            "LoRA adapter (PEFT layout) written to {}",
            adapter.display()
        ));
    }
    Ok(())
}
