//! `seqit eval seqeval` and `seqit eval alpacaeval` through the real binary against a
//! scripted OpenAI-protocol server on loopback: the judge prompts the server received
//! are exactly seqit's rendered `judge/v1` prompts, verdicts are scored as scripted,
//! and a run killed with SIGKILL resumes without losing or repeating an item.

use std::process::Stdio;
use std::time::{Duration, Instant};

use seqit_eval::judge::JudgePrompts;
use seqit_faultserver::{BackgroundFaultServer, FaultConfig, Outcome, ScriptRule};
use seqit_testkit::cli::Seqit;
use seqit_testkit::{fixture, read_jsonl};
use serde_json::{json, Value};

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

fn rule(contains: &str, reply: &str) -> ScriptRule {
    ScriptRule {
        contains: contains.into(),
        reply: reply.into(),
    }
}

/// Judge verdicts first (their prompts quote the instructions), then the answers.
fn script() -> Vec<ScriptRule> {
    vec![
        rule("1. Name three primary colors.", "Task 1: yes\nOverall: yes"),
        rule(
            "2. Explain when it is used.",
            "Task 1: yes\n**Task 2:** no\nOverall: no",
        ),
        rule(
            "3. Write one sentence using both fruits.",
            "They seem fine to me.",
        ),
        rule("Rate the quality", "Clear and correct.\nRating: 4"),
        rule("### Response A\nANSWER s01", "Winner: A"),
        rule("### Response A\nReference answer for s01.", "Winner: B"),
        rule("### Response A\nANSWER s02", "Winner: tie"),
        rule("### Response A\nReference answer for s02.", "Winner: A"),
        rule("Name three primary colors.", "ANSWER s01"),
        rule("Translate 'good morning'", "ANSWER s02"),
        rule("First list two fruits.", "ANSWER s03"),
    ]
}

fn seqeval_args<'a>(
    url: &'a str,
    output: &'a str,
    data: &'a str,
    reference: &'a str,
) -> Vec<&'a str> {
    vec![
        "eval",
        "seqeval",
        "--data",
        data,
        "--endpoint",
        url,
        "--model",
        "subject",
        "--judge-endpoint",
        url,
        "--judge-model",
        "judge",
        "--reference",
        reference,
        "--output",
        output,
        "--max-tokens",
        "64",
        "--judge-max-tokens",
        "64",
        // The scripted verdicts include malformed ones on purpose (free-text parsing).
        "--judge-structured",
        "off",
        "--concurrency",
        "4",
    ]
}

