//! The dataset layer of seqit: every instruction-tuning format read into one
//! [`Record`] type and written back, plus the dataset tools behind `seqit data`.
//!
//! * [`Record`] — a conversation (system prompt + turns) with its id and metadata
//!   (provenance and any other field of the source).
//! * [`Reader`] / [`read_all`] — Alpaca JSON/JSONL, ShareGPT, OpenAI `messages`,
//!   FlanCoT, alpaca_eval outputs, prompt lists (`.txt` or `prompt` records) and, with
//!   the `parquet` feature, Parquet. The [`Format`] (record [`Schema`] in a
//!   [`Container`]) is detected from the file name and first record. JSON Lines are
//!   streamed; errors name the file, line or record, field and what was expected.
//! * [`Writer`] / [`write_all`] — atomic writes (temporary file, sync, rename).
//! * [`validate`], [`convert`], [`stats`], [`write_mix`], [`dedupe()`],
//!   [`decontaminate()`] — the jobs behind `seqit data`: each takes plain settings and
//!   returns what it did (counts, reports, paths) for the caller to show; none prints.
//!
//! ```
//! use seqit_data::{Record, Schema};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("data.jsonl");
//! let record = Record::exchange("Add the numbers.", Some("2 3"), Some("5"));
//! seqit_data::write_all(&path, &seqit_data::WriteOptions::new(Schema::Alpaca), [&record]).unwrap();
//! let (format, records) = seqit_data::read_all(&path, &Default::default()).unwrap();
//! assert_eq!(format.schema, Schema::Alpaca);
//! assert_eq!(records, vec![record]);
//! ```

#![deny(missing_docs)]

mod array;
mod codec;
mod decontaminate;
mod dedupe;
mod error;
mod format;
mod lines;
mod mix;
#[cfg(feature = "parquet")]
mod parquet;
mod pipe;
#[cfg(feature = "parquet")]
pub use parquet::JSON_COLUMN as PARQUET_JSON_COLUMN;
mod read;
mod record;
mod rng;
mod settings;
mod stats;
mod text;
mod validate;
mod write;

pub use codec::{EncodeOptions, EXTRA_KEY};
pub use decontaminate::{
    decontaminate, read_benchmark, BenchmarkItem, Contamination, DecontaminateOptions,
    Decontaminated, Decontaminator, BENCHMARK_FIELDS,
};
pub use dedupe::{dedupe, key_text, DedupeKey, DedupeOptions, Deduper, Removal};
pub use error::{Error, Location, Problem, Result};
pub use format::{Container, Format, Schema};
pub use mix::{
    allocate, largest_total, mix, write_mix, MixReport, MixSettings, MixSource, MixedSource,
};
pub use pipe::{convert, Converted, FilterPaths, Filtered};
pub use read::{read_all, ReadOptions, Reader, DEFAULT_MAX_LINE_BYTES};
pub use record::{Record, INPUT_SEPARATOR, TURN_FIELDS_KEY};
pub use rng::SeededRng;
pub use settings::{parse_schema, MixOptions, ReadFlags};
pub use stats::{percentile, stats, Lengths, Stats, TokenCounter};
pub use text::{normalize, normalized_words};
pub use validate::{validate, Validation, MAX_HINTS};
pub use write::{write_all, write_file_atomic, WriteOptions, Writer};
