//! `seqit data validate`: every problem of a file, one line each.
//!
//! Besides what reading finds (bad JSON, wrong types, missing fields, bad UTF-8, lines
//! over the limit), a record is a problem when its id repeats an earlier one, when it
//! has no user turn, or when a user or assistant turn is empty.

use std::collections::HashMap;
use std::path::Path;

use seqit_core::Role;

use crate::error::{Location, Problem};
use crate::format::{Format, Schema};
use crate::read::{ReadOptions, Reader};
use crate::record::Record;

/// What validating a file found.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The format, when it could be told.
    pub format: Option<Format>,
    /// Records read without a reading problem.
    pub records: usize,
    /// Every problem, in file order.
    pub problems: Vec<String>,
}

impl Validation {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads the whole file and lists every problem.
pub fn validate(path: &Path, options: &ReadOptions) -> Validation {
    let mut result = Validation {
        format: None,
        records: 0,
        problems: Vec::new(),
    };
    let mut reader = match Reader::open(path, options) {
        Ok(reader) => reader,
        Err(e) => {
            result.problems.extend(e.problems());
            return result;
        }
    };
    let mut ids: HashMap<String, Location> = HashMap::new();
    while let Some(item) = reader.next() {
        let record = match item {
            Ok(record) => record,
            Err(e) => {
                result.problems.extend(e.problems());
                continue;
            }
        };
        result.records += 1;
        let at = reader
            .location()
            .cloned()
            .unwrap_or_else(|| Location::file(path));
        let schema = reader.format().map_or(Schema::Messages, |f| f.schema);
        for problem in check_record(&record, schema, &at, &mut ids) {
            result.problems.push(problem.to_string());
        }
    }
    result.format = reader.format();
    result
}

fn check_record(
    record: &Record,
    schema: Schema,
    at: &Location,
    ids: &mut HashMap<String, Location>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |field: Option<String>, message: String| {
        problems.push(Problem {
            at: at.clone(),
            field,
            message,
        })
    };
    if let Some(id) = &record.id {
        let key = id.to_string();
        if let Some(first) = ids.get(&key) {
            problem(Some("id".into()), format!("{id} repeats the id of {first}"));
        } else {
            ids.insert(key, at.clone());
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
