//! The jobs behind `seqit augment`, `seqit seqeval build` and `seqit seqeval synth`:
//! plain settings in, what was done out. Each checks its settings and reads its input
//! before the teacher is opened (so a mistake costs no model load), runs the pipeline
//! and returns the summaries for the caller to show. Messages go to the caller's
//! [`Progress`], made once the teacher is open so that it can watch the teacher's
//! tokens; nothing is printed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use seqit_data::Schema;
use seqit_verify::{SynthSettings, Templates};

use crate::augment::{read_records, AugmentPaths, AugmentSettings, Augmenter};
use crate::prompts::{PromptSet, Stage};
use crate::seqeval::{SeqEvalBuilder, SeqEvalSettings, SeqEvalStats};
use crate::teacher::{Teacher, TeacherSettings};
use crate::verified::{VerifiedAugmenter, VerifySettings};
use seqit_core::progress::Progress;

/// One `seqit augment` run.
#[derive(Debug, Clone)]
pub struct AugmentJob {
    /// The data to augment; with `verify`, chains made by `seqit seqeval synth`.
    pub input: PathBuf,
    /// The input's format when it cannot be detected.
    pub input_format: Option<Schema>,
    /// Where to write; the schema must be Alpaca, `messages` or ShareGPT.
    pub paths: AugmentPaths,
    /// The Seq-Instruct settings; with `verify` only the seed and decoding count.
    pub settings: AugmentSettings,
    /// Verified answers instead of Seq-Instruct: up to this many seeded tries per
    /// chain, the first that passes every step kept.
    pub verify: Option<u32>,
    /// The teacher and its prompts.
    pub teacher: TeacherSettings,
}

/// What an augment run did.
#[derive(Debug, Clone)]
pub struct AugmentReport {
    /// The run's statistics as a table (they are also in `paths.stats()`, as JSON).
    pub stats: String,
    /// The teacher's token use, and its cost when prices were given.
    pub usage: String,
    /// Items finished by an earlier run and reused.
    pub resumed: usize,
}

impl AugmentReport {
    /// The statistics, the teacher's usage, and what was written where (`paths`).
    pub fn summary(&self, paths: &AugmentPaths) -> String {
        let it = paths
            .it_output
            .as_ref()
            .map(|p| format!(", {}", p.display()));
        format!(
            "{}\n{}\nwrote {}{} and {} ({} items reused from an earlier run)",
            self.stats,
            self.usage,
            paths.output.display(),
            it.unwrap_or_default(),
            paths.stats().display(),
            self.resumed
        )
    }
}

/// Runs `seqit augment`: the Seq-Instruct pipeline ([`Augmenter`]) or, with
/// `job.verify`, verified answers ([`VerifiedAugmenter`]). `progress` makes the
/// progress display once the teacher is open.
pub async fn augment<P: Progress>(
    job: &AugmentJob,
    progress: impl FnOnce(&Teacher) -> P,
) -> Result<AugmentReport> {
    let paths = &job.paths;
    if !matches!(
        paths.schema,
        Schema::Alpaca | Schema::Messages | Schema::ShareGpt
    ) {
        bail!(
            "`--format {}` cannot hold augmented data\nhint: use alpaca, messages or sharegpt",
            paths.schema
        );
    }
    if paths.it_output.as_deref() == Some(paths.output.as_path()) {
        bail!("`--it-output` and `--output` are the same file");
    }
    let prompts = job.teacher.prompt_set()?;
    if let Some(tries) = job.verify {
        return augment_verified(job, &prompts, tries, progress).await;
    }
    if job.settings.iterations == 0 {
        bail!("`--iterations` must be at least 1");
    }
    let (schema, records) = read_records(&job.input, job.input_format)?;
    let teacher = job.teacher.open(&paths.output, &prompts).await?;
    let progress = progress(&teacher);
    progress.note(&format!(
        "augmenting {} {schema} records from `{}` with {} ({} iteration(s), prompts {} {})",
        records.len(),
        job.input.display(),
        teacher.info().backend,
        job.settings.iterations,
        prompts.version(),
        &prompts.hash()[..15],
    ));
    let augmenter = Augmenter {
        prompts: &prompts,
        teacher: &teacher,
        settings: job.settings.clone(),
        concurrency: job.teacher.items_in_flight(),
    };
    let outcome = augmenter.run(&records, schema, paths, &progress).await?;
    Ok(AugmentReport {
        stats: outcome.stats.render(),
        usage: teacher.client().ledger().summary(),
        resumed: outcome.resumed,
    })
}

