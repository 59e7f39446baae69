//! `seqit eval vqa` on the first 14 questions of easy-VQA's test split (from its
//! package) against the fault server's scripted mode on loopback: every request carries
//! the question's own image as a PNG data URL, and the scores equal hand-computed ones.

use std::path::Path;

use base64::Engine as _;
use seqit_faultserver::{BackgroundFaultServer, FaultConfig, ScriptRule};
use seqit_testkit::cli::Seqit;
use serde_json::Value;

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

/// easy-VQA's test split inside the assets.
const EASY_VQA_TEST: &str = "easy_vqa/data/test";

/// Expected (followed, contains-correct, VQA accuracy).
type Expected = (bool, bool, f64);

/// Question (items 0–13 of the test split), label, scripted reply, expected scores.
const CASES: &[(&str, &str, &str, Expected)] = &[
    (
        "what is the red shape?",
        "triangle",
        "Description: a red triangle.\nAnswer: triangle",
        (true, true, 1.0),
    ),
    (
        "what is the color of the triangle?",
        "red",
        "Description: a red triangle\nAnswer: Red.",
        (true, true, 1.0),
    ),
    // Contains the label: correct, but not an exact VQA answer.
    (
        "what is the color of the shape?",
        "red",
        "Answer: it is red",
        (true, true, 0.0),
    ),
    (
        "does the image contain a circle?",
        "no",
        "Description: a red triangle\nAnswer: yes",
        (true, false, 0.0),
    ),
    // No "answer" at all: wrong in strict mode.
    (
        "is there not a black shape in the image?",
        "yes",
        "The shape is red, so yes.",
        (false, false, 0.0),
    ),
    (
        "does the image contain a green shape?",
        "no",
        "Description: a red triangle\nANSWER: No",
        (true, true, 1.0),
    ),
    // "no" inside "not" does not count.
    (
        "is a green shape present?",
        "no",
        "answer: not sure",
        (true, false, 0.0),
    ),
    // The last "answer" counts.
    (
        "is there a blue shape in the image?",
        "no",
        "Description: the answer is a triangle. Answer: no",
        (true, true, 1.0),
    ),
    (
        "is no blue shape present?",
        "yes",
        "Answer: yes",
        (true, true, 1.0),
    ),
    (
        "is a yellow shape present?",
        "no",
        "Answer: no.",
        (true, true, 1.0),
    ),
    (
        "is there a brown shape?",
        "no",
        "Answer: yes",
        (true, false, 0.0),
    ),
    (
        "what is the color of the rectangle?",
        "yellow",
        "Description: a yellow rectangle\nAnswer: yellow",
        (true, true, 1.0),
    ),
    (
        "is there not a circle in the image?",
        "yes",
        "Answer: yes",
        (true, true, 1.0),
    ),
    (
        "is there a triangle?",
        "no",
        "Answer: no",
        (true, true, 1.0),
    ),
];

