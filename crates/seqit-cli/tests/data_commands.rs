//! `seqit data` commands through the real binary, each in a fresh temporary directory,
//! with expected results worked out by hand.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use seqit_testkit::cli::Seqit;
use seqit_testkit::{fixture, read_jsonl, write_jsonl, GgmlDType, TinyModel, TinyModelSpec};
use serde_json::{json, Value};

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = SEQIT.output_in(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "seqit {args:?}: {stderr}");
    assert!(
        stderr.starts_with("error: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
    stderr
}

fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn validate_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("multi.jsonl"),
        concat!(
            "{\"id\":1,\"instruction\":\"a\",\"output\":\"b\"}\n",
            "{\"id\":2,\"instruction\":7,\"output\":\"b\"}\n",
            "not json\n",
            "{\"id\":1,\"instruction\":\"c\",\"output\":\"\"}\n",
            "{\"id\":4,\"instruction\":\"d\"}\n",
            "{\"id\":5,\"instruction\":\"  \",\"output\":\"e\"}\n",
        ),
    )
    .unwrap();
    let out = SEQIT.output_in(dir.path(), ["data", "validate", "multi.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![
            "multi.jsonl:2: field `instruction`: expected a string, found number",
            "multi.jsonl:3: invalid JSON at column 2: expected ident",
            "multi.jsonl:4: field `id`: 1 repeats the id of multi.jsonl:1",
            "multi.jsonl:4: field `output`: the response is empty",
            "multi.jsonl:5: field `output`: missing; expected a string",
            "multi.jsonl:6: field `instruction`: the instruction is empty",
        ]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end(), "error: `multi.jsonl`: 6 problems found");

    let stdout = SEQIT.ok_in(
        dir.path(),
        [
            "data",
            "validate",
            fixture("data/sharegpt.json").to_str().unwrap(),
        ],
    );
    assert!(
        stdout.ends_with("sharegpt.json`: 4 records, sharegpt (JSON array), no problems\n"),
        "{stdout}"
    );
}

/// alpaca → sharegpt → messages → flan → alpaca gives back the file byte for byte.
#[test]
fn convert_chain_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = fixture("data/alpaca.jsonl");
    let steps = [
        ("sharegpt", "step1.json"),
        ("messages", "step2.jsonl"),
        ("flan", "step3.jsonl"),
        ("alpaca", "step4.jsonl"),
    ];
    let mut input = source.to_str().unwrap().to_string();
    for (to, output) in steps {
        SEQIT.ok_in(d, ["data", "convert", &input, output, "--to", to]);
        input = output.to_string();
    }
    assert_eq!(
        std::fs::read_to_string(d.join("step4.jsonl")).unwrap(),
        std::fs::read_to_string(&source).unwrap()
    );
    // The ShareGPT step holds the system prompt as a first turn.
    let step1: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("step1.json")).unwrap()).unwrap();
    assert_eq!(
        step1[2]["conversations"][0],
        json!({"from": "system", "value": "你是一个乐于助人的翻译助手。"})
    );

    // alpaca_eval output needs a generator.
    let stderr = fails(
        d,
        &[
            "data",
            "convert",
            "step4.jsonl",
            "eval.json",
            "--to",
            "alpaca-eval",
        ],
    );
    assert!(
        stderr.contains(
            "step4.jsonl:1: cannot write this record as alpaca-eval: it has no `generator`"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("hint: pass --generator NAME"), "{stderr}");
    assert!(!d.join("eval.json").exists());
    SEQIT.ok_in(
        d,
        [
            "data",
            "convert",
            "step4.jsonl",
            "eval.json",
            "--to",
            "alpaca-eval",
            "--generator",
            "my-model",
        ],
    );
    let eval: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("eval.json")).unwrap()).unwrap();
    assert_eq!(eval.as_array().unwrap().len(), 5);
    assert_eq!(eval[0]["generator"], json!("my-model"));
}

#[test]
fn failed_convert_keeps_the_previous_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("out.jsonl"), "old\n").unwrap();
    // Record 3 of the ShareGPT fixture has tool turns, which Alpaca cannot hold.
    let stderr = fails(
        d,
        &[
            "data",
            "convert",
            fixture("data/sharegpt.json").to_str().unwrap(),
            "out.jsonl",
            "--to",
            "alpaca",
        ],
    );
    assert!(stderr.contains("sharegpt.json:65: record 3: cannot write this record as alpaca: turn 1 has role `function_call`"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(d.join("out.jsonl")).unwrap(),
        "old\n"
    );
    assert_eq!(
        std::fs::read_dir(d).unwrap().count(),
        1,
        "no temporary file left"
    );
}

