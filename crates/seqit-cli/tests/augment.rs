//! `seqit augment` and `seqit seqeval build` as a user runs them (the real binary):
//! with the local default model as teacher, against the fault server, killed with
//! SIGKILL and run again.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use seqit_faultserver::{BackgroundFaultServer, FaultConfig};
use seqit_testkit::cli::{run_ok, Seqit};
use seqit_testkit::{fixture, read_jsonl};
use serde_json::{json, Value};

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

/// 20 items, 2 iterations, SmolLM2 as the teacher (compact prompts and 16 new tokens
/// keep it short): every record has provenance, IT and SIT hold the same ids, and the
/// request log shows that items classified D in round 1 were not sent in round 2.
#[test]
fn local_teacher_two_iterations() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sit, it, log) = (
        dir.path().join("sit.jsonl"),
        dir.path().join("it.jsonl"),
        dir.path().join("requests.jsonl"),
    );
    let prompts = fixture("augment/compact-prompts");
    run_ok(
        SEQIT
            .command()
            .args(["augment", "--input"])
            .arg(fixture("augment/alpaca20.jsonl"))
            .arg("--output")
            .arg(&sit)
            .arg("--it-output")
            .arg(&it)
            .arg("--request-log")
            .arg(&log)
            .arg("--prompts")
            .arg(&prompts)
            .args([
                "--iterations",
                "2",
                // The compact test prompts have no structured formats: the paper's
                // free-text path, whose D items are what this test follows.
                "--structured",
                "off",
                "--max-tokens",
                "16",
                "--concurrency",
                "20",
                "--local-batch",
                "20",
                "--seed",
                "3",
            ]),
    );
    let sit_records = read_jsonl(&sit);
    let it_records = read_jsonl(&it);
    assert_eq!(sit_records.len(), 20);
    let ids = |records: &[Value]| records.iter().map(|r| r["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&sit_records), ids(&it_records));
    let requests = read_jsonl(&log);
    let mut frozen_after_round_one = 0;
    for record in &sit_records {
        let p = &record["provenance"];
        for key in [
            "source_id",
            "original_instruction",
            "options",
            "iterations",
            "parse_failures",
            "teacher",
            "decoding",
            "prompts",
        ] {
            assert!(!p[key].is_null(), "`{key}` missing in {record}");
        }
        assert_eq!(p["teacher"]["endpoint_kind"], "local");
        assert_eq!(p["prompts"]["version"], "seq-instruct/compact-test");
        assert_eq!(p["decoding"]["max_tokens"], 16);
        let id = &record["id"];
        let round_two = requests
            .iter()
            .filter(|r| &r["id"] == id && r["iteration"] == 2)
            .count();
        let classified_twice = p["iterations"].as_array().unwrap().len() == 2;
        if p["options"][0] == "D" {
            frozen_after_round_one += 1;
            assert_eq!(round_two, 0, "D item {id} was sent in round 2");
            assert!(!classified_twice);
        } else {
            assert!(round_two >= 1, "item {id} was not classified in round 2");
            assert!(classified_twice);
        }
        assert!(record["output"].as_str().is_some_and(|o| !o.is_empty()));
    }
    assert!(frozen_after_round_one > 0, "no item was classified D");
    let stats: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("sit.jsonl.stats.json")).unwrap())
            .unwrap();
    assert_eq!(stats["per_iteration"][0]["classified"], 20);
    assert_eq!(
        stats["per_iteration"][1]["classified"],
        20 - frozen_after_round_one
    );
}

fn fault_items(n: usize) -> String {
    (0..n)
        .map(|i| format!("{}\n", json!({"id": format!("r{i}"), "instruction": format!("Task number {i}: say something."), "output": "x"})))
        .collect()
}

fn augment_against(url: &str, input: &Path, out: &Path) -> Command {
    let mut command = SEQIT.command();
    command
        .args(["augment", "--input"])
        .arg(input)
        .arg("--output")
        .arg(out)
        .arg("--it-output")
        .arg(out.with_extension("it.jsonl"))
        .args([
            "--teacher-endpoint",
            url,
            "--teacher-model",
            "fault",
            // The fault server's replies are free text (the paper's path).
            "--structured",
            "off",
            "--concurrency",
            "16",
            "--seed",
            "5",
        ]);
    command
}

/// SIGKILL in the middle of a run against the fault server, then the same command
/// again: all items, each once, in order, byte-identical to an uninterrupted run, and
/// nothing answered before the kill is asked again (beyond the requests in flight).
#[test]
fn killed_augment_resumes_without_loss_or_duplicates() {
    const ITEMS: usize = 300;
    let server = BackgroundFaultServer::start(FaultConfig {
        latency: Duration::from_millis(10),
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, fault_items(ITEMS)).unwrap();
    let killed_dir = dir.path().join("killed");
    let out = killed_dir.join("sit.jsonl");
    let state = killed_dir.join("sit.jsonl.state.jsonl");
    let mut child = augment_against(server.url(), &input, &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&state).map_or(0, |t| t.lines().count());
        if lines >= 60 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!out.exists(), "a killed run must not leave an output");
    // Requests in flight at the kill are still answered by the server (into a closed
    // connection) during its latency: wait until it has settled, so that they count as
    // answered before the resumed run asks them again.
    let mut answered = server.answered_counts();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = server.answered_counts();
        if now == answered {
            break;
        }
        answered = now;
    }
    let answered_before: HashSet<String> = answered.into_keys().collect();
    let resumed = run_ok(&mut augment_against(server.url(), &input, &out));
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        stderr.contains("items reused from an earlier run"),
        "{stderr}"
    );
    let records = read_jsonl(&out);
    let ids: Vec<String> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..ITEMS).map(|i| format!("r{i}")).collect();
    assert_eq!(ids, expected);
    // Asked twice: only what was in flight at the kill (at most the concurrency).
    let counts = server.answered_counts();
    let twice: Vec<&String> = counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(
        twice.len() <= 16,
        "{} requests were asked twice",
        twice.len()
    );
    assert!(twice.iter().all(|k| answered_before.contains(*k)));

    // The same run uninterrupted (fresh state and cache) writes the same bytes.
    let clean = dir.path().join("clean").join("sit.jsonl");
    run_ok(&mut augment_against(server.url(), &input, &clean));
    assert_eq!(std::fs::read(&clean).unwrap(), std::fs::read(&out).unwrap());
    assert_eq!(
        std::fs::read(clean.with_extension("it.jsonl")).unwrap(),
        std::fs::read(out.with_extension("it.jsonl")).unwrap()
    );
}

