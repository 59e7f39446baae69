//! Translate-then-predict: multilingual sequential data from an English
//! Alpaca dataset and machine translations of the same items.
//!
//! Of the English items with a non-empty `input`, `per_language × languages` are drawn
//! with the seed (each item for at most one language) and replaced in place by their
//! sequential version: the instruction asks to first translate the input, given in
//! that language, into English and then do the original task; the input is the
//! translated input; the target is `Translation into English: <English input>` then
//! `Result: <English output>`. Every other item stays as it is, so the output has the
//! same items in the same order as the English file. The same seed gives the same
//! selection for the SIT data and for the cross-lingual control (translated input,
//! original English instruction, direct English answer).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use seqit_data::{ReadOptions, Record, Schema, SeededRng, WriteOptions};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{BuildError, Result};
use crate::output::write_report;
use crate::prompts::{PromptVersion, TranslatePrompts};

/// Metadata key of the provenance object on every rewritten record.
pub const PROVENANCE_KEY: &str = "provenance";

/// Language codes seqit names in instructions. Any other language is given by name
/// (`--lang Swahili=sw.json`).
const LANGUAGE_NAMES: &[(&str, &str)] = &[
    ("ar", "Arabic"),
    ("bn", "Bengali"),
    ("de", "German"),
    ("el", "Greek"),
    ("es", "Spanish"),
    ("fr", "French"),
    ("hi", "Hindi"),
    ("id", "Indonesian"),
    ("it", "Italian"),
    ("ja", "Japanese"),
    ("ko", "Korean"),
    ("nl", "Dutch"),
    ("pl", "Polish"),
    ("pt", "Portuguese"),
    ("ro", "Romanian"),
    ("ru", "Russian"),
    ("sw", "Swahili"),
    ("te", "Telugu"),
    ("th", "Thai"),
    ("tr", "Turkish"),
    ("uk", "Ukrainian"),
    ("vi", "Vietnamese"),
    ("zh", "Chinese"),
];

/// One translated dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageSource {
    /// What the user called it (`de`, or a name such as `Swahili`).
    pub code: String,
    /// The language's English name, used in instructions.
    pub name: String,
    /// The translated Alpaca file.
    pub path: PathBuf,
}

