//! Tokenizers from a Hugging Face `tokenizer.json` or rebuilt from GGUF metadata.
//!
//! A GGUF file stores the vocabulary, merges and token types but not the pre-tokenizer;
//! its `tokenizer.ggml.pre` name says which one llama.cpp uses. seqit rebuilds the
//! equivalent `tokenizer.json` document, which is also what `seqit model convert` writes.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use seqit_model::gguf::GgufFile;
use serde_json::{json, Value as Json};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Per token, the `[start, end)` range of characters it came from.
pub type CharSpans = Vec<(usize, usize)>;

/// A text tokenizer plus the special tokens generation needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The `tokenizer.json` document the tokenizer was built from.
    json: Json,
    /// The beginning-of-sequence token's text, from `tokenizer_config.json` or GGUF
    /// metadata.
    pub bos_token: Option<String>,
    /// The end-of-sequence token's text, from `tokenizer_config.json` or GGUF metadata.
    pub eos_token: Option<String>,
    /// Whether encoding a prompt should start with the BOS token.
    pub add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl Tokenizer {
    fn from_json(
        json: Json,
        bos: Option<String>,
        eos: Option<String>,
        add_bos: bool,
    ) -> Result<Self> {
        let inner: tokenizers::Tokenizer = serde_json::from_value(json.clone())
            .map_err(|e| anyhow!("invalid tokenizer definition: {e}"))?;
        Ok(Self {
            inner,
            json,
            bos_token: bos,
            eos_token: eos,
            add_bos,
        })
    }

    /// Loads `tokenizer.json` (and special-token settings from `tokenizer_config.json`
    /// when present) from a Hugging Face model directory.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let json: Json = serde_json::from_str(&text)
            .with_context(|| format!("`{}` is not valid JSON", path.display()))?;
        let config = read_tokenizer_config(dir)?;
        let token_field = |key: &str| -> Option<String> {
            match config.get(key)? {
                Json::String(s) => Some(s.clone()),
                Json::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
                _ => None,
            }
        };
        let bos = token_field("bos_token");
        let eos = token_field("eos_token");
        let add_bos = config
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        Self::from_json(json, bos, eos, add_bos).with_context(|| format!("in `{}`", path.display()))
    }

    /// Rebuilds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let where_ = || format!("`{}`", file.path().display());
        let tokens = string_array(file, "tokenizer.ggml.tokens")?
            .with_context(|| format!("{} has no `tokenizer.ggml.tokens`", where_()))?;
        let types = int_array(file, "tokenizer.ggml.token_type")?.unwrap_or_default();
        let model = file.string("tokenizer.ggml.model").unwrap_or("gpt2");
        let pre = file.string("tokenizer.ggml.pre").unwrap_or("default");
        let special_id = |key: &str| file.uint(key).map(|v| v as usize);
        let token_at = |id: Option<usize>| id.and_then(|i| tokens.get(i).cloned());
        let bos = token_at(special_id("tokenizer.ggml.bos_token_id"));
        let eos = token_at(special_id("tokenizer.ggml.eos_token_id"));

        let added_tokens: Vec<Json> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                matches!(types.get(*i), Some(&TOKEN_TYPE_CONTROL) | Some(&TOKEN_TYPE_USER_DEFINED))
            })
            .map(|(i, t)| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                       "normalized": false, "special": types.get(i) == Some(&TOKEN_TYPE_CONTROL)})
            })
            .collect();
        let vocab: serde_json::Map<String, Json> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();

        let (document, default_add_bos) = match model {
            "gpt2" => {
                let merges = string_array(file, "tokenizer.ggml.merges")?
                    .with_context(|| format!("{} has a BPE tokenizer without `tokenizer.ggml.merges`", where_()))?;
                let merges: Vec<Json> = merges
                    .iter()
                    .map(|m| {
                        let (a, b) = m.split_once(' ').unwrap_or((m, ""));
                        json!([a, b])
                    })
                    .collect();
                let byte_level = |use_regex: bool| {
                    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
                };
                let split = |pattern: &str| {
                    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
                };
                let pre_tokenizer = match pre {
                    "llama3" | "llama-bpe" | "llama-v3" => {
                        json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_PATTERN), byte_level(false)]})
                    }
                    "qwen2" => {
                        json!({"type": "Sequence", "pretokenizers": [split(QWEN2_PATTERN), byte_level(false)]})
                    }
                    "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
                        {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
                    "gpt2" | "default" | "gpt-2" => byte_level(true),
                    other => bail!(
                        "{}: unsupported pre-tokenizer `{other}` (supported: default, gpt2, smollm, llama-bpe, qwen2)",
                        where_()
                    ),
                };
                let ignore_merges = matches!(pre, "llama3" | "llama-bpe" | "llama-v3");
                let doc = json!({
                    "version": "1.0", "truncation": null, "padding": null,
                    "added_tokens": added_tokens,
                    "normalizer": null,
                    "pre_tokenizer": pre_tokenizer,
                    "post_processor": null,
                    "decoder": byte_level(true),
                    "model": {"type": "BPE", "dropout": null, "unk_token": null,
                              "continuing_subword_prefix": null, "end_of_word_suffix": null,
                              "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                              "vocab": vocab, "merges": merges}
                });
                (doc, false)
            }
            "llama" => {
                let scores = float_array(file, "tokenizer.ggml.scores")?.unwrap_or_default();
                let merges = merges_from_scores(&tokens, &scores, &types);
                let unk = token_at(special_id("tokenizer.ggml.unknown_token_id"));
                let doc = json!({
                    "version": "1.0", "truncation": null, "padding": null,
                    "added_tokens": added_tokens,
                    "normalizer": {"type": "Sequence", "normalizers": [
                        {"type": "Prepend", "prepend": "▁"},
                        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
                    "pre_tokenizer": null,
                    "post_processor": null,
                    "decoder": {"type": "Sequence", "decoders": [
                        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                        {"type": "ByteFallback"}, {"type": "Fuse"},
                        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
                    "model": {"type": "BPE", "dropout": null, "unk_token": unk,
                              "continuing_subword_prefix": null, "end_of_word_suffix": null,
                              "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                              "vocab": vocab, "merges": merges}
                });
                (doc, true)
            }
            other => bail!(
                "{}: unsupported tokenizer model `{other}` (supported: gpt2-style BPE and llama SentencePiece)",
                where_()
            ),
        };
        let add_bos = match file.metadata().get("tokenizer.ggml.add_bos_token") {
            Some(Value::Bool(b)) => *b,
            _ => default_add_bos,
        };
        Self::from_json(document, bos, eos, add_bos).with_context(where_)
    }

    /// The `tokenizer.json` document.
    pub fn to_json(&self) -> &Json {
        &self.json
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token given by its text in the vocabulary, if it has one.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of a token id in the vocabulary, if the id exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Encodes text as written, recognising special tokens but adding none.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("tokenization failed: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes text like [`Tokenizer::encode`] and returns, per token, the range of
    /// characters (not bytes) of `text` it came from.
    pub fn encode_with_char_offsets(&self, text: &str) -> Result<(Vec<u32>, CharSpans)> {
        let encoding = self
            .inner
            .encode_char_offsets(text, false)
            .map_err(|e| anyhow!("tokenization failed: {e}"))?;
        Ok((encoding.get_ids().to_vec(), encoding.get_offsets().to_vec()))
    }

    /// Encodes a prompt, starting it with BOS when the model expects one and the text
    /// does not already begin with it (chat templates often write it themselves).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        if self.add_bos {
            if let Some(bos) = self.bos_token.as_deref().and_then(|t| self.token_to_id(t)) {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
        }
        Ok(ids)
    }

    /// Decodes token ids to text, leaving out special tokens when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| anyhow!("detokenization failed: {e}"))
    }

    /// A streaming decoder that yields text as soon as it forms whole characters.
    pub fn decode_stream(&self) -> TextStream<'_> {
        TextStream {
            inner: self.inner.decode_stream(true),
        }
    }

    /// Ids of all special (control) tokens.
    pub fn special_ids(&self) -> HashSet<u32> {
        self.inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect()
    }
}

type InnerDecodeStream<'a> = tokenizers::tokenizer::DecodeStream<
    'a,
    tokenizers::ModelWrapper,
    tokenizers::NormalizerWrapper,
    tokenizers::PreTokenizerWrapper,
    tokenizers::PostProcessorWrapper,
    tokenizers::DecoderWrapper,
>;

/// Incremental detokenizer (special tokens are skipped).
pub struct TextStream<'a> {
    inner: InnerDecodeStream<'a>,
}