/// Ten records: instruction i has i words ("x x ..."), response 2i words ("y y ...").
/// With the tiny test tokenizer (bytes, no merge applies) a text of w one-letter words
/// is 2w − 1 tokens.
fn stats_fixture(dir: &Path) -> PathBuf {
    let records: Vec<Value> = (1..=10)
        .map(|i| {
            let mut r = json!({
                "instruction": vec!["x"; i].join(" "),
                "input": "",
                "output": vec!["y"; 2 * i].join(" "),
            });
            if i == 10 {
                r["system"] = json!("s");
            }
            r
        })
        .collect();
    let path = dir.join("stats.jsonl");
    write_jsonl(&path, &records);
    path
}

#[test]
fn stats_percentiles_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stats_fixture(d);
    let model_dir = d.join("tiny");
    let tiny = TinyModel::new(&TinyModelSpec::default()).unwrap();
    tiny.write_hf_dir(&model_dir).unwrap();
    let gguf = tiny
        .write_gguf(&d.join("tiny.gguf"), GgmlDType::Q8_0)
        .unwrap();
    for model in [model_dir.to_str().unwrap(), gguf.to_str().unwrap()] {
        let out = SEQIT.ok_in(
            d,
            ["data", "stats", "stats.jsonl", "--model", model, "--json"],
        );
        let s: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(s["records"], json!(10));
        assert_eq!(s["turns"], json!(20));
        assert_eq!(s["with_system"], json!(1));
        assert_eq!(s["with_input"], json!(0));
        // Nearest rank over 1..=10: p50 = 5th value, p90 = 9th, p99 = 10th.
        assert_eq!(
            s["instruction_words"],
            json!({"count": 10, "mean": 5.5, "p50": 5, "p90": 9, "p99": 10, "max": 10})
        );
        assert_eq!(
            s["response_words"],
            json!({"count": 10, "mean": 11.0, "p50": 10, "p90": 18, "p99": 20, "max": 20})
        );
        // Tokens 2w − 1: instructions 1, 3, ..., 19; responses 3, 7, ..., 39.
        assert_eq!(
            s["instruction_tokens"],
            json!({"count": 10, "mean": 10.0, "p50": 9, "p90": 17, "p99": 19, "max": 19})
        );
        assert_eq!(
            s["response_tokens"],
            json!({"count": 10, "mean": 21.0, "p50": 19, "p90": 35, "p99": 39, "max": 39})
        );
        assert_eq!(s["tokenizer"], json!(model));
    }
    let table = SEQIT.ok_in(d, ["data", "stats", "stats.jsonl", "--no-tokens"]);
    assert!(
        table.starts_with("stats.jsonl: 10 records (alpaca, JSON Lines)\n"),
        "{table}"
    );
    assert!(
        table.contains(
            "\ninstruction words              10       5.5       5       9      10      10\n"
        ),
        "{table}"
    );
    assert!(!table.contains("tokens"), "{table}");
    let stderr = fails(
        d,
        &["data", "stats", "stats.jsonl", "--model", "missing.gguf"],
    );
    assert!(
        stderr.contains("model `missing.gguf` does not exist"),
        "{stderr}"
    );
}

#[test]
fn stats_counts_tokens_of_the_default_model() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = SEQIT.ok_in(
        dir.path(),
        [
            "data",
            "stats",
            fixture("data/alpaca.jsonl").to_str().unwrap(),
        ],
    );
    assert!(out.contains("\ninstruction tokens "), "{out}");
    assert!(out.ends_with("tokens: smollm2-135m\n"), "{out}");
    assert!(
        out.contains("with input: 3 (60.0%), with system prompt: 2 (40.0%)"),
        "{out}"
    );
}

fn mix_sources(d: &Path) {
    let a: Vec<Value> = (0..10)
        .map(
            |i| json!({"id": format!("a{i}"), "instruction": format!("task a{i}"), "output": "ok"}),
        )
        .collect();
    let b: Vec<Value> = (0..4)
        .map(
            |i| json!({"id": format!("b{i}"), "instruction": format!("task b{i}"), "output": "ok"}),
        )
        .collect();
    write_jsonl(&d.join("a.jsonl"), &a);
    write_jsonl(&d.join("b.jsonl"), &b);
}

