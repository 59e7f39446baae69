//! `seqit data validate`: every problem of a file, one line each, reported as it is
//! found.
//!
//! Besides what reading finds (bad JSON, wrong types, missing fields, bad UTF-8, lines
//! over the limit), a record is a problem when its id repeats an earlier one, when it
//! has no user turn, or when a user or assistant turn is empty.
//!
//! Memory stays bounded by one record (the reader streams every container but Parquet
//! row groups) plus, for the repeated-id check, a 128-bit digest and the position of
//! each distinct id: problems are handed to a callback, never collected.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;

use seqit_core::Role;

use crate::error::{Location, Problem};
use crate::format::{Format, Schema};
use crate::read::{ReadOptions, Reader};
use crate::record::Record;

/// Distinct hints kept (they are fixed texts; this only bounds a file that would
/// produce many different ones).
pub const MAX_HINTS: usize = 16;

/// What validating a file found.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The format, when it could be told.
    pub format: Option<Format>,
    /// Records read without a reading problem.
    pub records: usize,
    /// Problems found.
    pub problems: usize,
    /// Problems handed to the callback (the first `max_listed`); the rest were counted.
    pub listed: usize,
    /// Each distinct `hint:` line of the problems, once, in the order met (at most
    /// [`MAX_HINTS`]).
    pub hints: Vec<String>,
}

impl Validation {
    /// Whether the file has no problem.
    pub fn is_clean(&self) -> bool {
        self.problems == 0
    }

    /// The closing line for `path`: `Ok` with the `ok: ...` line for a clean file, else
    /// `Err` with the count, how many were listed and each hint once.
    pub fn verdict(&self, path: &Path) -> std::result::Result<String, String> {
        let path = path.display();
        if self.is_clean() {
            let format = self.format.map(|f| format!(", {f}")).unwrap_or_default();
            return Ok(format!(
                "ok: `{path}`: {} records{format}, no problems",
                self.records
            ));
        }
        let n = self.problems;
        let unlisted = if self.listed < n {
            format!(
                " ({} listed, {} more counted only; raise --max-problems to list them)",
                self.listed,
                n - self.listed
            )
        } else {
            String::new()
        };
        let hints: String = self.hints.iter().map(|h| format!("\nhint: {h}")).collect();
        let plural = if n == 1 { "" } else { "s" };
        Err(format!(
            "`{path}`: {n} problem{plural} found{unlisted}{hints}"
        ))
    }
}

/// Reads the whole file and hands each of the first `max_listed` problems to
/// `on_problem` as soon as it is found, in file order: its first line only, since its
/// `hint:` lines are gathered once each in [`Validation::hints`]. Later problems are
/// only counted.
pub fn validate(
    path: &Path,
    options: &ReadOptions,
    max_listed: usize,
    on_problem: &mut dyn FnMut(&str),
) -> Validation {
    let mut result = Validation {
        format: None,
        records: 0,
        problems: 0,
        listed: 0,
        hints: Vec::new(),
    };
    let mut report = |problem: &str| {
        result.problems += 1;
        let mut lines = problem.split("\nhint: ");
        let first = lines.next().unwrap_or_default();
        if result.listed < max_listed {
            result.listed += 1;
            on_problem(first);
        }
        for hint in lines {
            if result.hints.len() < MAX_HINTS && !result.hints.iter().any(|h| h == hint) {
                result.hints.push(hint.to_string());
            }
        }
    };
    let mut reader = match Reader::open(path, options) {
        Ok(reader) => reader,
        Err(e) => {
            for problem in e.problems() {
                report(&problem);
            }
            return result;
        }
    };
    let mut ids = SeenIds::default();
    let mut records = 0;
    while let Some(item) = reader.next() {
        let record = match item {
            Ok(record) => record,
            Err(e) => {
                for problem in e.problems() {
                    report(&problem);
                }
                continue;
            }
        };
        records += 1;
        let at = reader
            .location()
            .cloned()
            .unwrap_or_else(|| Location::file(path));
        let schema = reader.format().map_or(Schema::Messages, |f| f.schema);
        for problem in check_record(&record, schema, &at, &mut ids) {
            report(&problem.to_string());
        }
    }
    result.records = records;
    result.format = reader.format();
    result
}

/// Where each distinct id was first seen, keyed by a 128-bit digest of the id (two
/// salted SipHash passes), so that memory does not grow with the length of ids.
#[derive(Default)]
struct SeenIds(HashMap<u128, FirstSeen>);

#[derive(Clone, Copy)]
struct FirstSeen {
    line: Option<usize>,
    record: Option<usize>,
}

impl SeenIds {
    fn digest(id: &str) -> u128 {
        let half = |salt: u8| {
            // `DefaultHasher::new()` has fixed keys: the same digest for the same id.
            let mut hasher = std::hash::DefaultHasher::new();
            salt.hash(&mut hasher);
            id.hash(&mut hasher);
            hasher.finish()
        };
        (u128::from(half(1)) << 64) | u128::from(half(2))
    }

    /// The first place of `id` if it was seen before; else remembers `at`.
    fn first_or_insert(&mut self, id: &str, at: &Location) -> Option<Location> {
        let digest = Self::digest(id);
        match self.0.get(&digest) {
            Some(first) => Some(Location {
                file: at.file.clone(),
                line: first.line,
                record: first.record,
            }),
            None => {
                self.0.insert(
                    digest,
                    FirstSeen {
                        line: at.line,
                        record: at.record,
                    },
                );
                None
            }
        }
    }
}

fn check_record(record: &Record, schema: Schema, at: &Location, ids: &mut SeenIds) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |field: Option<String>, message: String| {
        problems.push(Problem {
            at: at.clone(),
            field,
            message,
        })
    };
    if let Some(id) = &record.id {
        if let Some(first) = ids.first_or_insert(&id.to_string(), at) {
            problem(Some("id".into()), format!("{id} repeats the id of {first}"));
        }
    }
    if record.user_turns() == 0 {
        problem(None, "the conversation has no user turn".into());
    }
    for (i, message) in record.messages.iter().enumerate() {
        let kind = match message.role {
            Role::User => "instruction",
            Role::Assistant => "response",
            _ => continue,
        };
        if message.content.trim().is_empty() {
            problem(
                Some(turn_field(record, schema, i)),
                format!("the {kind} is empty"),
            );
        }
    }
    problems
}

/// The field of the file that holds turn `i` of a record.
fn turn_field(record: &Record, schema: Schema, i: usize) -> String {
    let offset = usize::from(record.system.is_some());
    match schema {
        Schema::ShareGpt => format!("conversations[{}].value", i + offset),
        Schema::Messages => format!("messages[{}].content", i + offset),
        _ => {
            let last_exchange = if record.messages.len() % 2 == 1 {
                record.messages.len() - 1
            } else {
                record.messages.len().saturating_sub(2)
            };
            if i >= last_exchange {
                let keys = match schema {
                    Schema::Alpaca | Schema::AlpacaEval => ["instruction", "output"],
                    Schema::SeqEval => ["instruction", "instruction"],
                    Schema::FlanCot => ["question", "response"],
                    _ => ["prompt", "prompt"],
                };
                keys[i - last_exchange].to_string()
            } else {
                format!("history[{}][{}]", i / 2, i % 2)
            }
        }
    }
}