impl TextStream<'_> {
    /// Feeds the next token id; returns the text that became complete with it, if any.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.inner
            .step(id)
            .map_err(|e| anyhow!("detokenization failed: {e}"))
    }
}

pub(crate) fn read_tokenizer_config(dir: &Path) -> Result<Json> {
    let path = dir.join("tokenizer_config.json");
    if !path.exists() {
        return Ok(json!({}));
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("`{}` is not valid JSON", path.display()))
}

/// The array under `key` (`None` when absent), each element converted by `convert`;
/// an element it refuses is an error naming `what` was expected.
fn array_of<T>(
    file: &GgufFile,
    key: &str,
    what: &str,
    convert: impl Fn(&Value) -> Option<T>,
) -> Result<Option<Vec<T>>> {
    let items = match file.metadata().get(key) {
        None => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => bail!(
            "`{}`: metadata `{key}` is not an array",
            file.path().display()
        ),
    };
    items
        .iter()
        .map(|v| {
            convert(v)
                .with_context(|| format!("`{}`: `{key}` holds a non-{what}", file.path().display()))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn string_array(file: &GgufFile, key: &str) -> Result<Option<Vec<String>>> {
    array_of(file, key, "string", |v| match v {
        Value::String(s) => Some(s.clone()),
        _ => None,
    })
}

fn int_array(file: &GgufFile, key: &str) -> Result<Option<Vec<i64>>> {
    array_of(file, key, "integer", |v| match v {
        Value::I8(x) => Some(i64::from(*x)),
        Value::U8(x) => Some(i64::from(*x)),
        Value::I16(x) => Some(i64::from(*x)),
        Value::U16(x) => Some(i64::from(*x)),
        Value::I32(x) => Some(i64::from(*x)),
        Value::U32(x) => Some(i64::from(*x)),
        Value::I64(x) => Some(*x),
        _ => None,
    })
}

fn float_array(file: &GgufFile, key: &str) -> Result<Option<Vec<f32>>> {
    array_of(file, key, "number", |v| match v {
        Value::F32(x) => Some(*x),
        Value::F64(x) => Some(*x as f32),
        _ => None,
    })
}

/// SentencePiece vocabularies in GGUF carry scores instead of merges. Every normal token
/// that splits into two vocabulary tokens yields a merge, ranked by the merged token's
/// score (higher merges first), which is how SentencePiece's BPE picks pairs.
fn merges_from_scores(tokens: &[String], scores: &[f32], types: &[i64]) -> Vec<Json> {
    let index: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        if types.get(id).is_some_and(|t| *t != 1) {
            continue; // only normal tokens are built by merges
        }
        let score = scores.get(id).copied().unwrap_or(0.0);
        for (split, _) in token.char_indices().skip(1) {
            let (a, b) = token.split_at(split);
            if let (Some(&ia), Some(&ib)) = (index.get(a), index.get(b)) {
                merges.push((score, id, ia, ib));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.2.cmp(&y.2)).then(x.3.cmp(&y.3)));
    merges
        .into_iter()
        .map(|(_, _, a, b)| json!([tokens[a], tokens[b]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file;

    /// A SentencePiece-style vocabulary as llama.cpp stores it (scores, byte tokens).
    fn write_spm_gguf(path: &Path) -> Vec<String> {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2i32, 3, 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        let pieces = [
            "▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "ll", "▁he", "llo", "▁hello", "▁w", "or",
            "▁wor", "ld", "▁world",
        ];
        for p in pieces {
            tokens.push(p.to_string());
            types.push(1);
        }
        // Longer pieces score higher, so they are merged first.
        let scores: Vec<Value> = tokens
            .iter()
            .map(|t| Value::F32(t.chars().count() as f32))
            .collect();
        let metadata = [
            ("tokenizer.ggml.model", Value::String("llama".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(types.into_iter().map(Value::I32).collect()),
            ),
            ("tokenizer.ggml.scores", Value::Array(scores)),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
            ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ];
        let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(&mut std::fs::File::create(path).unwrap(), &refs, &[]).unwrap();
        tokens
    }

    #[test]
    fn sentencepiece_vocabulary_from_gguf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spm.gguf");
        let tokens = write_spm_gguf(&path);
        let tokenizer = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        let id = |t: &str| tokens.iter().position(|x| x == t).unwrap() as u32;

        assert_eq!(
            tokenizer.encode("hello world").unwrap(),
            vec![id("▁hello"), id("▁world")]
        );
        // Characters outside the vocabulary fall back to their UTF-8 bytes.
        let ids = tokenizer.encode("hi!").unwrap();
        assert_eq!(ids, vec![id("▁h"), id("<0x69>"), id("<0x21>")]);
        assert_eq!(tokenizer.decode(&ids, true).unwrap(), "hi!");
        assert_eq!(
            tokenizer
                .decode(&tokenizer.encode("héllo").unwrap(), true)
                .unwrap(),
            "héllo"
        );
        // SentencePiece models start prompts with BOS.
        assert!(tokenizer.add_bos);
        assert_eq!(
            tokenizer.encode_prompt("hello").unwrap(),
            vec![1, id("▁hello")]
        );
    }
}
