//! `seqit_eval::run` jobs end to end against a scripted OpenAI-compatible endpoint: the
//! files a job writes, the outcome it returns and what it reports through `Progress`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use seqit_core::progress::Progress;
use seqit_eval::run::xquad;
use seqit_eval::run::{AnswererSettings, XquadSettings};
use seqit_faultserver::{BackgroundFaultServer, FaultConfig, ScriptRule};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/xquad")
        .join(name)
}

/// Every call, as text.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Progress for Recorder {
    fn start(&self, stage: &str, total: u64, done: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("start {stage} {total} {done}"));
    }
    fn advance(&self, n: u64) {
        self.0.lock().unwrap().push(format!("advance {n}"));
    }
    fn finish(&self) {
        self.0.lock().unwrap().push("finish".into());
    }
    fn note(&self, message: &str) {
        self.0.lock().unwrap().push(format!("note {message}"));
    }
    fn warn(&self, message: &str) {
        self.0.lock().unwrap().push(format!("warn {message}"));
    }
}

fn subject(server: &BackgroundFaultServer, dir: &Path) -> AnswererSettings {
    let mut answerer = AnswererSettings::new(dir.to_path_buf());
    answerer.endpoint = Some(server.url().to_string());
    answerer.model = Some("m".into());
    answerer.run.concurrency = 2;
    answerer
}

/// The German fixture: the `xquad.en.json` beside it supplies the gold of q1 and q2
/// (answered in English), q9 is missing from it (one warning) and keeps its German
/// answer; the scores are the paper's. A second run asks nothing again (the cache).
#[test]
fn xquad_scores_german_items_against_the_english_gold() {
    let replies = [
        // q1: English answer, the English gold of q1.
        (
            "Question: Wohin mündet der Rhein?",
            "Translation into English: Where does the Rhine flow into?\nAnswer: the North Sea",
        ),
        // q2: `result:` comes first in the paper's list, whatever comes before it; the
        // German gold alone would not match.
        (
            "Question: Wie lang ist der Rhein?",
            "The answer is 1,000 km? No. Result: 1,230 kilometres.",
        ),
        // q9: no marker (not followed), whole output; German gold only.
        (
            "Question: Wo entspringt der Rhein?",
            "Der Rhein entspringt in den Schweizer Alpen.",
        ),
    ];
    let script = replies
        .iter()
        .map(|(contains, reply)| ScriptRule {
            contains: contains.to_string(),
            reply: reply.to_string(),
        })
        .collect();
    let server = BackgroundFaultServer::start(FaultConfig {
        script,
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("xquad");
    let job = XquadSettings::new(vec![fixture("xquad.de.json")], subject(&server, &out));
    let progress = Recorder::default();
    let outcome = xquad::run(&job, &progress).unwrap();
    assert_eq!(server.log().len(), 3);

    let events = progress.events();
    assert!(
        events[0].starts_with("warn 1 item (de: 1) has no question with the same id in `"),
        "{events:?}"
    );
    assert_eq!(
        events[1..],
        [
            "start xquad 3 0",
            "advance 1",
            "advance 1",
            "advance 1",
            "finish"
        ]
    );
    assert_eq!(
        outcome.lines,
        [
            format!(
                "wrote {} and {}",
                out.join("items.jsonl").display(),
                out.join("metrics.json").display()
            ),
            "accuracy (the paper's: after the last marker, else the whole output): 1.0000 (3 of 3)"
                .to_string(),
            "accuracy (strict: only after a marker): 0.6667 (2 of 3)".to_string(),
            "follow rate: 0.6667 (2 of 3)".to_string(),
            "English gold: 2 items (1 missing from the English file, 0 without)".to_string(),
        ]
    );

    let records: Vec<Value> = std::fs::read_to_string(out.join("items.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<Value> = records
        .iter()
        .map(|r| {
            json!([
                r["id"],
                r["english_gold"],
                r["followed"],
                r["extracted"],
                r["correct"],
                r["correct_strict"]
            ])
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            json!(["q1", "used", true, "the North Sea", true, true]),
            json!(["q2", "used", true, "1,230 kilometres", true, true]),
            json!([
                "q9",
                "missing",
                false,
                "Der Rhein entspringt in den Schweizer Alpen",
                true,
                false
            ]),
        ]
    );
    assert_eq!(
        records[0]["gold"],
        json!(["the North Sea", "North Sea", "in die Nordsee", "Nordsee"])
    );
    assert_eq!(records[2]["gold"], json!(["in den Schweizer Alpen"]));

    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics, outcome.metrics);
    let scores = &metrics["scores"];
    assert_eq!(scores["accuracy"]["rate"]["hits"], 3);
    assert_eq!(scores["accuracy_strict"]["rate"]["hits"], 2);
    assert_eq!(scores["follow_rate"]["hits"], 2);
    assert_eq!(
        scores["english_gold"],
        json!({"used": 2, "missing": 1, "not_used": 0})
    );
    assert_eq!(
        metrics["settings"]["english"],
        json!([fixture("xquad.en.json")])
    );
    assert_eq!(
        metrics["settings"]["scoring"]["markers"],
        json!(["result:", "answer:", "answer is", "result is"])
    );

    let again = xquad::run(&job, &seqit_core::progress::Silent).unwrap();
    assert_eq!(server.log().len(), 3, "the second run asked again");
    assert_eq!(again.lines[1..], outcome.lines[1..]);
}