impl LanguageSource {
    /// Parses `CODE=PATH` (`de=alpaca.de.json`) or `NAME=PATH` (`Swahili=sw.json`).
    pub fn parse(spec: &str) -> Result<Self> {
        let (code, path) = spec
            .split_once('=')
            .filter(|(code, path)| !code.trim().is_empty() && !path.is_empty())
            .ok_or_else(|| {
                BuildError::Settings(format!(
                    "`{spec}` is not a language file\nhint: write `CODE=PATH`, e.g. `de=alpaca.de.json`"
                ))
            })?;
        let code = code.trim();
        let name = match LANGUAGE_NAMES
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(code))
        {
            Some((_, name)) => name.to_string(),
            None if code.chars().count() > 3 => code.to_string(),
            None => {
                return Err(BuildError::Settings(format!(
                    "unknown language code `{code}` (known: {})\nhint: give the language by its English name, e.g. `--lang Swahili=sw.json`",
                    LANGUAGE_NAMES
                        .iter()
                        .map(|(c, _)| *c)
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        };
        Ok(Self {
            code: code.to_string(),
            name,
            path: PathBuf::from(path),
        })
    }
}

/// What the selected items become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Translate-then-predict (the SIT data).
    TranslateThenPredict,
    /// The cross-lingual control: translated input, direct English answer.
    CrossLingual,
}

/// Checked settings of one build.
#[derive(Debug, Clone)]
pub struct TranslateConfig {
    /// The English Alpaca file.
    pub english: PathBuf,
    /// The translations, in the order their items are drawn.
    pub languages: Vec<LanguageSource>,
    /// Items rewritten per language.
    pub per_language: usize,
    /// Seed of the selection.
    pub seed: u64,
    /// What the selected items become.
    pub variant: Variant,
}

/// What a build did.
#[derive(Debug, Clone, Serialize)]
pub struct TranslateReport {
    /// The English file.
    pub english: PathBuf,
    /// Items in (and out).
    pub items: usize,
    /// English items with a non-empty input.
    pub with_input: usize,
    /// Items rewritten, by language code.
    pub rewritten: BTreeMap<String, usize>,
    /// What the rewritten items became.
    pub variant: Variant,
    /// Seed of the selection.
    pub seed: u64,
    /// The prompt file used.
    pub prompts: PromptVersion,
}

/// One `seqit build translate` run.
#[derive(Debug, Clone)]
pub struct TranslateJob {
    /// What to build.
    pub config: TranslateConfig,
    /// Directory with a replacement `translate.toml`; `None`: the built-in prompts.
    pub prompts: Option<PathBuf>,
    /// The file to write (`.json` or `.jsonl`).
    pub output: PathBuf,
    /// Its record format (Alpaca or `messages`).
    pub schema: Schema,
}

/// Builds the mixture ([`build`]) and writes it, with its report beside it as
/// `<output>.report.json`. Returns the report.
pub fn run(job: &TranslateJob) -> Result<TranslateReport> {
    let prompts = TranslatePrompts::load(job.prompts.as_deref())?;
    let (records, report) = build(&job.config, &prompts)?;
    seqit_data::write_all(&job.output, &WriteOptions::new(job.schema), &records)
        .map_err(|e| BuildError::write(&job.output, e))?;
    write_report(&job.output, &report)?;
    Ok(report)
}

/// Reads the English and translated files and builds the mixture (see the module
/// documentation). Errors name the file and record that do not line up.
pub fn build(
    config: &TranslateConfig,
    prompts: &TranslatePrompts,
) -> Result<(Vec<Record>, TranslateReport)> {
    if config.per_language == 0 {
        return Err(BuildError::Settings(
            "`--per-language` must be at least 1".into(),
        ));
    }
    if config.languages.is_empty() {
        return Err(BuildError::Settings(
            "no translated files given\nhint: add `--lang CODE=PATH` for each language".into(),
        ));
    }
    let english = read_alpaca(&config.english)?;
    for (index, record) in english.iter().enumerate() {
        if record.response().is_none() {
            return Err(BuildError::content(
                &config.english,
                format!("record {index}: field `output` is missing; the English items need their answers"),
            ));
        }
    }
    let mut translated = Vec::with_capacity(config.languages.len());
    for language in &config.languages {
        let records = read_alpaca(&language.path)?;
        check_aligned(&config.english, &english, &language.path, &records)?;
        translated.push(records);
    }

    let eligible: Vec<usize> = (0..english.len())
        .filter(|&i| english[i].input.is_some())
        .collect();
    let wanted = config.per_language * config.languages.len();
    if wanted > eligible.len() {
        return Err(BuildError::Settings(format!(
            "`--per-language {}` × {} languages needs {wanted} items with a non-empty input, but `{}` has {}\nhint: lower `--per-language` to at most {}",
            config.per_language,
            config.languages.len(),
            config.english.display(),
            eligible.len(),
            eligible.len() / config.languages.len()
        )));
    }
    let drawn = SeededRng::new(config.seed).sample(eligible.len(), wanted);

    let mut output = english.clone();
    let mut rewritten = BTreeMap::new();
    for (slot, &draw) in drawn.iter().enumerate() {
        let index = eligible[draw];
        let which = slot / config.per_language;
        let language = &config.languages[which];
        output[index] = rewrite(
            index,
            &english[index],
            &translated[which][index],
            language,
            config.variant,
            prompts,
        );
        *rewritten.entry(language.code.clone()).or_insert(0) += 1;
    }
    let report = TranslateReport {
        english: config.english.clone(),
        items: english.len(),
        with_input: eligible.len(),
        rewritten,
        variant: config.variant,
        seed: config.seed,
        prompts: prompts.version.clone(),
    };
    Ok((output, report))
}

fn read_alpaca(path: &Path) -> Result<Vec<Record>> {
    let options = ReadOptions {
        schema: Some(Schema::Alpaca),
        ..ReadOptions::default()
    };
    Ok(seqit_data::read_all(path, &options)?.1)
}

/// The translated file must hold the same items in the same order: same count, and an
/// input exactly where the English item has one.
fn check_aligned(
    english_path: &Path,
    english: &[Record],
    path: &Path,
    records: &[Record],
) -> Result<()> {
    if records.len() != english.len() {
        return Err(BuildError::content(
            path,
            format!(
                "has {} records but the English file `{}` has {}; the files must hold the same items in the same order",
                records.len(),
                english_path.display(),
                english.len()
            ),
        ));
    }
    for (index, (en, other)) in english.iter().zip(records).enumerate() {
        if en.input.is_some() != other.input.is_some() {
            let (has, lacks) = if en.input.is_some() {
                ("the English record has", "this one has none")
            } else {
                ("this record has", "the English record has none")
            };
            return Err(BuildError::content(
                path,
                format!(
                    "record {index}: field `input`: {has} a non-empty input but {lacks}; the files must hold the same items in the same order"
                ),
            ));
        }
    }
    Ok(())
}

fn rewrite(
    index: usize,
    english: &Record,
    translated: &Record,
    language: &LanguageSource,
    variant: Variant,
    prompts: &TranslatePrompts,
) -> Record {
    let task = english.instruction().unwrap_or_default();
    let foreign_input = translated.input.as_deref();
    let english_input = english.input.as_deref().unwrap_or_default();
    let answer = english.response().unwrap_or_default();
    let mut record = match variant {
        Variant::TranslateThenPredict => Record::exchange(
            &prompts.instruction(&language.name, task),
            foreign_input,
            Some(&prompts.target(english_input, answer)),
        ),
        Variant::CrossLingual => Record::exchange(task, foreign_input, Some(answer)),
    };
    record.id = english.id.clone();
    record.system = english.system.clone();
    let provenance = json!({
        "builder": variant,
        "source_index": index,
        "source_id": english.id.clone().unwrap_or(Value::Null),
        "original_instruction": task,
        "language": language.code,
        "language_name": language.name,
        "prompt_version": prompts.version.version,
        "prompt_hash": prompts.version.hash,
    });
    record
        .metadata
        .insert(PROVENANCE_KEY.to_string(), provenance);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_specs() {
        let de = LanguageSource::parse("de=data/de.json").unwrap();
        assert_eq!((de.code.as_str(), de.name.as_str()), ("de", "German"));
        assert_eq!(de.path, PathBuf::from("data/de.json"));
        let sw = LanguageSource::parse("Kiswahili=sw.json").unwrap();
        assert_eq!(sw.name, "Kiswahili");
        let err = LanguageSource::parse("xx=a.json").unwrap_err().to_string();
        assert!(err.contains("`xx`") && err.contains("hint:"), "{err}");
        assert!(LanguageSource::parse("de.json").is_err());
        assert!(LanguageSource::parse("de=").is_err());
    }
}
