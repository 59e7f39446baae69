//! Conversations to token ids and loss masks.
//!
//! Masks come from character spans of the rendered text, not from token patterns: an
//! assistant turn starts where the conversation before it, rendered with the generation
//! prompt, ends, and stops after its end-of-turn marker. Each token is trained when its
//! first character lies inside such a span. This works for any prefix-stable template
//! (every chat template seqit has met) and keeps the end-of-turn token trained, so the
//! model learns to stop.

use std::path::Path;

use anyhow::{bail, Context, Result};
use seqit_core::{ChatMessage, Role};
use seqit_engine::{load_tokenizer, ChatTemplate, TemplateVariables, Tokenizer};

const TULU_TEMPLATE: &str = include_str!("../../../prompts/templates/tulu.jinja");
const CHATML_TEMPLATE: &str = include_str!("../../../prompts/templates/chatml.jinja");

/// Markers that close a turn in common formats, besides the tokenizer's EOS.
const END_OF_TURN_MARKERS: [&str; 3] = ["<|im_end|>", "<|eot_id|>", "<|end|>"];

/// Which chat format renders training examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatFormat {
    /// The model's own chat template.
    Model,
    /// The Tulu format of the SIT paper.
    Tulu,
    /// ChatML (`<|im_start|>` / `<|im_end|>`), `prompts/templates/chatml.jinja`.
    ChatMl,
    /// A Jinja template given as text.
    Custom(String),
}

impl ChatFormat {
    /// The format a `--template` value names: `model`, `tulu`, `chatml`, or a path to a
    /// Jinja file.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "model" => ChatFormat::Model,
            "tulu" => ChatFormat::Tulu,
            "chatml" => ChatFormat::ChatMl,
            path => ChatFormat::Custom(std::fs::read_to_string(path).with_context(|| {
                format!("`--template {path}` is neither model, tulu, chatml nor a readable file")
            })?),
        })
    }

    /// How an Alpaca `input` is joined to its instruction in the user turn: one space
    /// in the Tulu format (the SIT paper's training code writes `instruction + " " +
    /// input`), a blank line otherwise.
    pub fn input_separator(&self) -> &'static str {
        match self {
            ChatFormat::Tulu => " ",
            _ => seqit_data::INPUT_SEPARATOR,
        }
    }

    /// The template for `tokenizer`, given the model's own template if it has one.
    pub fn template(
        &self,
        tokenizer: &Tokenizer,
        model_template: Option<&ChatTemplate>,
    ) -> Result<ChatTemplate> {
        let source = match self {
            ChatFormat::Model => {
                return model_template
                    .map(|t| {
                        ChatTemplate::new(
                            t.source(),
                            tokenizer.bos_token.as_deref(),
                            tokenizer.eos_token.as_deref(),
                        )
                    })
                    .context(
                        "the model has no chat template; choose `--template tulu` or `chatml`",
                    )?;
            }
            ChatFormat::Tulu => TULU_TEMPLATE,
            ChatFormat::ChatMl => CHATML_TEMPLATE,
            ChatFormat::Custom(source) => source,
        };
        ChatTemplate::new(
            source,
            tokenizer.bos_token.as_deref(),
            tokenizer.eos_token.as_deref(),
        )
    }
}

/// Token ids and, per token, whether it carries loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    /// Token ids of the rendered conversation.
    pub input_ids: Vec<u32>,
    /// Per token of `input_ids`: whether it lies in an assistant turn (end-of-turn token
    /// included) and so carries loss.
    pub trained: Vec<bool>,
}

impl TokenizedExample {
    /// Number of tokens that carry loss.
    pub fn trained_tokens(&self) -> usize {
        self.trained.iter().filter(|t| **t).count()
    }
}

/// Renders `messages` with `template` and marks the assistant tokens.
pub fn tokenize_example(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[ChatMessage],
) -> Result<TokenizedExample> {
    Ok(tokenize_with_offsets(tokenizer, template, messages)?.example)
}

/// One token of an example as `seqit data show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPiece {
    /// The token id.
    pub id: u32,
    /// The characters of the rendered text this token covers.
    pub text: String,
    /// Whether the token carries loss.
    pub trained: bool,
}

/// [`tokenize_example`], with each token's text, to show which tokens carry loss.
pub fn explain_example(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[ChatMessage],
) -> Result<Vec<TokenPiece>> {
    let Rendered {
        example,
        text,
        offsets,
    } = tokenize_with_offsets(tokenizer, template, messages)?;
    let chars: Vec<char> = text.chars().collect();
    Ok(example
        .input_ids
        .iter()
        .zip(&example.trained)
        .zip(&offsets)
        .map(|((&id, &trained), &(start, end))| TokenPiece {
            id,
            text: chars[start.min(chars.len())..end.min(chars.len())]
                .iter()
                .collect(),
            trained,
        })
        .collect())
}

