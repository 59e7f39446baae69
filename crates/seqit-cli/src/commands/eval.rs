//! `seqit eval <benchmark>`: each benchmark's settings are `seqit_eval::run`'s, which
//! answers (and judges) it and writes its files; its result lines are printed here.

use anyhow::Result;
use seqit_eval::run::{
    alpacaeval, gsm8k, humaneval, mgsm, mtbench, seqeval, vqa, xquad, EvalCommand, Outcome,
};

use crate::printer::{result, Printer};

pub fn run(command: EvalCommand) -> Result<()> {
    let progress = &Printer::new();
    let outcome = match command {
        EvalCommand::Humaneval(settings) => humaneval::run(&settings, progress),
        EvalCommand::Vqa(settings) => vqa::run(&settings, progress),
        EvalCommand::Gsm8k(settings) => gsm8k::run(&settings, progress),
        EvalCommand::Mgsm(settings) => mgsm::run(&settings, progress),
        EvalCommand::Xquad(settings) => xquad::run(&settings, progress),
        EvalCommand::Seqeval(settings) => seqeval::run(&settings, progress),
        EvalCommand::Alpacaeval(settings) => alpacaeval::run(&settings, progress),
        EvalCommand::Mtbench(settings) => mtbench::run(&settings, progress),
    };
    let Outcome { lines, .. } = outcome?;
    lines.into_iter().for_each(result);
    Ok(())
}
