//! `seqit eval gsm8k|mgsm|xquad|seqeval|alpacaeval|mtbench`: the flags become a
//! `seqit_eval::run` job, which answers (and judges) the benchmark and writes its files;
//! its result lines are printed here.

use std::path::Path;

use anyhow::{Context, Result};
use seqit_eval::run::alpacaeval::{self, AlpacaevalJob};
use seqit_eval::run::gsm8k::{self, Gsm8kJob};
use seqit_eval::run::mgsm::{self, MgsmJob};
use seqit_eval::run::mtbench::{self, MtbenchJob};
use seqit_eval::run::seqeval::{self, SeqevalJob};
use seqit_eval::run::xquad::{self, XquadJob};
use seqit_eval::run::{JudgeSpec, ModelSpec, Outcome, OutputSpec, SubjectSpec};
use seqit_eval::tasks::mgsm::PromptStyle;

use crate::cli::{
    AlpacaevalArgs, AnswererArgs, EndpointCacheArgs, Gsm8kArgs, JudgeArgs, MgsmArgs, MgsmStyleArg,
    MtbenchArgs, SeqevalArgs, XquadArgs,
};
use crate::commands::Switch;
use crate::printer::{result, Printer};

/// Prints the result lines of a finished job, or passes its error on.
pub(super) fn show(outcome: Result<Outcome>) -> Result<()> {
    outcome?.lines.into_iter().for_each(result);
    Ok(())
}

/// Where a job writes, from its output and cache flags.
pub(super) fn output(
    dir: &Path,
    cache: Option<&Path>,
    no_cache: bool,
    endpoint_cache: &EndpointCacheArgs,
) -> OutputSpec {
    OutputSpec {
        dir: dir.to_path_buf(),
        cache: cache.map(Path::to_path_buf),
        no_cache,
        share_cache_across_endpoints: endpoint_cache.share_cache_across_endpoints,
        max_response_bytes: endpoint_cache.max_response_bytes,
    }
}

/// The model under test and where it writes, from the flags every answered benchmark
/// shares.
pub(super) fn subject(args: &AnswererArgs) -> SubjectSpec {
    SubjectSpec {
        model: ModelSpec {
            endpoint: args.endpoint.clone(),
            model: args.model.clone(),
            api_key_env: args.api_key_env.clone(),
            concurrency: args.concurrency,
        },
        raw: args.raw,
        output: output(
            &args.output,
            args.cache.as_deref(),
            false,
            &args.endpoint_cache,
        ),
    }
}

fn judge(args: JudgeArgs) -> JudgeSpec {
    JudgeSpec {
        endpoint: args.judge_endpoint,
        model: args.judge_model,
        api_key_env: args.judge_api_key_env,
        concurrency: args.judge_concurrency,
        max_tokens: args.judge_max_tokens,
        structured: args.judge_structured == Switch::On,
        prompts: args.judge_prompts,
        self_judge: args.self_judge,
    }
}

pub fn gsm8k(args: Gsm8kArgs) -> Result<()> {
    let job = Gsm8kJob {
        data: args.data,
        limit: args.answerer.limit,
        max_tokens: args.max_tokens,
        prompts: args.prompts,
    };
    show(gsm8k::run(&job, &subject(&args.answerer), &Printer::new()))
}

pub fn mgsm(args: MgsmArgs) -> Result<()> {
    let job = MgsmJob {
        data: args.data,
        style: match args.style {
            MgsmStyleArg::Cot => PromptStyle::Cot,
            MgsmStyleArg::TranslateCot => PromptStyle::TranslateCot,
        },
        limit: args.answerer.limit,
        max_tokens: args.max_tokens,
        prompts: args.prompts,
        exemplars: args.exemplars,
    };
    show(mgsm::run(&job, &subject(&args.answerer), &Printer::new()))
}

pub fn xquad(args: XquadArgs) -> Result<()> {
    let job = XquadJob {
        data: args.data,
        english: args.english,
        limit: args.answerer.limit,
        max_tokens: args.max_tokens,
        prompts: args.prompts,
    };
    show(xquad::run(&job, &subject(&args.answerer), &Printer::new()))
}

pub fn seqeval(args: SeqevalArgs) -> Result<()> {
    let job = SeqevalJob {
        data: args.data,
        limit: args.answerer.limit,
        max_tokens: args.max_tokens,
        judge: judge(args.judge),
        reference: args.reference,
        verifiable_only: args.verifiable_only,
    };
    show(seqeval::run(
        &job,
        &subject(&args.answerer),
        &Printer::new(),
    ))
}

pub fn alpacaeval(args: AlpacaevalArgs) -> Result<()> {
    let job = AlpacaevalJob {
        outputs: args.outputs,
        reference: args.reference,
        limit: args.limit,
        judge: judge(args.judge),
        api_key_env: args.api_key_env,
        concurrency: args.concurrency,
        output: output(
            &args.output,
            args.cache.as_deref(),
            false,
            &args.endpoint_cache,
        ),
    };
    show(alpacaeval::run(&job, &Printer::new()))
}

pub fn mtbench(args: MtbenchArgs) -> Result<()> {
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => seqit_engine::assets_dir()
            .context("cannot find the packaged MT-Bench data\nhint: run `scripts/setup --assets-only` or pass `--data-dir DIR`")?
            .join(seqit_eval::mtbench::PACKAGED_DATA),
    };
    let job = MtbenchJob {
        data_dir,
        reference: args.reference,
        limit: args.answerer.limit,
        max_tokens: args.max_tokens,
        judge: judge(args.judge),
    };
    show(mtbench::run(
        &job,
        &subject(&args.answerer),
        &Printer::new(),
    ))
}
