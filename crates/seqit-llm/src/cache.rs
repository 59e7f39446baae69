//! The persistent request cache: one SQLite file (WAL mode) mapping a [`CacheKey`] to
//! the sample that answered it.
//!
//! Every answer is committed as soon as it arrives, so a run that is killed (SIGKILL,
//! Ctrl-C, power loss aside) and started again re-asks nothing that was answered.
//! Failures are never stored. The key hashes everything that determines an answer: the
//! endpoint's identity (its URL without credentials, query or fragment, so two servers
//! that serve the same model name do not share answers; left out for the local engine
//! and when a caller shares answers across endpoints on purpose), the endpoint kind,
//! model, prompt, every sampling parameter including the seed, the sample index and the
//! caller's prompt-template version. Never the API key.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use seqit_core::{FinishReason, Prompt, SamplingParams};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::LlmError;
use crate::types::{EndpointKind, Sample};

/// Version of the key derivation; changing what goes into a key changes it.
const KEY_FORMAT: &str = "seqit-llm-cache-v1";

/// SHA-256 of the canonical JSON of everything that determines an answer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

#[derive(Serialize)]
struct KeyMaterial<'a> {
    format: &'static str,
    /// Absent (not null) when shared, so shared keys equal those of earlier versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<&'a str>,
    kind: EndpointKind,
    model: &'a str,
    prompt: &'a Prompt,
    params: &'a SamplingParams,
    sample: u32,
    prompt_version: &'a str,
}

impl CacheKey {
    /// The key of one sample. `endpoint` is the answering endpoint's identity
    /// ([`Llm::cache_scope`](crate::Llm::cache_scope)), `None` for answers shared by
    /// every endpoint of the model (and for the local engine).
    pub fn new(
        endpoint: Option<&str>,
        kind: EndpointKind,
        model: &str,
        prompt: &Prompt,
        params: &SamplingParams,
        sample: u32,
        prompt_version: &str,
    ) -> Self {
        let material = KeyMaterial {
            format: KEY_FORMAT,
            endpoint,
            kind,
            model,
            prompt,
            params,
            sample,
            prompt_version,
        };
        let json = serde_json::to_vec(&material).expect("key material serializes");
        Self(Sha256::digest(&json).into())
    }

    /// The 32 bytes of the hash, as stored in the cache file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as 64 lowercase hex digits (Batch API `custom_id`s hold it);
    /// [`CacheKey::from_hex`] reads it back.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses the 64 hex digits written by [`CacheKey::to_hex`].
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({})", &self.to_hex()[..16])
    }
}

/// An answer as stored: the sample and the model and endpoint kind it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAnswer {
    /// The model name the answer came from.
    pub model: String,
    /// The endpoint kind (chat or completions) that answered.
    pub kind: EndpointKind,
    /// The stored sample, as first answered.
    pub sample: Sample,
}

/// The cache file. Safe to share between tasks; each write is its own transaction.
pub struct Cache {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("path", &self.path).finish()
    }
}

fn cache_error(path: &Path, what: &str, error: rusqlite::Error) -> LlmError {
    LlmError::Cache(format!("{what} `{}`: {error}", path.display()))
}