/// Record `index` (0-based) of a training file as [`explain_example`] shows it, rendered
/// with `model`'s tokenizer (`None`: the default model) in `format` with `variables`
/// (`seqit data show`).
pub fn explain_record(
    file: &std::path::Path,
    model: Option<&str>,
    format: &ChatFormat,
    variables: &TemplateVariables,
    index: usize,
) -> Result<Vec<TokenPiece>> {
    let model = seqit_engine::resolve_model(model)?;
    let mut conversations = crate::read_conversations(file, format)?;
    if index >= conversations.len() {
        anyhow::bail!(
            "{}: --index {index} is out of range: the file has {} records",
            file.display(),
            conversations.len()
        );
    }
    let (tokenizer, template) = chat_tokenizer(&model, format, variables)?;
    explain_example(&tokenizer, &template, &conversations.swap_remove(index))
}

/// An example with its rendered text and each token's character span in it.
struct Rendered {
    example: TokenizedExample,
    text: String,
    offsets: Vec<(usize, usize)>,
}

fn tokenize_with_offsets(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[ChatMessage],
) -> Result<Rendered> {
    if !messages.iter().any(|m| m.role == Role::Assistant) {
        bail!("the conversation has no assistant turn to train on");
    }
    let text = template.render(messages, false)?;
    let spans = assistant_spans(tokenizer, template, messages, &text)?;
    let (input_ids, offsets) = tokenizer.encode_with_char_offsets(&text)?;
    let trained = offsets
        .iter()
        .map(|(start, _)| spans.iter().any(|(s, e)| s <= start && start < e))
        .collect();
    Ok(Rendered {
        example: TokenizedExample { input_ids, trained },
        text,
        offsets,
    })
}

/// The tokenizer of the model at `model` and the template `format` selects for it,
/// rendered with `variables`.
pub fn chat_tokenizer(
    model: &Path,
    format: &ChatFormat,
    variables: &TemplateVariables,
) -> Result<(Tokenizer, ChatTemplate)> {
    let (tokenizer, model_template) = load_tokenizer(model)?;
    let model_template = model_template
        .map(|src| {
            ChatTemplate::new(
                &src,
                tokenizer.bos_token.as_deref(),
                tokenizer.eos_token.as_deref(),
            )
        })
        .transpose()?;
    let template = format
        .template(&tokenizer, model_template.as_ref())?
        .with_variables(variables.clone())?;
    Ok((tokenizer, template))
}

/// Character spans `[start, end)` of the assistant turns in `text`.
fn assistant_spans(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[ChatMessage],
    text: &str,
) -> Result<Vec<(usize, usize)>> {
    let chars = |s: &str| s.chars().count();
    let markers: Vec<&str> = END_OF_TURN_MARKERS
        .iter()
        .copied()
        .chain(tokenizer.eos_token.as_deref())
        .collect();
    let mut spans = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        if message.role != Role::Assistant {
            continue;
        }
        let before = template.render(&messages[..i], true)?;
        let through = template.render(&messages[..=i], false)?;
        if !text.starts_with(&before) || !text.starts_with(&through) {
            bail!("the chat template renders turn {i} differently depending on what follows; seqit cannot locate the assistant's reply in it");
        }
        let start = before.len();
        let turn_end = through.len();
        let end = markers
            .iter()
            .filter_map(|m| text[start..turn_end].find(m).map(|p| start + p + m.len()))
            .min()
            .unwrap_or(turn_end);
        spans.push((chars(&text[..start]), chars(&text[..end])));
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SIT paper's training code (`encode_with_messages_format` in its
    /// `self-seq/finetune.py`): every message trimmed, `<|role|>\n` before it, a newline
    /// after it, EOS ending each answer, a system block even when the system prompt is
    /// empty, and the whole text stripped (no newline after the last answer).
    #[test]
    fn tulu_renders_as_the_papers_training_code() {
        let template = ChatTemplate::new(TULU_TEMPLATE, Some("<s>"), Some("</s>")).unwrap();
        let messages = [
            ChatMessage::system("  Be brief. "),
            ChatMessage::user("\nName a colour.\n\n"),
            ChatMessage::assistant(" Red.\n"),
        ];
        assert_eq!(
            template.render(&messages, false).unwrap(),
            "<|system|>\nBe brief.\n<|user|>\nName a colour.\n<|assistant|>\nRed.</s>"
        );
        assert_eq!(
            template.render(&messages[..2], true).unwrap(),
            "<|system|>\nBe brief.\n<|user|>\nName a colour.\n<|assistant|>\n"
        );
        let no_system = [
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello"),
            ChatMessage::user("Bye"),
            ChatMessage::assistant("Bye!"),
        ];
        assert_eq!(
            template.render(&no_system, false).unwrap(),
            "<|system|>\n\n<|user|>\nHi\n<|assistant|>\nHello</s>\n<|user|>\nBye\n<|assistant|>\nBye!</s>"
        );
    }

    #[test]
    fn tulu_joins_the_input_with_a_space() {
        assert_eq!(ChatFormat::Tulu.input_separator(), " ");
        assert_eq!(ChatFormat::ChatMl.input_separator(), "\n\n");
    }
}