fn run_eval(server: &BackgroundFaultServer, split: &Path, out: &Path) {
    let run = SEQIT
        .command()
        .args([
            "eval",
            "vqa",
            "--data",
            split.to_str().unwrap(),
            "--limit",
            "14",
            "--endpoint",
            server.url(),
            "--model",
            "vision-model",
            "--max-tokens",
            "32",
            "--concurrency",
            "4",
            "--output",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn images_go_as_data_urls_and_scores_match_hand_computed_values() {
    let Some(split) = seqit_testkit::require_asset(EASY_VQA_TEST) else {
        return;
    };
    let script = CASES
        .iter()
        .map(|(question, _, reply, _)| ScriptRule {
            contains: format!("Question: {question}"),
            reply: reply.to_string(),
        })
        .collect();
    let server = BackgroundFaultServer::start(FaultConfig {
        script,
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run_eval(&server, &split, &out);

    // Every request: the prompt text, then the question's image as a PNG data URL.
    let questions: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(split.join("questions.json")).unwrap())
            .unwrap();
    let log = server.log();
    assert_eq!(log.len(), CASES.len());
    for entry in &log {
        let parts: Value = serde_json::from_str(&entry.prompt).unwrap();
        let text = parts[0]["text"].as_str().unwrap();
        assert_eq!(parts[0]["type"], "text");
        assert!(
            text.starts_with("First describe the image in one sentence"),
            "{text}"
        );
        let index = CASES
            .iter()
            .position(|(q, ..)| text.ends_with(&format!("Question: {q}")))
            .unwrap_or_else(|| panic!("unexpected prompt {text}"));
        assert_eq!(questions[index][0].as_str().unwrap(), CASES[index].0);
        let image_id = questions[index][2].as_u64().unwrap();
        assert_eq!(parts[1]["type"], "image_url");
        let url = parts[1]["image_url"]["url"].as_str().unwrap();
        let encoded = url
            .strip_prefix("data:image/png;base64,")
            .expect("a PNG data URL");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(
            bytes,
            std::fs::read(split.join(format!("images/{image_id}.png"))).unwrap(),
            "item {index}"
        );
    }

    // Per-item results in data order, with the expected scores.
    let results: Vec<Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), CASES.len());
    for (i, (result, (question, label, reply, (followed, correct, vqa)))) in
        results.iter().zip(CASES).enumerate()
    {
        assert_eq!(result["id"], i.to_string());
        assert_eq!(result["question"], *question);
        assert_eq!(result["label"], *label);
        assert_eq!(result["output"], *reply);
        assert_eq!(
            (
                result["followed"].as_bool().unwrap(),
                result["correct"].as_bool().unwrap(),
                result["vqa_accuracy"].as_f64().unwrap()
            ),
            (*followed, *correct, *vqa),
            "item {i}: {reply}"
        );
    }
    // 10 of 14 contain the label, 9 are exact, 13 say "answer".
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["items"], 14);
    assert_eq!(metrics["metrics"]["accuracy"]["hits"], 10);
    assert!(
        (metrics["metrics"]["accuracy"]["value"].as_f64().unwrap() - 10.0 / 14.0).abs() < 1e-12
    );
    assert!((metrics["metrics"]["vqa_accuracy"].as_f64().unwrap() - 9.0 / 14.0).abs() < 1e-12);
    assert_eq!(metrics["metrics"]["follow_rate"]["hits"], 13);
    assert_eq!(metrics["settings"]["model"], "vision-model");
    assert_eq!(
        metrics["settings"]["prompt"]["version"],
        "vqa/v1/caption_answer"
    );
    assert_eq!(metrics["settings"]["mode"], "strict");
    assert!(!out.join("results.jsonl.partial").exists());

    // A second run answers from the request cache: nothing more reaches the server.
    std::fs::remove_file(out.join("results.jsonl")).unwrap();
    run_eval(&server, &split, &out);
    assert_eq!(server.log().len(), CASES.len());
    let again = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(again.lines().count(), CASES.len());
}

#[test]
fn vqav2_scores_use_the_ten_human_answers() {
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../seqit-build/tests/fixtures/vqav2");
    // Replies and the expected VQA accuracy, computed by hand from the fixture's answers.
    let cases = [
        // 8 of 10 said "white": every left-out subset keeps ≥ 3 → 1.
        ("What color is the plate?", "Answer: white", true, 1.0),
        // One human said "3": 9 subsets with 1 match (1/3), 1 with none → 0.3.
        ("How many giraffes are there?", "Answer: 3", false, 0.3),
        ("Is there food on the plate?", "Answer: Yes.", true, 1.0),
        // Two said "roses": (2 × 1/3 + 8 × 2/3) / 10 = 0.6.
        ("What is in the vase?", "Answer: roses", false, 0.6),
    ];
    let server = BackgroundFaultServer::start(FaultConfig {
        script: cases
            .iter()
            .map(|(q, reply, ..)| ScriptRule {
                contains: format!("Question: {q}"),
                reply: reply.to_string(),
            })
            .collect(),
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let run = SEQIT
        .command()
        .args(["eval", "vqa", "--data"])
        .arg(fixtures.join("questions.json"))
        .arg("--annotations")
        .arg(fixtures.join("annotations.json"))
        .arg("--images")
        .arg(fixtures.join("images"))
        .args([
            "--endpoint",
            server.url(),
            "--model",
            "vision-model",
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
    for entry in server.log() {
        let parts: Value = serde_json::from_str(&entry.prompt).unwrap();
        let url = parts[1]["image_url"]["url"].as_str().unwrap();
        assert!(url.starts_with("data:image/jpeg;base64,"), "{url}");
    }
    let results: Vec<Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (result, (question, _, correct, vqa)) in results.iter().zip(&cases) {
        assert_eq!(result["question"], *question);
        assert_eq!(result["answers"].as_array().unwrap().len(), 10);
        assert_eq!(result["correct"], *correct, "{question}");
        assert!(
            (result["vqa_accuracy"].as_f64().unwrap() - vqa).abs() < 1e-12,
            "{question}: {}",
            result["vqa_accuracy"]
        );
    }
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["metrics"]["accuracy"]["hits"], 2);
    assert!((metrics["metrics"]["vqa_accuracy"].as_f64().unwrap() - 0.725).abs() < 1e-12);
}

/// Complete lines of the journal after its settings header.
fn journaled(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| {
            text.split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .count()
                .saturating_sub(1)
        })
        .unwrap_or(0)
}

#[test]
fn a_killed_run_resumes_without_asking_journaled_questions_again() {
    const ITEMS: usize = 200;
    let server = BackgroundFaultServer::start(FaultConfig {
        latency: std::time::Duration::from_millis(20),
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let Some(split) = seqit_testkit::require_asset(EASY_VQA_TEST) else {
        return;
    };
    let limit = ITEMS.to_string();
    let args = [
        "eval",
        "vqa",
        "--data",
        split.to_str().unwrap(),
        "--limit",
        &limit,
        "--endpoint",
        server.url(),
        "--model",
        "vision-model",
        "--concurrency",
        "4",
        "--output",
        out.to_str().unwrap(),
    ];
    let mut child = SEQIT
        .command()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let journal = out.join("results.jsonl.partial");
    let started = std::time::Instant::now();
    while journaled(&journal) < 50 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before the kill point"
        );
        assert!(started.elapsed().as_secs() < 60, "the run made no progress");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_before = journaled(&journal);
    let asked_before = server.log().len();
    assert!(
        done_before >= 50 && asked_before < ITEMS,
        "{done_before} {asked_before}"
    );

    let run = SEQIT.output(args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let asked_after = server.log().len() - asked_before;
    assert!(
        asked_after <= ITEMS - done_before,
        "{asked_after} asked again after {done_before} were journaled"
    );
    let ids: Vec<String> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, (0..ITEMS).map(|i| i.to_string()).collect::<Vec<_>>());
    // Every distinct request was answered; none more than twice (an answer in flight at
    // the kill may be asked once more).
    let counts = server.answered_counts();
    assert_eq!(counts.len(), ITEMS);
    assert!(counts.values().all(|&n| n <= 2));
}
