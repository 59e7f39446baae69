//! Constrained decoding: a [`Constraint`] compiled by llguidance into a token matcher
//! that masks, at every step, the tokens that cannot continue a valid text.
//!
//! llguidance (the structured-generation library behind llama.cpp's, vLLM's and
//! SGLang's guided decoding) works on a token trie: the bytes of every token, read from
//! the `tokenizer.json` document seqit already holds, so no second tokenizer library is
//! loaded.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use seqit_core::Constraint;

use crate::tokenizer::Tokenizer;

/// How JSON is laid out under a JSON constraint: one space after `:` and `,`, no other
/// whitespace. Small models otherwise fill flexible whitespace with newlines.
const JSON_LAYOUT: &str =
    r#"{"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}"#;

/// Compiles constraints for one tokenizer. Building the token trie and llguidance's
/// mask slices takes a while (tens of milliseconds for a 49k vocabulary), so an engine
/// builds it once, on the first constrained request.
pub struct ConstraintCompiler {
    factory: ParserFactory,
}

impl ConstraintCompiler {
    /// `stop_ids` are the tokens that end a sequence: a constraint allows them exactly
    /// where its language allows the text to end.
    pub fn new(tokenizer: &Tokenizer, stop_ids: &HashSet<u32>) -> Result<Self> {
        let env = TokenizerBytes::new(tokenizer, stop_ids)?;
        let env: TokEnv = Arc::new(env);
        let mut factory = ParserFactory::new_simple(&env)?;
        // Warnings and errors come back through the matcher, not stderr.
        factory.set_stderr_log_level(0);
        Ok(Self { factory })
    }

    /// A fresh matcher for `constraint`. Errors describe what is wrong with it (an
    /// invalid schema, regular expression or grammar).
    pub fn compile(&self, constraint: &Constraint) -> Result<TokenMatcher> {
        constraint.validate_shape().map_err(|e| anyhow!(e))?;
        let grammar = top_level_grammar(constraint)?;
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| anyhow!("invalid {}: {e}", constraint.kind()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(error) = matcher.get_error() {
            return Err(anyhow!("invalid {}: {error}", constraint.kind()));
        }
        Ok(TokenMatcher { matcher })
    }
}

fn top_level_grammar(constraint: &Constraint) -> Result<TopLevelGrammar> {
    Ok(match constraint {
        Constraint::JsonObject | Constraint::JsonSchema { .. } => {
            let mut schema = constraint.json_schema().expect("a JSON constraint");
            if let serde_json::Value::Bool(allowed) = schema {
                // `true` allows any value, `false` nothing.
                schema = if allowed {
                    serde_json::json!({})
                } else {
                    serde_json::json!({"not": {}})
                };
            }
            if let Some(object) = schema.as_object_mut() {
                object
                    .entry("x-guidance")
                    .or_insert_with(|| serde_json::from_str(JSON_LAYOUT).expect("valid JSON"));
            }
            TopLevelGrammar::from_json_schema(schema)
        }
        Constraint::Regex { pattern } => TopLevelGrammar::from_regex(pattern),
        Constraint::Choice { options } => {
            TopLevelGrammar::from_regex(&Constraint::choice_pattern(options))
        }
        Constraint::Grammar { lark } => TopLevelGrammar::from_lark(lark.clone()),
    })
}

/// Checks finished texts against regex, choice and grammar constraints where no
/// model tokenizer is at hand (the replies of remote servers): the vocabulary is the
/// 256 bytes plus an end token, and the text is fed byte by byte.
pub struct TextChecker {
    compiler: ConstraintCompiler,
}

impl TextChecker {
    /// A checker over the byte vocabulary; fails only if llguidance cannot set it up.
    pub fn new() -> Result<Self> {
        let env: TokEnv = Arc::new(ByteVocabulary::new());
        let mut factory = ParserFactory::new_simple(&env)?;
        factory.set_stderr_log_level(0);
        Ok(Self {
            compiler: ConstraintCompiler { factory },
        })
    }