/// A scripted teacher that answers every rewrite request with `reply`.
fn rewriting_teacher(reply: &str) -> BackgroundFaultServer {
    BackgroundFaultServer::start(FaultConfig {
        script: vec![seqit_faultserver::ScriptRule {
            contains: "#Explanation#:".into(),
            reply: reply.into(),
        }],
        ..FaultConfig::default()
    })
    .unwrap()
}

/// `seqit seqeval build` of `input` into `out` with the scripted teacher at `url`, free
/// text (no structured output).
fn seqeval_build(url: &str, input: &Path, out: &Path) -> Command {
    let mut command = SEQIT.command();
    command
        .args(["seqeval", "build", "--input"])
        .arg(input)
        .arg("--output")
        .arg(out)
        .args([
            "--teacher-endpoint",
            url,
            "--teacher-model",
            "fault",
            "--structured",
            "off",
        ]);
    command
}

/// `seqit seqeval build` against a scripted teacher: depths by the shares, one mode per
/// round, sub-steps in chain order, the shared record schema.
#[test]
fn seqeval_build_against_a_scripted_teacher() {
    let server = rewriting_teacher(
        "Because.\n#Added Task#: Step added.\n#New Instruction#: Longer task. ###",
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("prompts.txt");
    let prompts: String = (0..40).map(|i| format!("Base prompt {i}.\n")).collect();
    std::fs::write(&input, prompts).unwrap();
    let out = dir.path().join("seqeval.jsonl");
    run_ok(seqeval_build(server.url(), &input, &out).args(["--seed", "2"]));
    let records = read_jsonl(&out);
    assert_eq!(records.len(), 40);
    let mut by_depth: HashMap<u64, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let keys: HashSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            HashSet::from([
                "id",
                "instruction",
                "input",
                "iteration",
                "original_instruction",
                "modes",
                "sub_steps"
            ])
        );
        assert_eq!(r["original_instruction"], format!("Base prompt {i}."));
        let depth = r["iteration"].as_u64().unwrap();
        *by_depth.entry(depth).or_default() += 1;
        let modes = r["modes"].as_array().unwrap();
        assert_eq!(modes.len() as u64, depth);
        assert!(modes[1..].iter().all(|m| m == "prefix" || m == "suffix"));
        let steps = r["sub_steps"].as_array().unwrap();
        assert_eq!(steps.len() as u64, depth + 1);
        assert!(steps.contains(&json!(format!("Base prompt {i}."))));
        assert_eq!(r["instruction"], "Longer task.");
    }
    assert_eq!(by_depth, HashMap::from([(1, 4), (2, 8), (3, 12), (4, 16)]));
    // Round 1 rewrites a base prompt; later rounds rewrite a chain and ask for a longer
    // one, as the paper's later rounds do.
    let log = server.log();
    let (first, later): (Vec<_>, Vec<_>) = log
        .iter()
        .partition(|e| e.prompt.contains("#Instruction#: Base prompt"));
    assert_eq!(first.len(), 40);
    // (Identical later-round requests are asked once: the instructions are all the same.)
    assert!(!later.is_empty() && later.len() <= 8 + 2 * 12 + 3 * 16);
    let longer = "The new instruction must be a longer chain";
    assert!(first.iter().all(|e| !e.prompt.contains(longer)));
    assert!(later.iter().all(|e| e.prompt.contains(longer)));
    // Re-running reuses everything.
    let before = server.log().len();
    run_ok(seqeval_build(server.url(), &input, &out).args(["--seed", "2"]));
    assert_eq!(server.log().len(), before);
}

/// A rewrite that names no added task is asked again (`--attempts`), and a chain whose
/// round never names one stops before it: no record has an empty sub-step, and the
/// stops are counted.
#[test]
fn seqeval_build_never_writes_an_empty_sub_step() {
    let server =
        rewriting_teacher("Because.\n#New Instruction#: Longer task, no added task named. ###");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("prompts.txt");
    std::fs::write(&input, "Base prompt A.\nBase prompt B.\n").unwrap();
    let out = dir.path().join("seqeval.jsonl");
    run_ok(seqeval_build(server.url(), &input, &out).args(["--attempts", "3", "--no-cache"]));
    assert!(
        read_jsonl(&out).is_empty(),
        "no chain has a named first step"
    );
    let stats: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("seqeval.jsonl.stats.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stats["dropped"], 2, "{stats}");
    assert_eq!(stats["missing_added_tasks"], 2, "{stats}");
    assert_eq!(server.log().len(), 2 * 3, "each first round asked 3 times");
}
