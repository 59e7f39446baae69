//! Resumable units of work over [`seqit_core::journal`]: each finished unit is one
//! journal line, keyed by its id, so a killed run resumes with the rest.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use seqit_core::journal::Journal;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Opens (or creates) the journal at `path` and returns the units it holds by key (the
/// last line of a key wins). Lines failing `keep` (written with other settings) and
/// lines that are not a `T` are passed over.
pub fn open_journal<T: DeserializeOwned>(
    path: &Path,
    key: impl Fn(&T) -> String,
    keep: impl Fn(&T) -> bool,
) -> Result<(Journal, HashMap<String, T>)> {
    let (journal, resumed) =
        Journal::open(path, None).with_context(|| format!("cannot open `{}`", path.display()))?;
    let entries = resumed
        .entries
        .into_iter()
        .filter_map(|value| serde_json::from_value::<T>(value).ok())
        .filter(|entry| keep(entry))
        .map(|entry| (key(&entry), entry))
        .collect();
    Ok((journal, entries))
}

/// The state of one item in a teacher job's journal: keyed by the item's id and written
/// under a fingerprint of the settings that decided it.
pub trait JournaledItem: DeserializeOwned {
    /// The id of the item.
    fn id(&self) -> &str;
    /// The fingerprint of the settings the state was written with.
    fn fingerprint(&self) -> &str;
}

/// Implements [`JournaledItem`] for a state struct from its `id` and `fingerprint`
/// fields.
macro_rules! journaled_item {
    ($state:ty) => {
        impl $crate::state::JournaledItem for $state {
            fn id(&self) -> &str {
                &self.id
            }

            fn fingerprint(&self) -> &str {
                &self.fingerprint
            }
        }
    };
}
pub(crate) use journaled_item;

/// Opens the journal of item states at `path`, keeping only states written with
/// `fingerprint` (a run with other settings starts those items again).
pub fn open_item_states<T: JournaledItem>(
    path: &Path,
    fingerprint: &str,
) -> Result<(Journal, HashMap<String, T>)> {
    open_journal::<T>(
        path,
        |s| s.id().to_string(),
        |s| s.fingerprint() == fingerprint,
    )
}

/// Appends one finished unit to `journal`.
fn append<T: Serialize>(journal: &Journal, entry: &T) -> Result<()> {
    journal
        .append(entry)
        .with_context(|| format!("cannot append to `{}`", journal.path().display()))
}

/// Replaces `journal` with exactly `entries` (e.g. to drop superseded lines once a run is
/// complete).
pub fn compact<T: Serialize>(journal: &Journal, entries: &[&T]) -> Result<()> {
    journal
        .compact(entries)
        .with_context(|| format!("cannot rewrite `{}`", journal.path().display()))
}

/// Runs `work` on every pending unit, at most `concurrency` at once; each finished entry
/// is appended to `journal` (so a kill loses nothing finished), handed to `finished`,
/// and counted in `progress` (whose stage the caller started). A unit that fails does
/// not stop the others; if any failed, the error says how many, that the finished ones
/// are saved, and the first failure.
pub async fn run_journaled<P, T, Fut>(
    journal: &Journal,
    pending: Vec<P>,
    concurrency: usize,
    progress: &dyn seqit_core::progress::Progress,
    work: impl Fn(P) -> Fut,
    mut finished: impl FnMut(T),
) -> Result<()>
where
    T: Serialize,
    Fut: std::future::Future<Output = Result<T>>,
{
    use futures::stream::{self, StreamExt};
    let total = pending.len();
    let mut results = stream::iter(pending)
        .map(work)
        .buffer_unordered(concurrency.max(1));
    let mut failures = Vec::new();
    while let Some(result) = results.next().await {
        match result {
            Ok(entry) => {
                append(journal, &entry)?;
                finished(entry);
                progress.advance(1);
            }
            Err(error) => failures.push(error),
        }
    }
    drop(results);
    progress.finish();
    if let Some(first) = failures.first() {
        anyhow::bail!(
            "{} of {total} pending items failed (the finished ones are saved in `{}`; run the same command again to retry the rest)\nfirst failure: {first:#}",
            failures.len(),
            journal.path().display()
        );
    }
    Ok(())
}

/// The 16-hex-digit digest of the settings that decide a run's results: journal lines
/// written with other settings are not reused.
pub fn settings_fingerprint(decided: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(decided.to_string().as_bytes()))[..16].to_string()
}

/// Refuses a second unit with the same id: journals key their work by id. `what` names
/// the units in the message ("records", "items"); positions are 1-based.
pub fn check_unique_ids<'a>(ids: impl IntoIterator<Item = &'a str>, what: &str) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, id) in ids.into_iter().enumerate() {
        if let Some(first) = seen.insert(id, index) {
            anyhow::bail!(
                "{what} {} and {} have the same id `{id}`; the run keys its work by id\nhint: give every one a unique `id`, or remove the ids to use positions",
                first + 1,
                index + 1
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_unique_and_fingerprints_follow_the_settings() {
        assert!(check_unique_ids(["a", "b", "c"], "items").is_ok());
        let error = check_unique_ids(["a", "b", "a"], "records")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("records 1 and 3 have the same id `a`"),
            "{error}"
        );
        let a = settings_fingerprint(&serde_json::json!({"seed": 1}));
        assert_eq!(a.len(), 16);
        assert_eq!(a, settings_fingerprint(&serde_json::json!({"seed": 1})));
        assert_ne!(a, settings_fingerprint(&serde_json::json!({"seed": 2})));
    }

    /// Over the core journal: the last line of a key wins, lines of other settings
    /// (`keep`) are passed over.
    #[test]
    fn torn_tails_are_cut_and_last_lines_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, "[\"a\",1]\n[\"b\",2]\n[\"a\",3]\n[\"c\",").unwrap();
        type E = (String, u32);
        let (journal, entries) = open_journal::<E>(&path, |e| e.0.clone(), |e| e.1 != 2).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries["a"].1, 3);
        journal.append(&("d".to_string(), 4)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[\"a\",1]\n[\"b\",2]\n[\"a\",3]\n[\"d\",4]\n"
        );
        compact(&journal, &[&("d".to_string(), 4)]).unwrap();
        journal.append(&("e".to_string(), 5)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[\"d\",4]\n[\"e\",5]\n"
        );
    }
}