async fn augment_verified<P: Progress>(
    job: &AugmentJob,
    prompts: &PromptSet,
    tries: u32,
    progress: impl FnOnce(&Teacher) -> P,
) -> Result<AugmentReport> {
    let items = seqit_verify::read_jsonl(&job.input)
        .context("`--verify` reads chains made by `seqit seqeval synth`")?;
    let teacher = job.teacher.open(&job.paths.output, prompts).await?;
    let progress = progress(&teacher);
    progress.note(&format!(
        "verified answers for {} chains from `{}` with {} (up to {tries} tries each)",
        items.len(),
        job.input.display(),
        teacher.info().backend,
    ));
    let augmenter = VerifiedAugmenter {
        teacher: &teacher,
        settings: VerifySettings {
            tries,
            seed: job.settings.seed,
            decoding: job.settings.decoding.clone(),
        },
        concurrency: job.teacher.items_in_flight(),
    };
    let outcome = augmenter.run(&items, &job.paths, &progress).await?;
    Ok(AugmentReport {
        stats: outcome.stats.render(),
        usage: teacher.client().ledger().summary(),
        resumed: outcome.resumed,
    })
}

/// One `seqit seqeval build` run.
#[derive(Debug, Clone)]
pub struct SeqEvalJob {
    /// Base prompts: a prompt list, an alpaca_eval set, Alpaca or chat data.
    pub input: PathBuf,
    /// The input's format when it cannot be detected.
    pub input_format: Option<Schema>,
    /// SeqEval JSONL to write (`.state.jsonl` and `.stats.json` go beside it).
    pub output: PathBuf,
    /// Depths, shares, seed, decoding and attempts.
    pub settings: SeqEvalSettings,
    /// Constrain the rewrites to the format the parser reads (the prompt set's
    /// `rewrite_format`); off: free text, as the paper.
    pub structured: bool,
    /// The teacher and its prompts.
    pub teacher: TeacherSettings,
}

/// What a SeqEval build did.
#[derive(Debug, Clone)]
pub struct SeqEvalReport {
    /// Counts by depth, short chains, dropped prompts.
    pub stats: SeqEvalStats,
    /// The teacher's token use, and its cost when prices were given.
    pub usage: String,
}

impl SeqEvalReport {
    /// Records written (to `output`) by depth, chains stopped short, prompts dropped;
    /// then the teacher's usage.
    pub fn summary(&self, output: &Path) -> String {
        let stats = &self.stats;
        let mut depths: Vec<_> = stats.depths.iter().collect();
        depths.sort();
        let depths: Vec<String> = depths.iter().map(|(d, n)| format!("{d}: {n}")).collect();
        format!(
            "wrote {} records to {} (by depth: {}); {} chains stopped short, {} prompts dropped\n{}",
            stats.written,
            output.display(),
            depths.join(", "),
            stats.short_chains,
            stats.dropped,
            self.usage
        )
    }
}

/// Runs `seqit seqeval build` ([`SeqEvalBuilder`]). `progress` makes the progress
/// display once the teacher is open.
pub async fn build_seqeval<P: Progress>(
    job: &SeqEvalJob,
    progress: impl FnOnce(&Teacher) -> P,
) -> Result<SeqEvalReport> {
    let prompts = job.teacher.prompt_set()?;
    let mut settings = job.settings.clone();
    if job.structured {
        let max_tokens = settings.decoding.max_tokens;
        settings.decoding.constraint = Some(prompts.format(Stage::Rewrite, max_tokens)?);
    }
    let (_, records) = read_records(&job.input, job.input_format)?;
    let teacher = job.teacher.open(&job.output, &prompts).await?;
    let progress = progress(&teacher);
    progress.note(&format!(
        "building SeqEval from {} prompts in `{}` with {}",
        records.len(),
        job.input.display(),
        teacher.info().backend
    ));
    let builder = SeqEvalBuilder {
        prompts: &prompts,
        teacher: &teacher,
        settings,
        concurrency: job.teacher.items_in_flight(),
    };
    let stats = builder.run(&records, &job.output, &progress).await?;
    Ok(SeqEvalReport {
        stats,
        usage: teacher.client().ledger().summary(),
    })
}

/// One `seqit seqeval synth` run: a verifiable SeqEval set, chains whose every step a
/// program checks.
#[derive(Debug, Clone)]
pub struct SynthJob {
    /// JSONL to write (SeqEval records plus each step's check as data).
    pub output: PathBuf,
    /// Depths, items per depth and seed.
    pub settings: SynthSettings,
    /// Step templates (TOML); `None`: the built-in ones.
    pub templates: Option<PathBuf>,
}

/// What a synth run did.
#[derive(Debug, Clone)]
pub struct SynthReport {
    /// Chains written.
    pub items: usize,
    /// The version of the templates used.
    pub templates: String,
}

/// Runs `seqit seqeval synth`: every chain asked for, all distinct, or an error.
pub fn synthesize_seqeval(job: &SynthJob) -> Result<SynthReport> {
    let templates = match &job.templates {
        Some(path) => Templates::load(path)?,
        None => Templates::builtin(),
    };
    job.settings.check()?;
    let items = seqit_verify::synthesize(&job.settings, &templates);
    let wanted = job.settings.depths.len() * job.settings.per_depth;
    if items.len() < wanted {
        bail!(
            "only {} of {wanted} distinct chains could be built from these templates; ask for fewer per depth",
            items.len()
        );
    }
    seqit_verify::write_jsonl(&job.output, &items)?;
    Ok(SynthReport {
        items: items.len(),
        templates: templates.version().to_string(),
    })
}