    /// `Ok` when `text` is a complete member of the constraint's language; otherwise
    /// where it goes wrong. JSON constraints are not checked here (a JSON Schema
    /// validator reads them with any whitespace).
    pub fn check(&self, constraint: &Constraint, text: &str) -> Result<(), String> {
        let mut matcher = self
            .compiler
            .compile(constraint)
            .map_err(|e| format!("{e:#}"))?;
        for (at, byte) in text.bytes().enumerate() {
            let step = matcher.advance(u32::from(byte)).map_err(|_| {
                let mut cut = at;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                let shown = tail_chars(&text[..cut], 20);
                format!(
                    "the {} does not allow byte {at} ({:?}) after \"…{shown}\"",
                    constraint.kind(),
                    byte as char
                )
            })?;
            if step == MatchStep::Complete && at + 1 < text.len() {
                return Err(format!(
                    "the {} is complete after byte {at}; the text goes on",
                    constraint.kind()
                ));
            }
        }
        if matcher.is_accepting() {
            Ok(())
        } else {
            Err(format!(
                "the text ends before the {} is complete",
                constraint.kind()
            ))
        }
    }
}

/// The last `n` characters of `text`.
fn tail_chars(text: &str, n: usize) -> &str {
    let start = text
        .char_indices()
        .rev()
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    &text[start..]
}

/// One token per byte, and token 256 as the end of text.
struct ByteVocabulary {
    trie: TokTrie,
}

impl ByteVocabulary {
    fn new() -> Self {
        let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut end = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        end.extend_from_slice(b"<end>");
        words.push(end);
        let info = TokRxInfo::new(words.len() as u32, 256);
        Self {
            trie: TokTrie::from(&info, &words),
        }
    }
}

impl TokenizerEnv for ByteVocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, bytes: &[u8]) -> Vec<TokenId> {
        bytes.iter().map(|&b| u32::from(b)).collect()
    }
}

/// Where one sequence stands in its constraint's language.
pub struct TokenMatcher {
    matcher: Matcher,
}

/// What the constraint says after a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchStep {
    /// More text may (or must) follow.
    Continue,
    /// The text is complete and nothing may follow: the sequence ends here.
    Complete,
}

impl TokenMatcher {
    /// An independent copy in the same state (for another sequence with the same
    /// constraint, without compiling it again).
    pub fn fork(&self) -> Self {
        Self {
            matcher: self.matcher.deep_clone(),
        }
    }

    /// Sets the logits of tokens the constraint forbids to −∞ (`logits` may be longer
    /// than the vocabulary: padding rows of the embedding are forbidden too). Fails
    /// when the matcher is in an error state.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let allowed = self
            .matcher
            .compute_mask()
            .map_err(|e| anyhow!("the constraint failed: {e}"))?;
        let vocab = allowed.len().min(logits.len());
        for (id, logit) in logits[..vocab].iter_mut().enumerate() {
            if !allowed.is_allowed(id as TokenId) {
                *logit = f32::NEG_INFINITY;
            }
        }
        logits[vocab..].fill(f32::NEG_INFINITY);
        Ok(())
    }

    /// Advances past a generated (non-stop) token.
    pub fn advance(&mut self, token: u32) -> Result<MatchStep> {
        self.matcher
            .consume_token(token)
            .map_err(|e| anyhow!("the constraint rejected token {token}: {e}"))?;
        Ok(if self.matcher.is_stopped() {
            MatchStep::Complete
        } else {
            MatchStep::Continue
        })
    }

    /// Whether the text so far is a complete member of the language.
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false)
    }
}

/// The tokenizer as llguidance sees it: the bytes of each token in a trie, and a way to
/// tokenize text (used for fixed strings a grammar forces).
struct TokenizerBytes {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerBytes {
    fn new(tokenizer: &Tokenizer, stop_ids: &HashSet<u32>) -> Result<Self> {
        // Special tokens come back prefixed with 0xFF (no UTF-8 text contains it), so
        // text never matches them.
        let mut words = llguidance::token_bytes_from_tokenizer_json(tokenizer.to_json())
            .map_err(|e| anyhow!("cannot read the tokens' bytes: {e}"))?;
        words.resize(tokenizer.vocab_size().max(words.len()), Vec::new());
        let mut stops: Vec<u32> = stop_ids
            .iter()
            .copied()
            .filter(|&id| (id as usize) < words.len())
            .collect();
        stops.sort_unstable();
        let first_stop = *stops.first().ok_or_else(|| {
            anyhow!("the model has no end-of-sequence token to end a constrained text with")
        })?;
        let info = TokRxInfo::new(words.len() as u32, first_stop);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&stops);
        Ok(Self {
            trie,
            tokenizer: tokenizer.clone(),
        })
    }
}

impl TokenizerEnv for TokenizerBytes {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, bytes: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(bytes) {
            Ok(text) => self
                .tokenizer
                .encode(text)
                .unwrap_or_else(|_| self.trie.greedy_tokenize(bytes)),
            Err(_) => self.trie.greedy_tokenize(bytes),
        }
    }
}