fn counts(ids: &[String]) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for id in ids {
        *map.entry(id.clone()).or_insert(0) += 1;
    }
    map
}

#[test]
fn mix_is_seeded_and_weighted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mix_sources(d);
    // No total: the most records without repeats, 13 (14 would ask a for 10.5). Shares
    // 3/4 and 1/4 of 13 are 9.75 and 3.25; the largest remainder gives a 10 and b 3.
    let out = SEQIT.ok_in(
        d,
        [
            "data",
            "mix",
            "a.jsonl:3",
            "b.jsonl:1",
            "--output",
            "m1.jsonl",
            "--seed",
            "7",
        ],
    );
    assert!(out.contains("a.jsonl: 10 of 10 records (weight 3)\nb.jsonl: 3 of 4 records (weight 1)\nwrote 13 records (seed 7)"), "{out}");
    let m1 = ids(&read_jsonl(&d.join("m1.jsonl")));
    let c = counts(&m1);
    assert_eq!(m1.len(), 13);
    assert_eq!(c.len(), 13, "no repeats: {m1:?}");
    assert_eq!(c.keys().filter(|k| k.starts_with('a')).count(), 10);

    SEQIT.ok_in(
        d,
        [
            "data",
            "mix",
            "a.jsonl:3",
            "b.jsonl:1",
            "--output",
            "m2.jsonl",
            "--seed",
            "7",
        ],
    );
    assert_eq!(
        std::fs::read(d.join("m1.jsonl")).unwrap(),
        std::fs::read(d.join("m2.jsonl")).unwrap()
    );
    SEQIT.ok_in(
        d,
        [
            "data",
            "mix",
            "a.jsonl:3",
            "b.jsonl:1",
            "--output",
            "m3.jsonl",
            "--seed",
            "8",
        ],
    );
    assert_ne!(
        std::fs::read(d.join("m1.jsonl")).unwrap(),
        std::fs::read(d.join("m3.jsonl")).unwrap()
    );
    let mut sorted1 = m1.clone();
    let mut sorted3 = ids(&read_jsonl(&d.join("m3.jsonl")));
    sorted1.sort();
    sorted3.sort();
    assert_ne!(
        sorted1, sorted3,
        "seed 8 also picks another 3 of b's 4 records"
    );

    // A total above what the sources hold: 20 → a 15 (every record once, 5 twice),
    // b 5 (every record once, one twice).
    let out = SEQIT.ok_in(
        d,
        [
            "data",
            "mix",
            "a.jsonl:3",
            "b.jsonl:1",
            "--output",
            "big.jsonl",
            "--seed",
            "1",
            "--total",
            "20",
        ],
    );
    assert!(
        out.contains("a.jsonl: 15 of 10 records (weight 3), upsampled"),
        "{out}"
    );
    let c = counts(&ids(&read_jsonl(&d.join("big.jsonl"))));
    let a_twice = c
        .iter()
        .filter(|(k, &n)| k.starts_with('a') && n == 2)
        .count();
    let b_twice = c
        .iter()
        .filter(|(k, &n)| k.starts_with('b') && n == 2)
        .count();
    assert_eq!((c.len(), a_twice, b_twice), (14, 5, 1));
    assert!(c.values().all(|&n| n <= 2));

    // Different formats need --to.
    let stderr = fails(
        d,
        &[
            "data",
            "mix",
            "a.jsonl",
            fixture("data/sharegpt.json").to_str().unwrap(),
            "--output",
            "x.jsonl",
        ],
    );
    assert!(
        stderr.contains("the sources are in different formats (alpaca, sharegpt)"),
        "{stderr}"
    );
    assert!(!d.join("x.jsonl").exists());
    let out = SEQIT.ok_in(
        d,
        [
            "data",
            "mix",
            "a.jsonl",
            fixture("data/sharegpt.json").to_str().unwrap(),
            "--output",
            "x.jsonl",
            "--to",
            "messages",
            "--total",
            "6",
        ],
    );
    assert!(out.contains("wrote 6 records"), "{out}");
    let stderr = fails(d, &["data", "mix", "a.jsonl:0", "--output", "y.jsonl"]);
    assert!(
        stderr.contains("`a.jsonl:0`: the weight must be a number above 0"),
        "{stderr}"
    );
}