impl Cache {
    /// Opens the cache at `path`, creating the file (and its directory) if needed.
    pub fn open(path: &Path) -> Result<Self, LlmError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                LlmError::Cache(format!("cannot create directory `{}`: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(|e| cache_error(path, "cannot open", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| cache_error(path, "cannot configure", e))?;
        // WAL: readers never block the writer and a commit is one append; NORMAL sync
        // keeps every commit across a killed process (only power loss can drop the
        // last few).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| cache_error(path, "cannot switch to WAL mode", e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| cache_error(path, "cannot configure", e))?;
        // Reads through a memory map and a larger page cache: a resumed run looks up
        // every answer once.
        conn.pragma_update(None, "mmap_size", 1i64 << 30)
            .map_err(|e| cache_error(path, "cannot configure", e))?;
        conn.pragma_update(None, "cache_size", -32_768)
            .map_err(|e| cache_error(path, "cannot configure", e))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS answers (
                key BLOB PRIMARY KEY NOT NULL,
                model TEXT NOT NULL,
                kind TEXT NOT NULL,
                sample INTEGER NOT NULL,
                text TEXT NOT NULL,
                finish_reason TEXT NOT NULL,
                prompt_tokens INTEGER,
                completion_tokens INTEGER,
                created_at INTEGER NOT NULL,
                details TEXT
            ) WITHOUT ROWID;",
        )
        .map_err(|e| cache_error(path, "cannot create the table in", e))?;
        // Caches written before `details` existed get the column (NULL for old rows).
        let has_details = conn
            .prepare("SELECT 1 FROM pragma_table_info('answers') WHERE name = 'details'")
            .and_then(|mut s| s.exists([]))
            .map_err(|e| cache_error(path, "cannot read", e))?;
        if !has_details {
            conn.execute_batch("ALTER TABLE answers ADD COLUMN details TEXT;")
                .map_err(|e| cache_error(path, "cannot upgrade", e))?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// Where the SQLite file of the cache is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored answer for `key`, marked as cached.
    pub fn get(&self, key: &CacheKey) -> Result<Option<CachedAnswer>, LlmError> {
        Ok(self.get_many(std::slice::from_ref(key))?.pop().flatten())
    }

    /// The stored answers for `keys`, in order, read in one transaction (one lock of
    /// the file instead of one per key).
    pub fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<CachedAnswer>>, LlmError> {
        let mut conn = self.conn.lock().expect("cache lock");
        let read = |e| cache_error(&self.path, "cannot read", e);
        let tx = conn.transaction().map_err(read)?;
        let mut answers = Vec::with_capacity(keys.len());
        {
            let mut statement = tx
                .prepare_cached(
                    "SELECT model, kind, sample, text, finish_reason, prompt_tokens, completion_tokens,
                            details
                     FROM answers WHERE key = ?1",
                )
                .map_err(read)?;
            for key in keys {
                let answer = statement
                    .query_row([key.as_bytes().as_slice()], row_answer)
                    .optional()
                    .map_err(read)?;
                answers.push(answer);
            }
        }
        tx.commit().map_err(read)?;
        Ok(answers)
    }

    /// Stores (or replaces) the answer for `key`, committed before returning.
    pub fn put(&self, key: &CacheKey, answer: &CachedAnswer) -> Result<(), LlmError> {
        let conn = self.conn.lock().expect("cache lock");
        insert(&conn, key, answer).map_err(|e| cache_error(&self.path, "cannot write to", e))
    }

    /// Stores many answers in one transaction (Batch API imports).
    pub fn put_many(&self, answers: &[(CacheKey, CachedAnswer)]) -> Result<(), LlmError> {
        let mut conn = self.conn.lock().expect("cache lock");
        let tx = conn
            .transaction()
            .map_err(|e| cache_error(&self.path, "cannot write to", e))?;
        for (key, answer) in answers {
            insert(&tx, key, answer).map_err(|e| cache_error(&self.path, "cannot write to", e))?;
        }
        tx.commit()
            .map_err(|e| cache_error(&self.path, "cannot write to", e))
    }

    /// Number of stored answers.
    pub fn len(&self) -> Result<u64, LlmError> {
        let conn = self.conn.lock().expect("cache lock");
        conn.query_row("SELECT COUNT(*) FROM answers", [], |row| {
            row.get::<_, i64>(0)
        })
        .map(|n| n as u64)
        .map_err(|e| cache_error(&self.path, "cannot read", e))
    }

    /// Whether the cache holds no answers.
    pub fn is_empty(&self) -> Result<bool, LlmError> {
        Ok(self.len()? == 0)
    }
}

fn row_answer(row: &rusqlite::Row<'_>) -> rusqlite::Result<CachedAnswer> {
    let kind: String = row.get(1)?;
    let finish: String = row.get(4)?;
    // Unreadable details (written by a newer seqit) are dropped, not fatal.
    let details: Details = row
        .get::<_, Option<String>>(7)?
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    Ok(CachedAnswer {
        model: row.get(0)?,
        kind: if kind == "completions" {
            EndpointKind::Completions
        } else {
            EndpointKind::Chat
        },
        sample: Sample {
            index: row.get(2)?,
            text: row.get(3)?,
            finish_reason: if finish == "length" {
                FinishReason::Length
            } else {
                FinishReason::Stop
            },
            prompt_tokens: row.get::<_, Option<i64>>(5)?.map(|t| t as u64),
            completion_tokens: row.get::<_, Option<i64>>(6)?.map(|t| t as u64),
            cached: true,
            logprobs: details.logprobs,
            constraint_met: details.constraint_met,
        },
    })
}

/// What a sample has beyond its text and counts, stored as JSON in `details`.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Details {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logprobs: Option<Vec<seqit_core::TokenLogprob>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    constraint_met: Option<bool>,
}

impl Details {
    fn of(sample: &Sample) -> Option<String> {
        let details = Details {
            logprobs: sample.logprobs.clone(),
            constraint_met: sample.constraint_met,
        };
        (details.logprobs.is_some() || details.constraint_met.is_some())
            .then(|| serde_json::to_string(&details).expect("details serialize"))
    }
}

fn insert(conn: &Connection, key: &CacheKey, answer: &CachedAnswer) -> rusqlite::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut statement = conn.prepare_cached(
        "INSERT OR REPLACE INTO answers
         (key, model, kind, sample, text, finish_reason, prompt_tokens, completion_tokens, created_at,
          details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let sample = &answer.sample;
    statement.execute(params![
        key.as_bytes().as_slice(),
        answer.model,
        answer.kind.as_str(),
        sample.index,
        sample.text,
        match sample.finish_reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        },
        sample.prompt_tokens.map(|t| t as i64),
        sample.completion_tokens.map(|t| t as i64),
        now,
        Details::of(sample),
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use seqit_core::ChatMessage;

    use super::*;

    fn prompt() -> Prompt {
        Prompt::Chat(vec![ChatMessage::user("hi")])
    }

    #[test]
    fn keys_separate_everything_that_changes_an_answer() {
        let params = SamplingParams::greedy(8);
        let base = CacheKey::new(None, EndpointKind::Chat, "m", &prompt(), &params, 0, "v1");
        assert_eq!(
            base,
            CacheKey::new(None, EndpointKind::Chat, "m", &prompt(), &params, 0, "v1")
        );
        let mut seeded = params.clone();
        seeded.seed = 1;
        let others = [
            CacheKey::new(
                None,
                EndpointKind::Completions,
                "m",
                &prompt(),
                &params,
                0,
                "v1",
            ),
            CacheKey::new(None, EndpointKind::Chat, "m2", &prompt(), &params, 0, "v1"),
            CacheKey::new(
                None,
                EndpointKind::Chat,
                "m",
                &Prompt::Text("hi".into()),
                &params,
                0,
                "v1",
            ),
            CacheKey::new(None, EndpointKind::Chat, "m", &prompt(), &seeded, 0, "v1"),
            CacheKey::new(None, EndpointKind::Chat, "m", &prompt(), &params, 1, "v1"),
            CacheKey::new(None, EndpointKind::Chat, "m", &prompt(), &params, 0, "v2"),
            CacheKey::new(
                None,
                EndpointKind::Chat,
                "m",
                &Prompt::Chat(vec![
                    ChatMessage::user("hi").with_image("data:image/png;base64,AA")
                ]),
                &params,
                0,
                "v1",
            ),
        ];
        for other in others {
            assert_ne!(base, other);
        }
        // Two endpoints keep separate answers; a shared key is neither of them.
        let at = |url| {
            CacheKey::new(
                Some(url),
                EndpointKind::Chat,
                "m",
                &prompt(),
                &params,
                0,
                "v1",
            )
        };
        assert_ne!(at("http://a:1/v1"), at("http://b:1/v1"));
        assert_ne!(at("http://a:1/v1"), base);
        assert_eq!(at("http://a:1/v1"), at("http://a:1/v1"));
        assert_eq!(CacheKey::from_hex(&base.to_hex()), Some(base));
        assert_eq!(CacheKey::from_hex("zz"), None);
    }

    #[test]
    fn answers_persist_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cache.sqlite");
        let key = CacheKey::new(
            None,
            EndpointKind::Chat,
            "m",
            &prompt(),
            &SamplingParams::greedy(8),
            0,
            "",
        );
        let answer = CachedAnswer {
            model: "m".into(),
            kind: EndpointKind::Chat,
            sample: Sample {
                index: 0,
                text: "hello".into(),
                finish_reason: FinishReason::Length,
                prompt_tokens: Some(3),
                completion_tokens: None,
                cached: false,
                logprobs: None,
                constraint_met: Some(true),
            },
        };
        {
            let cache = Cache::open(&path).unwrap();
            assert_eq!(cache.get(&key).unwrap(), None);
            cache.put(&key, &answer).unwrap();
        }
        let cache = Cache::open(&path).unwrap();
        let got = cache.get(&key).unwrap().unwrap();
        assert_eq!(got.sample.text, "hello");
        assert_eq!(got.sample.finish_reason, FinishReason::Length);
        assert_eq!(got.sample.prompt_tokens, Some(3));
        assert!(got.sample.cached);
        assert_eq!(cache.len().unwrap(), 1);
    }
}
