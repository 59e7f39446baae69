//! Which dataset format a file is in: the record [`Schema`] (Alpaca, ShareGPT, ...) and
//! the [`Container`] holding the records (JSON array, JSON Lines, text, Parquet).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde_json::{Map, Value};

/// The shape of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Schema {
    /// `instruction`, `input`, `output`, optional `system`/`system_prompt` and `history`.
    Alpaca,
    /// `conversations` of `{from, value}` turns (`human`, `gpt`, `system`).
    ShareGpt,
    /// OpenAI-style `messages` of `{role, content}` turns.
    Messages,
    /// FlanCoT / Orca style: `question`, `response`, `system_prompt`.
    FlanCot,
    /// alpaca_eval outputs: `instruction`, `output`, `generator`, optional `dataset`.
    AlpacaEval,
    /// Prompts only: one per line of a `.txt` file, or records with `prompt`.
    Prompts,
    /// SeqEval items: `instruction`, `input`, the depth as `iteration`, `modes`,
    /// `sub_steps` and, for program-checked chains, `steps`; no response.
    SeqEval,
}

impl Schema {
    /// Every schema, in the order of [`Schema::NAMES`].
    pub const ALL: [Schema; 7] = [
        Schema::Alpaca,
        Schema::ShareGpt,
        Schema::Messages,
        Schema::FlanCot,
        Schema::AlpacaEval,
        Schema::Prompts,
        Schema::SeqEval,
    ];

    /// The names `--format` and `--to` accept.
    pub const NAMES: [&'static str; 7] = [
        "alpaca",
        "sharegpt",
        "messages",
        "flan",
        "alpaca-eval",
        "prompts",
        "seqeval",
    ];

    /// The schema's name as `--format` and `--to` accept it (one of [`Schema::NAMES`]).
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Guesses the schema from the keys of a record.
    pub fn detect(record: &Map<String, Value>) -> Option<Schema> {
        let has = |key: &str| record.contains_key(key);
        if has("conversations") {
            Some(Schema::ShareGpt)
        } else if has("messages") {
            Some(Schema::Messages)
        } else if has("instruction") && has("sub_steps") && !has("output") {
            Some(Schema::SeqEval)
        } else if has("instruction") && has("generator") {
            Some(Schema::AlpacaEval)
        } else if has("instruction") {
            Some(Schema::Alpaca)
        } else if has("question") {
            Some(Schema::FlanCot)
        } else if has("prompt") {
            Some(Schema::Prompts)
        } else {
            None
        }
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Schema {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase().replace('_', "-");
        let schema = match lower.as_str() {
            "alpaca" | "alpaca-json" | "alpaca-jsonl" => Schema::Alpaca,
            "sharegpt" | "share-gpt" => Schema::ShareGpt,
            "messages" | "openai" | "chat" => Schema::Messages,
            "flan" | "flancot" | "flan-cot" | "orca" => Schema::FlanCot,
            "alpaca-eval" | "alpacaeval" => Schema::AlpacaEval,
            "prompts" | "prompt" | "txt" => Schema::Prompts,
            "seqeval" | "seq-eval" => Schema::SeqEval,
            _ => {
                return Err(format!(
                    "unknown format `{s}`; expected one of {}",
                    Self::NAMES.join(", ")
                ))
            }
        };
        Ok(schema)
    }
}

/// How the records are stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    /// A JSON array of objects (`.json`).
    JsonArray,
    /// One JSON object per line (`.jsonl`, `.ndjson`).
    Jsonl,
    /// One prompt per line (`.txt`).
    Text,
    /// An Apache Parquet table (`.parquet`; needs the `parquet` feature).
    Parquet,
}

impl Container {
    /// The container an extension names (for `.json`, a JSON array: readers also
    /// accept JSON Lines under that name).
    pub fn from_path(path: &Path) -> Option<Container> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(Container::JsonArray),
            "jsonl" | "ndjson" => Some(Container::Jsonl),
            "txt" => Some(Container::Text),
            "parquet" => Some(Container::Parquet),
            _ => None,
        }
    }

    /// A human-readable name for messages (e.g. `JSON Lines`); also the
    /// [`Display`](fmt::Display) form.
    pub fn name(self) -> &'static str {
        match self {
            Container::JsonArray => "JSON array",
            Container::Jsonl => "JSON Lines",
            Container::Text => "text lines",
            Container::Parquet => "Parquet",
        }
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A schema in a container: everything needed to read or write a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Format {
    /// The shape of each record.
    pub schema: Schema,
    /// How the records are stored in the file.
    pub container: Container,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.schema, self.container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detect(value: Value) -> Option<Schema> {
        Schema::detect(value.as_object().unwrap())
    }

    #[test]
    fn detection_by_keys() {
        assert_eq!(
            detect(json!({"instruction": "", "output": ""})),
            Some(Schema::Alpaca)
        );
        assert_eq!(
            detect(json!({"instruction": "", "output": "", "generator": "m"})),
            Some(Schema::AlpacaEval)
        );
        assert_eq!(detect(json!({"conversations": []})), Some(Schema::ShareGpt));
        assert_eq!(detect(json!({"messages": []})), Some(Schema::Messages));
        assert_eq!(
            detect(json!({"question": "", "response": ""})),
            Some(Schema::FlanCot)
        );
        assert_eq!(detect(json!({"prompt": ""})), Some(Schema::Prompts));
        assert_eq!(
            detect(json!({"instruction": "", "iteration": 2, "sub_steps": []})),
            Some(Schema::SeqEval)
        );
        assert_eq!(detect(json!({"text": ""})), None);
    }

    #[test]
    fn names_round_trip() {
        for schema in Schema::ALL {
            assert_eq!(schema.name().parse::<Schema>(), Ok(schema));
        }
        assert!("csv"
            .parse::<Schema>()
            .unwrap_err()
            .contains("alpaca, sharegpt"));
    }
}