fn dedupe_fixture(d: &Path) {
    let r = |id: &str, instruction: &str, output: &str| json!({"id": id, "instruction": instruction, "output": output});
    let mut d9 = r("d9", "What is the capital of France?", "Paris.");
    d9["system"] = json!("Be brief.");
    write_jsonl(
        &d.join("dup.jsonl"),
        &[
            r("d1", "What is the capital of France?", "Paris."),
            r("d2", "what is the capital of france", "Paris."),
            r("d3", "What is the  capital of   France?!", "Paris."),
            r(
                "d4",
                "Name three primary colours and explain how they mix together in paint",
                "Red, yellow, blue.",
            ),
            r(
                "d5",
                "Name three primary colours and explain how they mix together in watercolour",
                "Red, yellow, blue.",
            ),
            r(
                "d6",
                "Name three secondary colours and explain how they mix together in paint",
                "Green, orange, purple.",
            ),
            r(
                "d7",
                "Write a haiku about the sea.",
                "Waves fold into foam.",
            ),
            r(
                "d8",
                "Write a haiku about the sea.",
                "Salt wind, grey water.",
            ),
            d9,
        ],
    );
}

#[test]
fn dedupe_exact_and_near() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    dedupe_fixture(d);
    // Exact only: d2 and d3 normalise to d1's prompt; d8 has d7's prompt.
    let out = SEQIT.ok_in(
        d,
        ["data", "dedupe", "dup.jsonl", "--output", "exact.jsonl"],
    );
    assert!(out.starts_with("kept 6 of 9 records; removed 3 exact and 0 near duplicates\nremoved: d2, d3, d8\nreport: exact.removed.jsonl\n"), "{out}");
    assert_eq!(
        ids(&read_jsonl(&d.join("exact.jsonl"))),
        ["d1", "d4", "d5", "d6", "d7", "d9"]
    );

    // Near at 0.8, 3-word shingles: d5 shares 9 of d4's 10 shingles, union 11 →
    // 9/11 = 0.818 (removed); d6 shares 7, union 13 → 0.538 (kept); d9's prompt has
    // the system prompt in front: 4 shared of 6 → 0.667 (kept).
    let out = SEQIT.ok_in(
        d,
        [
            "data",
            "dedupe",
            "dup.jsonl",
            "--output",
            "near.jsonl",
            "--near",
            "0.8",
            "--report",
            "near-report.jsonl",
        ],
    );
    assert!(
        out.starts_with(
            "kept 5 of 9 records; removed 3 exact and 1 near duplicates\nremoved: d2, d3, d5, d8\n"
        ),
        "{out}"
    );
    assert_eq!(
        ids(&read_jsonl(&d.join("near.jsonl"))),
        ["d1", "d4", "d6", "d7", "d9"]
    );
    let report = read_jsonl(&d.join("near-report.jsonl"));
    assert_eq!(report.len(), 4);
    assert_eq!(
        report[0],
        json!({"index": 1, "id": "d2", "kind": "exact", "duplicate_of": 0, "duplicate_of_id": "d1", "similarity": 1.0})
    );
    assert_eq!(report[2]["id"], json!("d5"));
    assert_eq!(report[2]["kind"], json!("near"));
    assert_eq!(report[2]["duplicate_of_id"], json!("d4"));
    assert!((report[2]["similarity"].as_f64().unwrap() - 9.0 / 11.0).abs() < 1e-12);

    // At 0.5 d6 (0.538) goes too, d9 (0.667) as a near duplicate of d1.
    let out = SEQIT.ok_in(
        d,
        [
            "data",
            "dedupe",
            "dup.jsonl",
            "--output",
            "loose.jsonl",
            "--near",
            "0.5",
        ],
    );
    assert!(out.contains("removed: d2, d3, d5, d6, d8, d9\n"), "{out}");

    // By whole conversation: d8's reply differs from d7's, so it stays.
    let out = SEQIT.ok_in(
        d,
        [
            "data",
            "dedupe",
            "dup.jsonl",
            "--output",
            "conv.jsonl",
            "--by",
            "conversation",
        ],
    );
    assert!(out.contains("removed: d2, d3\n"), "{out}");

    let stderr = fails(
        d,
        &[
            "data",
            "dedupe",
            "dup.jsonl",
            "--output",
            "bad.jsonl",
            "--near",
            "1.5",
        ],
    );
    assert!(
        stderr.contains("`--near` must be a Jaccard similarity in (0, 1], got 1.5"),
        "{stderr}"
    );
    assert!(!d.join("bad.jsonl").exists());
}

