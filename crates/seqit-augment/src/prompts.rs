//! The Seq-Instruct prompt set: templates and few-shot pools read from versioned files
//! (`prompts/seq-instruct/v2/` embedded as the default, or a user directory), checked
//! when loaded, and the requests built from them.

use std::path::Path;

use anyhow::{bail, Context, Result};
use seqit_core::{ChatMessage, Constraint, Prompt};
use seqit_data::SeededRng;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::option::Edit;

/// Worked examples shown in every classification request.
pub const CLASSIFY_SHOTS: usize = 5;
/// Examples drawn from the option's pool for every rewrite request.
pub const REWRITE_SHOTS: usize = 3;

/// The files of a prompt directory, in the order they are hashed.
pub const PROMPT_FILES: [&str; 3] = [
    "templates.toml",
    "classify_examples.toml",
    "rewrite_examples.toml",
];

const BUILTIN: [&str; 3] = [
    include_str!("../../../prompts/seq-instruct/v2/templates.toml"),
    include_str!("../../../prompts/seq-instruct/v2/classify_examples.toml"),
    include_str!("../../../prompts/seq-instruct/v2/rewrite_examples.toml"),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Templates {
    version: String,
    classify_system: String,
    classify_example: String,
    classify_user: String,
    input_block: String,
    rewrite_system: String,
    rewrite_example: String,
    rewrite_user: String,
    rewrite_task_decompose: String,
    rewrite_task_prefix: String,
    rewrite_task_suffix: String,
    /// Added to the task when the instruction is already a chain (SeqEval rounds 2+).
    #[serde(default)]
    rewrite_task_longer: Option<String>,
    split_user: String,
    refine_user: String,
    /// Structured mode: the regular expression each stage's reply must match (absent
    /// in prompt sets written before version 2).
    #[serde(default)]
    classify_format: Option<String>,
    #[serde(default)]
    rewrite_format: Option<String>,
    #[serde(default)]
    split_format: Option<String>,
    #[serde(default)]
    refine_format: Option<String>,
    /// The new instruction of a prefix / suffix rewrite (keeps the original).
    #[serde(default)]
    prefix_instruction_format: Option<String>,
    #[serde(default)]
    suffix_instruction_format: Option<String>,
}

/// A teacher request of the pipeline whose reply has a fixed shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Classification of an instruction: which of the four edits fits.
    Classify,
    /// The rewrite of an instruction by the chosen edit.
    Rewrite,
    /// Step 0: splitting a prompt into instruction and input.
    Split,
    /// The refinement check: did a rewrite lose information?
    Refine,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 4] = [Stage::Classify, Stage::Rewrite, Stage::Split, Stage::Refine];

    /// The key of its format in `templates.toml`.
    pub fn format_key(self) -> &'static str {
        match self {
            Stage::Classify => "classify_format",
            Stage::Rewrite => "rewrite_format",
            Stage::Split => "split_format",
            Stage::Refine => "refine_format",
        }
    }

    /// Characters of free reasoning a reply of `max_tokens` tokens may spend before
    /// its fixed part: a token holds at least one character, so the fixed part always
    /// fits.
    fn reason_chars(self, max_tokens: usize) -> usize {
        match self {
            Stage::Classify | Stage::Refine => max_tokens.saturating_sub(12).clamp(1, 800),
            // The explanation is not used; the new instruction needs the room.
            Stage::Rewrite => (max_tokens / 4).clamp(1, 400),
            Stage::Split => 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyExamples {
    example: Vec<ClassifyExample>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyExample {
    instruction: String,
    #[serde(default)]
    input: String,
    answer: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RewritePools {
    decompose: Vec<RewriteExample>,
    prefix: Vec<RewriteExample>,
    suffix: Vec<RewriteExample>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RewriteExample {
    instruction: String,
    #[serde(default)]
    input: String,
    explanation: String,
    added_task: String,
    new_instruction: String,
}

/// Loaded, checked prompt texts (see the module documentation).
#[derive(Debug, Clone)]
pub struct PromptSet {
    version: String,
    hash: String,
    templates: Templates,
    classify: Vec<ClassifyExample>,
    rewrite: RewritePools,
}

impl PromptSet {
    /// The prompts shipped with seqit (`prompts/seq-instruct/v2/`).
    pub fn builtin() -> Self {
        Self::parse(&BUILTIN.map(str::to_string), Path::new("<built-in>"))
            .expect("the built-in prompt files are valid")
    }

    /// Reads the three prompt files from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let mut texts: [String; 3] = Default::default();
        for (text, name) in texts.iter_mut().zip(PROMPT_FILES) {
            let path = dir.join(name);
            *text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read prompt file `{}`\nhint: a prompt directory holds {}",
                    path.display(),
                    PROMPT_FILES.join(", ")
                )
            })?;
        }
        Self::parse(&texts, dir)
    }

    /// `--prompts DIR` when given, else the built-in set.
    pub fn load_or_builtin(dir: Option<&Path>) -> Result<Self> {
        dir.map_or_else(|| Ok(Self::builtin()), Self::load)
    }

    fn parse(texts: &[String; 3], dir: &Path) -> Result<Self> {
        let file = |i: usize| dir.join(PROMPT_FILES[i]);
        let templates: Templates = toml::from_str(&texts[0])
            .with_context(|| format!("invalid prompt file `{}`", file(0).display()))?;
        let classify: ClassifyExamples = toml::from_str(&texts[1])
            .with_context(|| format!("invalid prompt file `{}`", file(1).display()))?;
        let rewrite: RewritePools = toml::from_str(&texts[2])
            .with_context(|| format!("invalid prompt file `{}`", file(2).display()))?;
        if classify.example.len() < CLASSIFY_SHOTS {
            bail!(
                "`{}` has {} examples; a classification request shows {CLASSIFY_SHOTS}",
                file(1).display(),
                classify.example.len()
            );
        }
        for (name, pool) in [
            ("decompose", &rewrite.decompose),
            ("prefix", &rewrite.prefix),
            ("suffix", &rewrite.suffix),
        ] {
            if pool.len() < REWRITE_SHOTS {
                bail!(
                    "`{}`: the `{name}` pool has {} examples; a rewrite request draws {REWRITE_SHOTS}",
                    file(2).display(),
                    pool.len()
                );
            }
        }
        let t = &templates;
        let checks: [(&str, &str, &[&str]); 19] = [
            ("classify_system", &t.classify_system, &[]),
            (
                "classify_example",
                &t.classify_example,
                &["instruction", "input_block", "answer"],
            ),
            (
                "classify_user",
                &t.classify_user,
                &["examples", "instruction", "input_block"],
            ),
            ("input_block", &t.input_block, &["input"]),
            ("rewrite_system", &t.rewrite_system, &[]),
            (
                "rewrite_example",
                &t.rewrite_example,
                &[
                    "instruction",
                    "input_block",
                    "explanation",
                    "added_task",
                    "new_instruction",
                ],
            ),
            (
                "rewrite_user",
                &t.rewrite_user,
                &["task", "examples", "instruction", "input_block"],
            ),
            ("rewrite_task_decompose", &t.rewrite_task_decompose, &[]),
            ("rewrite_task_prefix", &t.rewrite_task_prefix, &[]),
            ("rewrite_task_suffix", &t.rewrite_task_suffix, &[]),
            (
                "rewrite_task_longer",
                t.rewrite_task_longer.as_deref().unwrap_or(""),
                &[],
            ),
            ("split_user", &t.split_user, &["prompt"]),
            (
                "refine_user",
                &t.refine_user,
                &["instruction", "new_instruction", "input_block"],
            ),
            (
                "classify_format",
                t.classify_format.as_deref().unwrap_or(""),
                &["reason_chars"],
            ),
            (
                "rewrite_format",
                t.rewrite_format.as_deref().unwrap_or(""),
                &["reason_chars", "new_instruction"],
            ),
            (
                "prefix_instruction_format",
                t.prefix_instruction_format.as_deref().unwrap_or(""),
                &["instruction"],
            ),
            (
                "suffix_instruction_format",
                t.suffix_instruction_format.as_deref().unwrap_or(""),
                &["instruction"],
            ),
            ("split_format", t.split_format.as_deref().unwrap_or(""), &[]),
            (
                "refine_format",
                t.refine_format.as_deref().unwrap_or(""),
                &["reason_chars"],
            ),
        ];
        for (name, template, allowed) in checks {
            if let Some(unknown) = placeholders(template).find(|p| !allowed.contains(p)) {
                bail!(
                    "`{}`: template `{name}` uses `{{{{{unknown}}}}}`, which it cannot fill (it knows: {})",
                    file(0).display(),
                    if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
                );
            }
        }
        let mut hasher = Sha256::new();
        for (name, text) in PROMPT_FILES.iter().zip(texts) {
            hasher.update(name.as_bytes());
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        let hash = format!("sha256:{:x}", hasher.finalize());
        Ok(Self {
            version: templates.version.clone(),
            hash,
            templates,
            classify: classify.example,
            rewrite,
        })
    }

    /// The version named in `templates.toml` (e.g. `seq-instruct/v2`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `sha256:` of the three files: changes whenever any text does.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Version and hash together, as sent to the request cache.
    pub fn cache_version(&self) -> String {
        format!("{}@{}", self.version, self.hash)
    }

    /// Sizes of the rewrite pools (decompose, prefix, suffix).
    pub fn pool_sizes(&self) -> [usize; 3] {
        [
            self.rewrite.decompose.len(),
            self.rewrite.prefix.len(),
            self.rewrite.suffix.len(),
        ]
    }

    fn input_block(&self, input: Option<&str>) -> String {
        match input.filter(|i| !i.is_empty()) {
            Some(input) => render(&self.templates.input_block, &[("input", input)]),
            None => String::new(),
        }
    }

    /// The classification request: system message, option descriptions, the
    /// [`CLASSIFY_SHOTS`] worked examples in an order drawn from `rng`, then the item.
    pub fn classify(&self, instruction: &str, input: Option<&str>, rng: &mut SeededRng) -> Prompt {
        let examples = few_shot(&self.classify, CLASSIFY_SHOTS, rng, |e| {
            render(
                &self.templates.classify_example,
                &[
                    ("instruction", &e.instruction),
                    ("input_block", &self.input_block(Some(&e.input))),
                    ("answer", &e.answer),
                ],
            )
        });
        let user = render(
            &self.templates.classify_user,
            &[
                ("examples", &examples),
                ("instruction", instruction),
                ("input_block", &self.input_block(input)),
            ],
        );
        Prompt::Chat(vec![
            ChatMessage::system(self.templates.classify_system.clone()),
            ChatMessage::user(user),
        ])
    }

    /// The rewrite request for `edit` (A, B or C): the option's task, the rules, and
    /// [`REWRITE_SHOTS`] examples drawn from its pool in an order drawn from `rng`.
    /// `lengthen` adds `rewrite_task_longer` to the task (an instruction that is already
    /// a chain, as in SeqEval's later rounds).
    pub fn rewrite(
        &self,
        edit: Edit,
        instruction: &str,
        input: Option<&str>,
        lengthen: bool,
        rng: &mut SeededRng,
    ) -> Prompt {
        let (pool, task) = match edit {
            Edit::Decompose => (
                &self.rewrite.decompose,
                &self.templates.rewrite_task_decompose,
            ),
            Edit::Prefix => (&self.rewrite.prefix, &self.templates.rewrite_task_prefix),
            Edit::Suffix => (&self.rewrite.suffix, &self.templates.rewrite_task_suffix),
            Edit::Keep => unreachable!("D items are not rewritten"),
        };
        let examples = few_shot(pool, REWRITE_SHOTS, rng, |e| {
            render(
                &self.templates.rewrite_example,
                &[
                    ("instruction", &e.instruction),
                    ("input_block", &self.input_block(Some(&e.input))),
                    ("explanation", &e.explanation),
                    ("added_task", &e.added_task),
                    ("new_instruction", &e.new_instruction),
                ],
            )
        });
        let task = match self.templates.rewrite_task_longer.as_deref() {
            Some(longer) if lengthen => format!("{task}\n{longer}"),
            _ => task.clone(),
        };
        let user = render(
            &self.templates.rewrite_user,
            &[
                ("task", &task),
                ("examples", &examples),
                ("instruction", instruction),
                ("input_block", &self.input_block(input)),
            ],
        );
        Prompt::Chat(vec![
            ChatMessage::system(self.templates.rewrite_system.clone()),
            ChatMessage::user(user),
        ])
    }

    /// Structured mode: the constraint on `stage`'s replies for a budget of
    /// `max_tokens` new tokens. Fails when the prompt set has no format for it.
    pub fn format(&self, stage: Stage, max_tokens: usize) -> Result<Constraint> {
        let t = &self.templates;
        let template = match stage {
            Stage::Classify => &t.classify_format,
            Stage::Rewrite => &t.rewrite_format,
            Stage::Split => &t.split_format,
            Stage::Refine => &t.refine_format,
        };
        let Some(template) = template else {
            bail!(
                "the prompt set `{}` has no `{}` (structured mode needs one per stage; see prompts/seq-instruct/v2/templates.toml), or pass `--structured off`",
                self.version,
                stage.format_key()
            );
        };
        let chars = stage.reason_chars(max_tokens).to_string();
        Ok(Constraint::Regex {
            pattern: render(
                template,
                &[
                    ("reason_chars", &chars),
                    ("new_instruction", ANY_INSTRUCTION),
                ],
            ),
        })
    }

    /// Structured mode: the constraint on a rewrite of `instruction` by `edit`. Prefix
    /// and suffix rewrites keep the original instruction word for word when the prompt
    /// set says how (`prefix_instruction_format`, `suffix_instruction_format`);
    /// decompositions, and prompt sets without those formats, take any instruction.
    pub fn rewrite_format(
        &self,
        edit: Edit,
        instruction: &str,
        max_tokens: usize,
    ) -> Result<Constraint> {
        let t = &self.templates;
        let kept = match edit {
            Edit::Prefix => t.prefix_instruction_format.as_deref(),
            Edit::Suffix => t.suffix_instruction_format.as_deref(),
            _ => None,
        };
        let Some(kept) = kept else {
            return self.format(Stage::Rewrite, max_tokens);
        };
        let new_instruction = render(kept, &[("instruction", &literal_pattern(instruction))]);
        let template = t.rewrite_format.as_deref().unwrap_or_default();
        let chars = Stage::Rewrite.reason_chars(max_tokens).to_string();
        Ok(Constraint::Regex {
            pattern: render(
                template,
                &[
                    ("reason_chars", &chars),
                    ("new_instruction", &new_instruction),
                ],
            ),
        })
    }

    /// The step-0 request splitting a raw prompt into instruction and input.
    pub fn split(&self, prompt: &str) -> Prompt {
        Prompt::Chat(vec![ChatMessage::user(render(
            &self.templates.split_user,
            &[("prompt", prompt)],
        ))])
    }

    /// The refinement check: did `new_instruction` keep everything of `instruction`?
    pub fn refine(&self, instruction: &str, input: Option<&str>, new_instruction: &str) -> Prompt {
        Prompt::Chat(vec![ChatMessage::user(render(
            &self.templates.refine_user,
            &[
                ("instruction", instruction),
                ("new_instruction", new_instruction),
                ("input_block", &self.input_block(input)),
            ],
        ))])
    }
}

/// The shape of a new instruction no format restricts.
const ANY_INSTRUCTION: &str = "[^#]+";

/// A regular expression matching `text` exactly, its first letter in either case (it
/// may follow "then" or start a sentence).
fn literal_pattern(text: &str) -> String {
    let text = text.trim();
    let mut chars = text.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let escape = seqit_core::escape_regex;
    let head = if first.is_alphabetic() && first.to_lowercase().ne(first.to_uppercase()) {
        format!("[{}{}]", first.to_lowercase(), first.to_uppercase())
    } else {
        escape(&first.to_string())
    };
    format!("{head}{}", escape(chars.as_str()))
}

/// The `{{name}}` placeholders of a template.
fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}").map(|(name, _)| name.trim()))
}