#[test]
fn judge_prompts_sent_and_verdicts_scored() {
    let server = BackgroundFaultServer::start(FaultConfig {
        script: script(),
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = fixture("eval/seqeval_small.jsonl");
    let reference = fixture("eval/seqeval_reference.json");
    let mut args = seqeval_args(
        server.url(),
        out.to_str().unwrap(),
        data.to_str().unwrap(),
        reference.to_str().unwrap(),
    );
    args.extend(["--limit", "3"]);
    let run = SEQIT.output(&args);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );

    // The prompts the server got: 3 answers, then per item following, quality and the
    // pairwise question in both orders.
    let prompts: Vec<String> = server.log().into_iter().map(|e| e.prompt).collect();
    assert_eq!(prompts.len(), 3 * 5, "{prompts:#?}");
    let judge = JudgePrompts::builtin();
    let render = |p: &seqit_eval::prompt::FewShot, fields: &[(&str, &str)]| {
        p.render(&fields.iter().copied().collect()).unwrap().text
    };
    let instruction = "Translate 'good morning' into French, then explain when it is used.";
    let expected = [
        render(
            &judge.following,
            &[
                ("instruction", instruction),
                (
                    "steps",
                    "1. Translate 'good morning' into French.\n2. Explain when it is used.",
                ),
                ("n", "2"),
                ("response", "ANSWER s02"),
            ],
        ),
        render(
            &judge.quality,
            &[("instruction", instruction), ("response", "ANSWER s02")],
        ),
        render(
            &judge.pairwise,
            &[
                ("instruction", instruction),
                ("response_a", "ANSWER s02"),
                ("response_b", "Reference answer for s02."),
            ],
        ),
        render(
            &judge.pairwise,
            &[
                ("instruction", instruction),
                ("response_a", "Reference answer for s02."),
                ("response_b", "ANSWER s02"),
            ],
        ),
        instruction.to_string(),
    ];
    for prompt in &expected {
        assert_eq!(
            prompts.iter().filter(|p| *p == prompt).count(),
            1,
            "not sent once:\n{prompt}"
        );
    }
    assert!(expected[0].contains("Answer with exactly 2 task lines"));

    let items = read_jsonl(&out.join("items.jsonl"));
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["s01", "s02", "s03"]);
    assert_eq!(items[1]["output"], "ANSWER s02");
    assert_eq!(
        items[1]["following"]["steps"],
        serde_json::json!([true, false])
    );
    assert_eq!(items[2]["following"]["judge_raw"], "They seem fine to me.");
    assert!(items[2]["following"]["all_steps"].is_null());
    assert_eq!(items[0]["pairwise"]["score"], 1.0);
    assert_eq!(items[1]["pairwise"]["score"], 0.25);

    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let all = &metrics["scores"]["overall"];
    assert_eq!(all["following_rate"]["mean"], 0.5);
    assert_eq!(all["following_rate"]["n"], 2);
    assert_eq!(all["quality"]["mean"], 4.0);
    assert_eq!(all["win_rate"]["mean"], 0.625);
    assert_eq!(all["parse_failures"]["following"], 1);
    assert_eq!(all["parse_failures"]["pairwise_orders"], 2);
    assert_eq!(metrics["scores"]["by_depth"]["1"]["items"], 2);
    let settings = &metrics["settings"];
    assert_eq!(settings["model"], "subject");
    assert_eq!(settings["max_tokens"], 64);
    assert_eq!(settings["judge"]["model"], "judge");
    assert_eq!(
        settings["judge"]["prompts"]["following"]["version"],
        "judge/v1/following"
    );
    assert_eq!(
        settings["judge"]["prompts"]["following"]["hash"],
        judge.following.hash.as_str()
    );
    assert!(!out.join("items.jsonl.partial").exists());

    // A second run asks nothing: verdicts and answers are cached.
    let before = server.log().len();
    std::fs::remove_file(out.join("items.jsonl")).unwrap();
    let rerun = SEQIT.output(&args);
    assert!(rerun.status.success());
    assert_eq!(server.log().len(), before);
    assert_eq!(read_jsonl(&out.join("items.jsonl")), items);
}

#[test]
fn killed_seqeval_resumes_without_loss_or_duplicates() {
    let server = BackgroundFaultServer::start(FaultConfig {
        script: script(),
        latency: Duration::from_millis(150),
        max_concurrency: Some(1),
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = fixture("eval/seqeval_small.jsonl");
    let reference = fixture("eval/seqeval_reference.json");
    let args = seqeval_args(
        server.url(),
        out.to_str().unwrap(),
        data.to_str().unwrap(),
        reference.to_str().unwrap(),
    );
    let journal = out.join("items.jsonl.partial");
    let finished =
        || std::fs::read_to_string(&journal).map_or(0, |t| t.lines().count().saturating_sub(1));
    let mut child = SEQIT
        .command()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while finished() < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        assert!(started.elapsed() < Duration::from_secs(40), "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_at_kill = finished();
    assert!(done_at_kill < 10 && !out.join("items.jsonl").exists());
    let answered_at_kill = server
        .log()
        .iter()
        .filter(|e| e.outcome == Outcome::Answered)
        .count();

    let rerun = SEQIT.output(&args);
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("resuming: {done_at_kill} of 10 items")),
        "{stderr}"
    );
    let items = read_jsonl(&out.join("items.jsonl"));
    let ids: Vec<String> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("s{i:02}")).collect();
    assert_eq!(ids, expected, "every item exactly once, in data order");
    // Each distinct request was answered once: nothing received before the kill was
    // asked again (only requests in flight at the kill can repeat).
    let log = server.log();
    let mut counts = std::collections::HashMap::new();
    for entry in log.iter().filter(|e| e.outcome == Outcome::Answered) {
        *counts.entry(entry.key.clone()).or_insert(0) += 1;
    }
    let repeated = counts.values().filter(|&&c| c > 1).count();
    assert!(
        repeated <= 1,
        "{repeated} requests answered twice (max_concurrency 1 allows one in flight)"
    );
    // 10 items × (answer + following + quality + 2 pairwise) distinct requests.
    assert_eq!(counts.len(), 50);
    assert!(answered_at_kill >= 3 * 5);
}