fn decontamination_fixture(d: &Path) {
    write_jsonl(
        &d.join("bench.jsonl"),
        &[
            json!({"id": "q1", "prompt": "Explain why the sky appears blue during the day."}),
            json!({"id": "q2", "prompt": "Translate 'good night' into Japanese."}),
            json!({"id": "q3", "prompt": "Hi there"}),
            json!({"id": "q4", "prompt": "Count to three"}),
        ],
    );
    let r = |id: &str, instruction: &str, output: &str| json!({"id": id, "instruction": instruction, "output": output});
    write_jsonl(
        &d.join("train.jsonl"),
        &[
            r(
                "t1",
                "Explain why the sky appears blue.",
                "Because of Rayleigh scattering.",
            ),
            r(
                "t2",
                "Why is grass green?",
                "Chlorophyll reflects green light.",
            ),
            r(
                "t3",
                "Say something nice.",
                "Sure! Translate good night into Japanese: oyasumi.",
            ),
            r(
                "t4",
                "Please count to three, slowly.",
                "One... two... three.",
            ),
            r("t5", "hi there, how are you?", "Fine, thanks."),
            r(
                "t6",
                "The sky appears blue during the day because",
                "of scattering.",
            ),
            r(
                "t7",
                "Explain why the ocean appears blue.",
                "It absorbs red light.",
            ),
        ],
    );
}

