//! The jobs behind `seqit data` on small files written here: what they write, what
//! they return and the summaries the CLI prints from it.

use std::path::{Path, PathBuf};

use seqit_data::{
    DecontaminateOptions, DedupeOptions, FilterPaths, MixSettings, MixSource, ReadOptions, Schema,
    WriteOptions,
};
use seqit_testkit::{read_jsonl, write_jsonl};
use serde_json::{json, Value};

fn alpaca(id: &str, instruction: &str) -> Value {
    json!({"id": id, "instruction": instruction, "output": "ok"})
}

fn paths(dir: &Path) -> FilterPaths {
    FilterPaths {
        input: dir.join("in.jsonl"),
        read: ReadOptions::default(),
        output: dir.join("out.jsonl"),
        report: None,
    }
}

#[test]
fn convert_names_the_formats_and_where_an_unwritable_record_is() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_jsonl(&input, &[alpaca("a", "One."), alpaca("b", "Two.")]);
    let output = dir.path().join("out.json");
    let done = seqit_data::convert(
        &input,
        &output,
        &ReadOptions::default(),
        &WriteOptions::new(Schema::ShareGpt),
    )
    .unwrap();
    assert_eq!(done.records, 2);
    assert_eq!(
        done.summary(Path::new("out.json")),
        "converted 2 records from alpaca (JSON Lines) to sharegpt (JSON array): out.json"
    );

    // A prompt list cannot hold a line break: the error names the input's line.
    write_jsonl(&input, &[alpaca("a", "One."), alpaca("b", "Two\nlines.")]);
    let error = seqit_data::convert(
        &input,
        &dir.path().join("out.txt"),
        &ReadOptions::default(),
        &WriteOptions::new(Schema::Prompts),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with(&format!(
            "{}:2: cannot write this record as prompts: ",
            input.display()
        )),
        "{error}"
    );
    assert!(!dir.path().join("out.txt").exists());
}

#[test]
fn dedupe_writes_the_kept_records_and_a_report_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let paths = paths(dir.path());
    let mut records = vec![alpaca("a", "Same task."), alpaca("b", "Other task.")];
    records.extend((0..22).map(|i| alpaca(&format!("d{i}"), "same TASK!")));
    write_jsonl(&paths.input, &records);
    let done = seqit_data::dedupe(&paths, &DedupeOptions::default()).unwrap();
    assert_eq!((done.read, done.written, done.removed.len()), (24, 2, 22));
    assert_eq!(done.report, dir.path().join("out.removed.jsonl"));
    assert_eq!(read_jsonl(&paths.output).len(), 2);
    assert_eq!(read_jsonl(&done.report)[0]["duplicate_of_id"], "a");
    let summary = done.summary();
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(
        lines[0],
        "kept 2 of 24 records; removed 22 exact and 0 near duplicates"
    );
    assert!(
        lines[1].starts_with("removed: d0, d1, ") && lines[1].ends_with(", d19, and 2 more"),
        "{summary}"
    );
    assert_eq!(
        lines[2],
        format!("report: {}", dir.path().join("out.removed.jsonl").display())
    );

    let bad = DedupeOptions {
        near: Some(0.0),
        ..DedupeOptions::default()
    };
    let error = seqit_data::dedupe(&paths, &bad).unwrap_err().to_string();
    assert_eq!(
        error,
        "`--near` must be a Jaccard similarity in (0, 1], got 0"
    );
}

