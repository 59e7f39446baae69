//! JSON and JSON Lines files as tests read and write them (panicking with the path on
//! any error).

use std::path::Path;

use serde_json::Value;

/// Every line of a JSON Lines file, parsed; a line that is not JSON (a blank one too:
/// seqit never writes one) fails the test with the path and the line.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()));
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("`{}`: bad JSON line {l:?}: {e}", path.display()))
        })
        .collect()
}

/// A JSON file, parsed.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("`{}`: bad JSON: {e}", path.display()))
}

/// Writes `records` to `path` as JSON Lines, one record a line.
pub fn write_jsonl(path: &Path, records: &[Value]) {
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write `{}`: {e}", path.display()));
}
