//! Jobs over a JSONL file of prompts, the same for the local engine and for endpoints.
//!
//! * [`RequestSettings`] — how every record becomes an [`LlmRequest`](crate::LlmRequest)
//!   (system message, raw text, sampling, samples, prompt version), and
//!   [`read_input`](RequestSettings::read_input) for the records themselves.
//! * [`GenerateFile`] and [`generate_file`] — every record answered into a JSONL file,
//!   through any [`Client`](crate::Client), resuming from a journal.
//! * [`GenerateFile::estimate`] — what such a run would ask, for dry runs.
//! * [`export_batch`] — the same requests as an OpenAI Batch API file.

mod file;
mod input;
mod plan;

pub use file::{generate_file, FileReport, GenerateFile};
pub use input::{InputRecord, RequestSettings};
pub use plan::{export_batch, DryRun, ExportReport};
