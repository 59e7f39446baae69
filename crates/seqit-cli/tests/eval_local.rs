//! End to end with the local default model (SmolLM2-135M) answering and judging:
//! `seqit eval seqeval` on the 10-item fixture (short answers and verdicts; the pairwise
//! comparison is covered with a scripted judge in `eval_seqeval.rs`), and `seqit eval
//! gsm8k` on one 8-shot problem. Asserts the files' structure and the accounting
//! of verdicts (a model this small rarely writes a parseable verdict: every item is
//! either scored or counted as a parse failure), not the scores themselves.

use seqit_testkit::cli::Seqit;
use seqit_testkit::{fixture, read_json, read_jsonl};

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

#[test]
fn seqeval_with_the_local_model_as_answerer_and_judge_when_asked() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seqeval");
    let eval = |extra: &[&str]| {
        SEQIT
            .command()
            .args(["eval", "seqeval", "--data"])
            .arg(fixture("eval/seqeval_small.jsonl"))
            .args(["--max-tokens", "16", "--judge-max-tokens", "32", "--output"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    // The model under test does not judge itself unless asked to.
    let refused = eval(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("the judge would be the model under test")
            && stderr.contains("--self-judge"),
        "{stderr}"
    );
    assert!(!out.join("items.jsonl").exists());
    let run = eval(&["--self-judge"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    println!("{stdout}");

    let items = read_jsonl(&out.join("items.jsonl"));
    assert_eq!(items.len(), 10);
    for item in &items {
        assert!(
            !item["output"].as_str().unwrap().trim().is_empty(),
            "{item}"
        );
        for raw in [
            &item["following"]["judge_raw"],
            &item["quality"]["judge_raw"],
        ] {
            assert!(raw.is_string(), "{item}");
        }
        assert!(item["pairwise"].is_null(), "no reference, no comparison");
    }
    let metrics = read_json(&out.join("metrics.json"));
    let scores = &metrics["scores"];
    let by_depth: Vec<u64> = (1..=4)
        .map(|d| scores["by_depth"][d.to_string()]["items"].as_u64().unwrap())
        .collect();
    assert_eq!(by_depth, [2, 3, 3, 2]);
    let all = &scores["overall"];
    // The structured judge (the default): every verdict parses, and the local engine's
    // log-probabilities give every item a probability-weighted score too.
    for (score, failures) in [("following_rate", "following"), ("quality", "quality")] {
        assert_eq!(all[score]["n"], 10, "{all}");
        assert_eq!(all["parse_failures"][failures], 0, "{all}");
    }
    assert_eq!(all["logprob_scores"]["expected_quality"]["n"], 10, "{all}");
    assert_eq!(
        all["logprob_scores"]["chain_yes_probability"]["n"], 10,
        "{all}"
    );
    let expected = all["logprob_scores"]["expected_quality"]["mean"]
        .as_f64()
        .unwrap();
    assert!((1.0..=5.0).contains(&expected), "{all}");
    let settings = &metrics["settings"];
    assert_eq!(settings["max_tokens"], 16);
    assert_eq!(settings["temperature"], 0.0);
    assert_eq!(settings["judge"]["max_tokens"], 32);
    assert_eq!(settings["judge"]["structured"], true);
    assert_eq!(settings["model"], settings["judge"]["model"]);
}

#[test]
fn gsm8k_with_the_local_model() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gsm8k");
    let run = SEQIT
        .command()
        .args(["eval", "gsm8k", "--data"])
        .arg(fixture("eval/gsm8k_mini.jsonl"))
        .args(["--limit", "1", "--max-tokens", "16", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let items = read_jsonl(&out.join("items.jsonl"));
    assert_eq!(items.len(), 1);
    for item in &items {
        assert!(
            item["prompt"]
                .as_str()
                .unwrap()
                .matches("Question:")
                .count()
                == 9,
            "8 shots and the question"
        );
        assert!(item["correct"].is_boolean() && item["gold"].is_string());
    }
    let metrics = read_json(&out.join("metrics.json"));
    assert_eq!(metrics["scores"]["exact_match"]["rate"]["total"], 1);
    assert_eq!(metrics["settings"]["prompt"]["version"], "gsm8k/v1/cot");
}