#[test]
fn decontaminate_by_ngrams() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    decontamination_fixture(d);
    // 5-grams. q1 (9 words) gives 5 five-grams, q2 (5 words) one, q4 (3 words, at least
    // ⌈5/2⌉) counts whole, q3 (2 words) is too short. t1 shares "explain why the sky
    // appears", t3's reply q2 whole, t4 "count to three", t6 "the sky appears blue during".
    let out = SEQIT.ok_in(
        d,
        [
            "data",
            "decontaminate",
            "train.jsonl",
            "--against",
            "bench.jsonl",
            "--output",
            "clean.jsonl",
            "--ngram",
            "5",
        ],
    );
    assert!(out.starts_with("kept 3 of 7 records; removed 4 that share a 5-gram with bench.jsonl (4 prompts, 1 too short to check)\n"), "{out}");
    assert!(
        out.contains("removed t1: \"explain why the sky appears\" (from bench.jsonl:1)\n"),
        "{out}"
    );
    assert_eq!(ids(&read_jsonl(&d.join("clean.jsonl"))), ["t2", "t5", "t7"]);
    let report = read_jsonl(&d.join("clean.contaminated.jsonl"));
    assert_eq!(ids(&report), ["t1", "t3", "t4", "t6"]);
    assert_eq!(
        report[1],
        json!({"index": 2, "id": "t3", "turn": 1, "role": "assistant", "ngram": "translate good night into japanese",
               "benchmark": {"source": "bench.jsonl:2", "id": "q2", "text": "Translate 'good night' into Japanese."}})
    );
    assert_eq!(report[2]["ngram"], json!("count to three"));
    assert_eq!(report[3]["ngram"], json!("the sky appears blue during"));

    // 13-grams (the default): only q1 (9 words ≥ 7) is checked, as a whole; no training
    // record holds all of it.
    let out = SEQIT.ok_in(
        d,
        [
            "data",
            "decontaminate",
            "train.jsonl",
            "--against",
            "bench.jsonl",
            "--output",
            "clean13.jsonl",
        ],
    );
    assert!(out.starts_with("kept 7 of 7 records; removed 0 that share a 13-gram with bench.jsonl (4 prompts, 3 too short to check)\n"), "{out}");

    // Benchmarks in other layouts: alpaca_eval's JSON array and a field named by flag.
    write_jsonl(
        &d.join("gsm.jsonl"),
        &[json!({"question": "count to three", "answer": "1 2 3"})],
    );
    let out = SEQIT.ok_in(
        d,
        [
            "data",
            "decontaminate",
            "train.jsonl",
            "--against",
            "gsm.jsonl",
            "--against",
            fixture("data/alpaca_eval.json").to_str().unwrap(),
            "--output",
            "c2.jsonl",
            "--ngram",
            "3",
        ],
    );
    assert!(out.contains("removed 1 that share a 3-gram"), "{out}");
    write_jsonl(
        &d.join("odd.jsonl"),
        &[json!({"query_text": "sky appears blue"})],
    );
    let stderr = fails(
        d,
        &[
            "data",
            "decontaminate",
            "train.jsonl",
            "--against",
            "odd.jsonl",
            "--output",
            "c3.jsonl",
        ],
    );
    assert!(
        stderr.contains("odd.jsonl:1: no benchmark prompt found"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: pass --bench-field NAME"), "{stderr}");
    let out = SEQIT.ok_in(
        d,
        [
            "data",
            "decontaminate",
            "train.jsonl",
            "--against",
            "odd.jsonl",
            "--bench-field",
            "query_text",
            "--output",
            "c3.jsonl",
            "--ngram",
            "3",
        ],
    );
    // "sky appears blue" is in t1 and t6 (t7 has "ocean appears blue").
    assert!(out.contains("removed 2 that share a 3-gram"), "{out}");
    assert!(
        out.contains("removed t1: \"sky appears blue\" (from odd.jsonl:1)\nremoved t6:"),
        "{out}"
    );
}

#[cfg(feature = "parquet")]
#[test]
fn convert_through_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = fixture("data/messages.jsonl");
    SEQIT.ok_in(
        d,
        [
            "data",
            "convert",
            source.to_str().unwrap(),
            "chat.parquet",
            "--to",
            "messages",
        ],
    );
    let stdout = SEQIT.ok_in(d, ["data", "validate", "chat.parquet"]);
    assert!(
        stdout.contains("4 records, messages (Parquet), no problems"),
        "{stdout}"
    );
    SEQIT.ok_in(
        d,
        [
            "data",
            "convert",
            "chat.parquet",
            "back.jsonl",
            "--to",
            "messages",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(d.join("back.jsonl")).unwrap(),
        std::fs::read_to_string(&source).unwrap()
    );
}

/// 400 synthesized verifiable chains: `data stats` reads them as SeqEval records and
/// shows no duplicate prompt, every depth 100 times and every step kind in use.
#[test]
fn stats_of_a_synthesized_seqeval_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    SEQIT.ok_in(
        d,
        [
            "seqeval",
            "synth",
            "--per-depth",
            "100",
            "--seed",
            "3",
            "--output",
            "chains.jsonl",
        ],
    );
    let stats: Value = serde_json::from_str(&SEQIT.ok_in(
        d,
        ["data", "stats", "chains.jsonl", "--no-tokens", "--json"],
    ))
    .unwrap();
    assert_eq!(stats["schema"], "seqeval");
    assert_eq!(stats["records"], 400);
    assert_eq!(stats["duplicate_prompts"], 0);
    assert_eq!(stats["without_response"], 400);
    let chains = &stats["chains"];
    assert_eq!(
        chains["by_depth"],
        json!({"1": 100, "2": 100, "3": 100, "4": 100})
    );
    assert_eq!(chains["verifiable"], 400);
    let kinds = chains["step_kinds"].as_object().unwrap();
    assert_eq!(kinds.len(), seqit_verify::StepKind::ALL.len());
    let steps: u64 = kinds.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(steps, 100 * (1 + 2 + 3 + 4));
    // The same file given twice over has every prompt repeated.
    let text = std::fs::read_to_string(d.join("chains.jsonl")).unwrap();
    std::fs::write(d.join("twice.jsonl"), format!("{text}{text}")).unwrap();
    let table = SEQIT.ok_in(d, ["data", "stats", "twice.jsonl", "--no-tokens"]);
    assert!(table.contains("duplicate prompts: 400"), "{table}");
}

/// The printer's levels: `convert`'s summary is a note (stderr), `mix`'s a result
/// (stdout); `--quiet` drops notes but never results, and the output is the same.
#[test]
fn quiet_keeps_results_and_drops_notes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = fixture("data/alpaca.jsonl");
    let source = source.to_str().unwrap();
    let convert = |quiet: bool, output: &str| {
        let mut args = vec!["data", "convert", source, output, "--to", "messages"];
        if quiet {
            args.push("--quiet");
        }
        let out = SEQIT.output_in(d, &args);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(convert(false, "loud.jsonl").contains("loud.jsonl"));
    assert_eq!(convert(true, "quiet.jsonl"), "");
    assert_eq!(
        std::fs::read(d.join("loud.jsonl")).unwrap(),
        std::fs::read(d.join("quiet.jsonl")).unwrap()
    );
    let out = SEQIT.output_in(d, ["data", "mix", source, "--output", "mix.jsonl", "-q"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("mix.jsonl"));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