#[test]
fn decontaminate_reports_the_shared_ngram_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("bench.jsonl");
    write_jsonl(
        &bench,
        &[
            json!({"prompt": "name the largest planet of the solar system"}),
            json!({"prompt": "hi"}),
        ],
    );
    let mut paths = paths(dir.path());
    paths.report = Some(dir.path().join("hits.jsonl"));
    write_jsonl(
        &paths.input,
        &[
            alpaca("t1", "Please name the largest planet, then explain."),
            alpaca("t2", "Count to three."),
        ],
    );
    let options = DecontaminateOptions {
        against: vec![bench.clone()],
        field: None,
        ngram: 4,
    };
    let done = seqit_data::decontaminate(&paths, &options).unwrap();
    assert_eq!((done.prompts, done.skipped), (2, 1));
    assert_eq!(done.filtered.written, 1);
    assert_eq!(read_jsonl(&dir.path().join("hits.jsonl")).len(), 1);
    assert_eq!(
        done.summary(&options),
        format!(
            "kept 1 of 2 records; removed 1 that share a 4-gram with {} (2 prompts, 1 too short to check)\n\
             removed t1: \"name the largest planet\" (from {}:1)\nreport: {}",
            bench.display(),
            bench.display(),
            dir.path().join("hits.jsonl").display()
        )
    );
}

#[test]
fn mix_parses_weights_and_writes_the_sources_shared_format() {
    let source: MixSource = "data/a.jsonl:3".parse().unwrap();
    assert_eq!(
        (source.path, source.weight),
        (PathBuf::from("data/a.jsonl"), 3.0)
    );
    let plain: MixSource = "c:/x.jsonl".parse().unwrap();
    assert_eq!(
        (plain.path, plain.weight),
        (PathBuf::from("c:/x.jsonl"), 1.0)
    );
    let error = "a.jsonl:-1".parse::<MixSource>().unwrap_err().to_string();
    assert_eq!(error, "`a.jsonl:-1`: the weight must be a number above 0");

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    write_jsonl(&a, &[alpaca("a1", "A1."), alpaca("a2", "A2.")]);
    write_jsonl(&b, &[alpaca("b1", "B1.")]);
    let settings = MixSettings {
        sources: vec![
            MixSource {
                path: a,
                weight: 2.0,
            },
            MixSource {
                path: b,
                weight: 1.0,
            },
        ],
        total: None,
        seed: 5,
        read: ReadOptions::default(),
        to: None,
        output: dir.path().join("mix.jsonl"),
    };
    let report = seqit_data::write_mix(&settings).unwrap();
    assert_eq!(read_jsonl(&settings.output).len(), 3);
    let summary = report.summary(Path::new("mix.jsonl"));
    assert!(
        summary
            .ends_with("b.jsonl: 1 of 1 records (weight 1)\nwrote 3 records (seed 5) to mix.jsonl"),
        "{summary}"
    );
}

#[test]
fn validate_lists_the_first_problems_and_each_hint_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    let empty = b"{\"instruction\": \"\", \"output\": \"x\"}\n";
    let not_utf8 = b"{\"instruction\": \"\xff\", \"output\": \"x\"}\n";
    std::fs::write(&path, [&empty[..], not_utf8, empty, not_utf8].concat()).unwrap();
    let mut listed = Vec::new();
    let found = seqit_data::validate(&path, &ReadOptions::default(), 3, &mut |p| {
        listed.push(p.to_string())
    });
    assert_eq!((found.problems, found.listed, found.records), (4, 3, 2));
    let at = |line: usize| format!("{}:{line}: ", path.display());
    assert_eq!(listed.len(), 3);
    assert!(
        listed[1].starts_with(&at(2)) && !listed[1].contains("hint"),
        "{listed:?}"
    );
    assert_eq!(found.hints.len(), 1, "{:?}", found.hints);
    assert_eq!(
        found.verdict(&path).unwrap_err(),
        format!(
            "`{}`: 4 problems found (3 listed, 1 more counted only; raise --max-problems to list them)\nhint: {}",
            path.display(),
            found.hints[0]
        )
    );

    std::fs::write(&path, "{\"instruction\": \"a\", \"output\": \"b\"}\n").unwrap();
    let found = seqit_data::validate(&path, &ReadOptions::default(), 2, &mut |_| {});
    assert_eq!(
        found.verdict(&path).unwrap(),
        format!(
            "ok: `{}`: 1 records, alpaca (JSON Lines), no problems",
            path.display()
        )
    );
}
