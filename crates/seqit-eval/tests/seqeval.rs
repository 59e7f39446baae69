//! SeqEval: reading the `seqeval build` records (fixture written for seqit) and the
//! per-depth aggregation with bootstrap CIs, on judged records with hand-computed scores.

use std::path::{Path, PathBuf};

use seqit_eval::benchmarks::{BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED};
use seqit_eval::metrics::bootstrap_mean_ci;
use seqit_eval::seqeval;
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/eval")
        .join(name)
}

#[test]
fn reads_the_fixture() {
    let items = seqeval::read(&fixture("seqeval_small.jsonl")).unwrap();
    assert_eq!(items.len(), 10);
    let depths: Vec<u64> = items.iter().map(|i| i.depth).collect();
    assert_eq!(depths, [1, 1, 2, 2, 2, 3, 3, 3, 4, 4]);
    assert_eq!(items[9].sub_steps.len(), 4);
    let with_input = &items[4];
    assert!(with_input
        .prompt()
        .starts_with("Summarize the text below in one sentence, then give it a title.\n\nThe sun"));
    assert_eq!(items[0].prompt(), "Name three primary colors.");
}

#[test]
fn bad_records_name_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    let good = r#"{"id":"a","instruction":"x","iteration":1,"original_instruction":"x","modes":["prefix"],"sub_steps":["x"]}"#;
    for (line, expected) in [
        (
            r#"{"id":"b","instruction":"x","iteration":5,"original_instruction":"x","modes":[],"sub_steps":["x"]}"#,
            "field `iteration`: expected a depth 1..4, found 5",
        ),
        (
            r#"{"id":"b","instruction":"x","iteration":2,"original_instruction":"x","modes":[],"sub_steps":[]}"#,
            "field `sub_steps`: expected at least one step",
        ),
        (
            r#"{"id":"b","instruction":"x","iteration":2,"original_instruction":"x","modes":[],"sub_steps":[3]}"#,
            "field `sub_steps`[0]: expected a string, found a number",
        ),
        (
            r#"{"id":"b","iteration":2,"original_instruction":"x","modes":[],"sub_steps":["x"]}"#,
            "missing field `instruction`",
        ),
    ] {
        std::fs::write(&path, format!("{good}\n{line}\n")).unwrap();
        let error = seqeval::read(&path).unwrap_err().to_string();
        assert!(
            error.contains("line 2") && error.contains(expected),
            "{error}"
        );
    }
}

/// A judged record as `evaluate_item` writes it (`None`: the verdict did not parse).
fn record(
    depth: u64,
    steps: Option<&[bool]>,
    chain: Option<bool>,
    quality: Option<u32>,
    win: Option<f64>,
    pairwise_failures: u64,
) -> Value {
    json!({
        "id": format!("{depth}-{steps:?}-{quality:?}"),
        "depth": depth,
        "following": {
            "steps": steps,
            "all_steps": steps.map(|s| s.iter().all(|&x| x)),
            "chain": chain,
        },
        "quality": { "rating": quality },
        "pairwise": { "score": win, "parse_failures": pairwise_failures },
    })
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-12)
}

#[test]
fn per_depth_aggregation_and_intervals_by_hand() {
    let records = [
        record(1, Some(&[true]), Some(true), Some(5), Some(1.0), 0),
        record(1, Some(&[true, false]), Some(false), Some(2), Some(0.5), 0),
        record(
            2,
            Some(&[true, true, true]),
            Some(true),
            Some(4),
            Some(0.0),
            0,
        ),
        record(2, None, None, None, None, 2),
        record(
            3,
            Some(&[true, true, true]),
            Some(false),
            Some(3),
            Some(0.75),
            0,
        ),
    ];
    let m = seqeval::metrics(&records);
    let all = &m["overall"];
    assert_eq!(all["items"], 5);
    // Following: 3 of the 4 parsed items attempted every step; chain verdicts 2 of 4.
    assert!(close(&all["following_rate"]["mean"], 0.75));
    assert_eq!(all["following_rate"]["n"], 4);
    assert!(close(&all["chain_following_rate"]["mean"], 0.5));
    // Steps pooled: 1 + 2 + 3 + 3 = 9 judged, 8 attempted.
    assert_eq!(all["step_attempt_rate"]["steps"], 9);
    assert!(close(&all["step_attempt_rate"]["mean"], 8.0 / 9.0));
    assert!(close(
        &all["quality"]["mean"],
        (5.0 + 2.0 + 4.0 + 3.0) / 4.0
    ));
    assert!(close(
        &all["win_rate"]["mean"],
        (1.0 + 0.5 + 0.0 + 0.75) / 4.0
    ));
    assert_eq!(
        all["parse_failures"],
        json!({"following": 1, "quality": 1, "pairwise_orders": 2, "pairwise_items_without_verdict": 1})
    );
    // The overall interval is the seeded bootstrap of exactly the parsed values.
    let ci = bootstrap_mean_ci(
        &[5.0, 2.0, 4.0, 3.0],
        BOOTSTRAP_RESAMPLES,
        0.95,
        BOOTSTRAP_SEED,
    )
    .unwrap();
    assert_eq!(all["quality"]["ci95"], json!([ci.low, ci.high]));
    assert!(ci.low < 3.5 && 3.5 < ci.high);

    let depth = |d: &str| &m["by_depth"][d];
    // Depth 1: two items, following [1, 0]. Resampling two values gives means 0, ½ or 1
    // with probabilities ¼, ½, ¼, so over 1000 resamples the 2.5% and 97.5% quantiles
    // are the extremes: [0, 1]; likewise quality [2, 5] and win [0.5, 1].
    assert!(close(&depth("1")["following_rate"]["mean"], 0.5));
    assert_eq!(depth("1")["following_rate"]["ci95"], json!([0.0, 1.0]));
    assert!(close(&depth("1")["quality"]["mean"], 3.5));
    assert_eq!(depth("1")["quality"]["ci95"], json!([2.0, 5.0]));
    assert_eq!(depth("1")["win_rate"]["ci95"], json!([0.5, 1.0]));
    // Depth 2: one parsed item of two.
    assert_eq!(depth("2")["items"], 2);
    assert_eq!(depth("2")["following_rate"]["n"], 1);
    assert_eq!(depth("2")["following_rate"]["ci95"], json!([1.0, 1.0]));
    assert_eq!(depth("2")["parse_failures"]["following"], 1);
    // Depth 3: one item, degenerate intervals at its values.
    assert!(close(&depth("3")["chain_following_rate"]["mean"], 0.0));
    assert_eq!(depth("3")["quality"]["ci95"], json!([3.0, 3.0]));
    assert_eq!(depth("3")["win_rate"]["ci95"], json!([0.75, 0.75]));
    // Depth 4: no items.
    assert_eq!(depth("4")["items"], 0);
    assert!(depth("4")["following_rate"]["mean"].is_null());
    assert!(depth("4")["following_rate"]["ci95"].is_null());
}