#[test]
fn alpacaeval_win_rate_and_annotations() {
    let server = BackgroundFaultServer::start(FaultConfig {
        script: vec![
            rule("### Response A\nmodel one", "Winner: A"),
            rule("### Response A\nref one", "Winner: B"),
            rule("### Response A\nmodel two", "Winner: B"),
            rule("### Response A\nref two", "Winner: A"),
            rule("### Response A\nmodel three, much longer", "Winner: tie"),
            rule("### Response A\nref three", "Winner: tie"),
        ],
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outputs = dir.path().join("model.json");
    let reference = dir.path().join("ref.json");
    std::fs::write(
        &outputs,
        r#"[{"instruction":"one","output":"model one","generator":"m"},
            {"instruction":"two","output":"model two","generator":"m"},
            {"instruction":"three","output":"model three, much longer","generator":"m"}]"#,
    )
    .unwrap();
    std::fs::write(
        &reference,
        r#"[{"instruction":"three","output":"ref three","generator":"r"},
            {"instruction":"one","output":"ref one","generator":"r"},
            {"instruction":"two","output":"ref two","generator":"r"}]"#,
    )
    .unwrap();
    let out = dir.path().join("ae");
    let run = SEQIT
        .command()
        .args([
            "eval",
            "alpacaeval",
            "--outputs",
            outputs.to_str().unwrap(),
            "--reference",
        ])
        .arg(&reference)
        .args([
            "--judge-endpoint",
            server.url(),
            "--judge-model",
            "judge",
            "--output",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(server.log().len(), 6);
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let scores = &metrics["scores"];
    // Scores 1 (won both orders), 0 (lost both), 0.5 (tied): win rate 50%,
    // se = sqrt(((.5² + .5² + 0) / 2) / 3) = sqrt(1/12).
    assert_eq!(scores["win_rate"], 50.0);
    let se = scores["standard_error"].as_f64().unwrap();
    assert!((se - 100.0 * (1.0f64 / 12.0).sqrt()).abs() < 1e-9, "{se}");
    assert_eq!(
        (
            scores["n_wins"].as_u64(),
            scores["n_wins_base"].as_u64(),
            scores["n_draws"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert!(scores["length_controlled_winrate"].is_f64());
    let annotations: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("annotations.json")).unwrap())
            .unwrap();
    let first = &annotations[0];
    assert_eq!(first["instruction"], "one");
    assert_eq!(first["output_1"], "ref one");
    assert_eq!(first["output_2"], "model one");
    assert_eq!(first["preference"], 2.0);
    assert_eq!(annotations[1]["preference"], 1.0);
    assert_eq!(annotations[2]["preference"], 1.5);
    assert_eq!(first["annotator"], "judge");
}

#[test]
fn mtbench_grades_both_turns_with_the_packaged_prompts() {
    let Some(data_dir) = seqit_testkit::require_asset(seqit_eval::mtbench::PACKAGED_DATA) else {
        return;
    };
    let questions =
        seqit_eval::mtbench::read_questions(&data_dir.join("mt_bench/question.jsonl")).unwrap();
    assert_eq!(questions.len(), 80);
    let judge_prompts =
        seqit_eval::mtbench::read_judge_prompts(&data_dir.join("judge_prompts.jsonl")).unwrap();
    let server = BackgroundFaultServer::start(FaultConfig {
        script: vec![
            rule(
                "<|The Start of Assistant A's Conversation with User|>",
                "Weaker follow-up.\nRating: [[6]]",
            ),
            rule("[The Start of Assistant's Answer]", "Good.\nRating: [[8]]"),
            rule("Rewrite your previous response", "SECOND ANSWER"),
            rule(
                "travel blog post about a recent trip to Hawaii",
                "FIRST ANSWER",
            ),
        ],
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mt");
    let run = SEQIT
        .command()
        .args(["eval", "mtbench", "--data-dir"])
        .arg(&data_dir)
        .args([
            "--limit",
            "1",
            "--endpoint",
            server.url(),
            "--model",
            "m",
            "--judge-endpoint",
            server.url(),
        ])
        .args(["--judge-model", "judge", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Turn 1, turn 2 (with the first exchange), and one grading per turn.
    let prompts: Vec<String> = server.log().into_iter().map(|e| e.prompt).collect();
    assert_eq!(prompts.len(), 4);
    let q = &questions[0];
    let single = &judge_prompts["single-v1"].prompt_template;
    let expected_turn1 = single
        .replace("{question}", &q.turns[0])
        .replace("{answer}", "FIRST ANSWER");
    assert!(prompts.contains(&expected_turn1), "{prompts:#?}");
    let multi = &judge_prompts["single-v1-multi-turn"].prompt_template;
    let expected_turn2 = multi
        .replace("{question_1}", &q.turns[0])
        .replace("{answer_1}", "FIRST ANSWER")
        .replace("{question_2}", &q.turns[1])
        .replace("{answer_2}", "SECOND ANSWER");
    assert!(prompts.contains(&expected_turn2), "{prompts:#?}");
    let items = read_jsonl(&out.join("items.jsonl"));
    assert_eq!(
        items[0]["answers"],
        serde_json::json!(["FIRST ANSWER", "SECOND ANSWER"])
    );
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let scores = &metrics["scores"];
    assert_eq!(scores["turn_1"]["mean"], 8.0);
    assert_eq!(scores["turn_2"]["mean"], 6.0);
    assert_eq!(scores["overall"]["mean"], 7.0);
    assert_eq!(scores["by_category"]["writing"]["n"], 2);
    assert_eq!(scores["parse_failures"], 0);
}

/// `seqit seqeval synth` writes a verifiable set; `seqit eval seqeval --verifiable-only`
/// scores answers by program alone. The scripted answerer follows every chain of the
/// even items and leaves out the last step of the odd ones: exactly half the chains pass,
/// and each odd chain breaks at its last step.
#[test]
fn verifiable_seqeval_is_scored_by_program_without_a_judge() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("verifiable.jsonl");
    let synth = SEQIT
        .command()
        .args([
            "seqeval",
            "synth",
            "--per-depth",
            "3",
            "--seed",
            "9",
            "--output",
        ])
        .arg(&set)
        .output()
        .unwrap();
    assert!(
        synth.status.success(),
        "{}",
        String::from_utf8_lossy(&synth.stderr)
    );
    let items = seqit_verify::read_jsonl(&set).unwrap();
    assert_eq!(items.len(), 12);
    let prompts: std::collections::HashSet<&str> =
        items.iter().map(|i| i.prompt.as_str()).collect();
    assert_eq!(prompts.len(), 12);

    let script: Vec<ScriptRule> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let answer = if i % 2 == 0 {
                seqit_verify::perfect_answer(item)
            } else {
                seqit_verify::answer_skipping(item, item.depth - 1)
            };
            rule(&item.prompt, &answer)
        })
        .collect();
    let server = BackgroundFaultServer::start(FaultConfig {
        script,
        ..FaultConfig::default()
    })
    .unwrap();
    let out = dir.path().join("run");
    let run = SEQIT
        .command()
        .args(["eval", "seqeval", "--verifiable-only", "--data"])
        .arg(&set)
        .args([
            "--endpoint",
            server.url(),
            "--model",
            "subject",
            "--max-tokens",
            "256",
            "--output",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("verified by program"), "{stdout}");
    // Only the answers were asked: no judge.
    assert_eq!(server.log().len(), 12);
    let records = read_jsonl(&out.join("items.jsonl"));
    for (i, record) in records.iter().enumerate() {
        let item = items.iter().find(|it| it.id == record["id"]).unwrap();
        let position = items.iter().position(|it| it.id == item.id).unwrap();
        let v = &record["verifiable"];
        assert_eq!(v["chain_passed"], position % 2 == 0, "{i}: {record}");
        if position % 2 == 1 {
            assert_eq!(v["first_failed_step"], item.depth, "{record}");
        }
        assert!(record.get("following").is_none(), "{record}");
    }
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(
        metrics["scores"]["overall"]["verifiable"]["chain_pass_rate"]["mean"],
        0.5
    );
    // Nothing was judged, so no judge verdict failed to parse.
    let failures = &metrics["scores"]["overall"]["parse_failures"];
    assert_eq!(
        (&failures["following"], &failures["quality"]),
        (&json!(0), &json!(0))
    );
    let by_kind = metrics["scores"]["verifiable_by_kind"].as_object().unwrap();
    for (kind, entry) in by_kind {
        let group = seqit_verify::StepKind::from_name(kind).unwrap().group();
        assert_eq!(
            entry["group"],
            serde_json::to_value(group).unwrap(),
            "{kind}"
        );
    }

    // A judged-only set is refused under --verifiable-only.
    let refused = SEQIT
        .command()
        .args(["eval", "seqeval", "--verifiable-only", "--data"])
        .arg(fixture("eval/seqeval_small.jsonl"))
        .args(["--endpoint", server.url(), "--model", "subject", "--output"])
        .arg(dir.path().join("refused"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("has no `steps`"));
}

/// A judge behind its own endpoint and key: `--judge-api-key-env` names the variable
/// for the judge only (the answerer's server takes no key), and the judge's requests
/// carry it.
#[test]
fn the_judge_uses_its_own_key_variable() {
    let answers = BackgroundFaultServer::start(FaultConfig {
        script: script(),
        ..FaultConfig::default()
    })
    .unwrap();
    let judge = BackgroundFaultServer::start(FaultConfig {
        script: script(),
        api_key: Some("judge-secret".into()),
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("eval/seqeval_small.jsonl");
    let run = |out: &str, extra: &[&str]| {
        SEQIT
            .command()
            .args(["eval", "seqeval", "--data"])
            .arg(&data)
            .args(["--endpoint", answers.url(), "--model", "subject"])
            .args(["--judge-endpoint", judge.url(), "--judge-model", "judge"])
            .args(["--judge-structured", "off", "--limit", "2"])
            .args(["--max-tokens", "64", "--judge-max-tokens", "64", "--output"])
            .arg(dir.path().join(out))
            .args(extra)
            .env("JUDGE_KEY", "judge-secret")
            .env_remove("OPENAI_API_KEY")
            .output()
            .unwrap()
    };
    let refused = run("without", &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let judged = run(
        "with",
        &[
            "--judge-api-key-env",
            "JUDGE_KEY",
            "--judge-concurrency",
            "2",
        ],
    );
    assert!(
        judged.status.success(),
        "{}",
        String::from_utf8_lossy(&judged.stderr)
    );
    let metrics: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("with/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["scores"]["overall"]["quality"]["n"], 2, "{metrics}");
}