/// `shots` examples from `pool` in an order drawn from `rng`, each as `text` writes it,
/// separated by blank lines.
fn few_shot<T>(
    pool: &[T],
    shots: usize,
    rng: &mut SeededRng,
    text: impl Fn(&T) -> String,
) -> String {
    let picked = rng.sample(pool.len(), shots);
    let examples: Vec<String> = picked.iter().map(|&i| text(&pool[i])).collect();
    examples.join("\n\n")
}

/// Fills `{{name}}` placeholders in one pass (filled-in text is not scanned again, so an
/// instruction containing braces stays as it is).
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.split_once("}}") {
            Some((name, tail)) => {
                match vars.iter().find(|(key, _)| *key == name.trim()) {
                    Some((_, value)) => out.push_str(value),
                    None => {
                        out.push_str("{{");
                        out.push_str(name);
                        out.push_str("}}");
                    }
                }
                rest = tail;
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_text(prompt: &Prompt) -> &str {
        match prompt {
            Prompt::Chat(messages) => &messages.last().unwrap().content,
            Prompt::Text(text) => text,
        }
    }

    #[test]
    fn builtin_pools_are_large_enough() {
        let set = PromptSet::builtin();
        assert_eq!(set.version(), "seq-instruct/v2");
        assert!(set.hash().starts_with("sha256:"));
        assert!(
            set.pool_sizes().iter().all(|&n| n >= 7),
            "{:?}",
            set.pool_sizes()
        );
        assert!(set.classify.len() >= CLASSIFY_SHOTS);
    }

    #[test]
    fn classification_shows_five_examples_in_a_seeded_order() {
        let set = PromptSet::builtin();
        let prompt = |seed| {
            set.classify(
                "Name a colour.",
                Some("{{input}} stays"),
                &mut SeededRng::new(seed),
            )
        };
        let a = prompt(1);
        assert_eq!(a, prompt(1));
        let text = user_text(&a);
        assert_eq!(text.matches("#Reasoning#:").count(), CLASSIFY_SHOTS + 1);
        assert!(
            text.ends_with("#Instruction#: Name a colour.\n#Input#: {{input}} stays\n#Reasoning#:")
        );
        let orders: std::collections::HashSet<String> = (0..20)
            .map(|seed| user_text(&prompt(seed)).to_string())
            .collect();
        assert!(orders.len() > 5, "the example order changes with the seed");
        let Prompt::Chat(messages) = &a else { panic!() };
        assert_eq!(messages[0].role, seqit_core::Role::System);
    }

    #[test]
    fn rewrite_draws_three_examples_of_the_option() {
        let set = PromptSet::builtin();
        let prompt = set.rewrite(
            Edit::Prefix,
            "Solve x+1=2.",
            None,
            false,
            &mut SeededRng::new(3),
        );
        let text = user_text(&prompt);
        assert_eq!(text.matches("\n#New Instruction#:").count(), REWRITE_SHOTS);
        assert!(text.starts_with(&set.templates.rewrite_task_prefix));
        assert!(text.ends_with("#Instruction#: Solve x+1=2.\n#Explanation#:"));
        let longer = set.templates.rewrite_task_longer.as_deref().unwrap();
        assert!(!text.contains(longer));
        // A chain being lengthened (SeqEval rounds 2+) is asked for a longer one.
        let lengthen = set.rewrite(
            Edit::Prefix,
            "Solve x+1=2. Then check x.",
            None,
            true,
            &mut SeededRng::new(3),
        );
        let text = user_text(&lengthen);
        assert!(
            text.starts_with(&format!("{}\n{longer}", set.templates.rewrite_task_prefix)),
            "{text}"
        );
        assert!(longer.contains("longer"));
    }

    #[test]
    fn user_directories_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in PROMPT_FILES.iter().zip(BUILTIN) {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let loaded = PromptSet::load(dir.path()).unwrap();
        assert_eq!(loaded.hash(), PromptSet::builtin().hash());
        let bad = BUILTIN[0].replace("{{examples}}", "{{exemples}}");
        std::fs::write(dir.path().join("templates.toml"), bad).unwrap();
        let error = format!("{:#}", PromptSet::load(dir.path()).unwrap_err());
        assert!(
            error.contains("`{{exemples}}`") && error.contains("templates.toml"),
            "{error}"
        );
        std::fs::remove_file(dir.path().join("rewrite_examples.toml")).unwrap();
        let error = format!("{:#}", PromptSet::load(dir.path()).unwrap_err());
        assert!(error.contains("rewrite_examples.toml"), "{error}");
    }

    #[test]
    fn rendering_is_single_pass() {
        assert_eq!(
            render("a {{x}} b {{y}}", &[("x", "{{y}}"), ("y", "2")]),
            "a {{y}} b 2"
        );
        assert_eq!(render("open {{x", &[("x", "1")]), "open {{x");
    }

    #[test]
    fn prefix_and_suffix_rewrites_keep_the_original_instruction() {
        let set = PromptSet::builtin();
        let original = "Write a haiku about rain (5-7-5).";
        let prefix = set.rewrite_format(Edit::Prefix, original, 256).unwrap();
        let suffix = set.rewrite_format(Edit::Suffix, original, 256).unwrap();
        let decompose = set.rewrite_format(Edit::Decompose, original, 256).unwrap();
        let reply = |new: &str| {
            format!("It helps.\n#Added Task#: List rain words.\n#New Instruction#: {new}\n###")
        };
        let kept_after =
            reply("First list three rain words. Then write a haiku about rain (5-7-5).");
        let kept_before = reply("Write a haiku about rain (5-7-5). Then explain its image.");
        let dropped = reply("List three rain words.");
        assert!(seqit_llm::check_reply(&prefix, &kept_after).is_ok());
        assert!(seqit_llm::check_reply(&prefix, &dropped).is_err());
        assert!(seqit_llm::check_reply(&prefix, &kept_before).is_err());
        assert!(seqit_llm::check_reply(&suffix, &kept_before).is_ok());
        assert!(seqit_llm::check_reply(&suffix, &dropped).is_err());
        assert!(seqit_llm::check_reply(&decompose, &dropped).is_ok());
        // The free-text parser reads what the format lets through.
        assert_eq!(
            crate::extract::extract_new_instruction(&kept_after).as_deref(),
            Some("First list three rain words. Then write a haiku about rain (5-7-5).")
        );
    }
}
