//! `seqit build translate|caption` through the real binary: files written, reports
//! beside them, errors naming the file and record.

use std::path::Path;

use seqit_testkit::cli::Seqit;
use seqit_testkit::{read_json, read_jsonl};
use serde_json::Value;

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

fn fixture(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../seqit-build/tests/fixtures")
        .join(path)
        .display()
        .to_string()
}

#[test]
fn translate_writes_alpaca_and_messages_with_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sit.json");
    let de = format!("de={}", fixture("translate/de.json"));
    let fr = format!("fr={}", fixture("translate/fr.json"));
    let english = fixture("translate/en.json");
    let common = [
        "build",
        "translate",
        "--english",
        &english,
        "--lang",
        &de,
        "--lang",
        &fr,
        "--per-language",
        "2",
        "--seed",
        "7",
    ];
    let run = SEQIT.output([&common[..], &["--output", out.to_str().unwrap()]].concat());
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let records = read_json(&out);
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 7);
    let rewritten: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("provenance").is_some())
        .collect();
    assert_eq!(rewritten.len(), 4);
    for r in &rewritten {
        let output = r["output"].as_str().unwrap();
        assert!(
            output.starts_with("Translation into English: ") && output.contains("\nResult: "),
            "{output}"
        );
        assert!(r["instruction"]
            .as_str()
            .unwrap()
            .starts_with("First translate the input"));
    }
    let report = read_json(&dir.path().join("sit.json.report.json"));
    assert_eq!(report["rewritten"]["de"], 2);
    assert_eq!(report["variant"], "translate-then-predict");
    let stdout: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(stdout, report);

    // The same selection as messages JSONL, and the cross-lingual control.
    let messages = dir.path().join("sit.jsonl");
    let run = SEQIT.output(
        [
            &common[..],
            &[
                "--output",
                messages.to_str().unwrap(),
                "--format",
                "messages",
            ],
        ]
        .concat(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines = read_jsonl(&messages);
    assert_eq!(lines.len(), 7);
    for (line, alpaca) in lines.iter().zip(records) {
        assert_eq!(line["messages"][1]["content"], alpaca["output"]);
    }
    let control = dir.path().join("control.json");
    let run = SEQIT.output(
        [
            &common[..],
            &[
                "--output",
                control.to_str().unwrap(),
                "--control",
                "cross-lingual",
            ],
        ]
        .concat(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let control = read_json(&control);
    let english = read_json(Path::new(&english));
    for (i, (c, s)) in control.as_array().unwrap().iter().zip(records).enumerate() {
        assert_eq!(
            c.get("provenance").is_some(),
            s.get("provenance").is_some(),
            "record {i}"
        );
        if c.get("provenance").is_some() {
            assert_eq!(c["instruction"], english[i]["instruction"]);
            assert_eq!(c["input"], s["input"]);
            assert_eq!(c["output"], english[i]["output"]);
        }
    }
}

#[test]
fn translate_refuses_misaligned_files_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sit.json");
    let fr = format!("fr={}", fixture("translate/fr_short.json"));
    let run = SEQIT.output([
        "build",
        "translate",
        "--english",
        &fixture("translate/en.json"),
        "--lang",
        &fr,
        "--per-language",
        "1",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("fr_short.json") && stderr.contains("has 6 records"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn caption_writes_llava_files_from_easy_vqa() {
    let dir = tempfile::tempdir().unwrap();
    let sit = dir.path().join("sit.json");
    let it = dir.path().join("it.json");
    // `test` names the installed package's split (which must exist).
    if seqit_testkit::require_asset("easy_vqa/data/test").is_none() {
        return;
    }
    let run = SEQIT.output([
        "build",
        "caption",
        "--easy-vqa",
        "test",
        "--sit-output",
        sit.to_str().unwrap(),
        "--it-output",
        it.to_str().unwrap(),
        "--limit",
        "40",
        "--seed",
        "1",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let sit = read_json(&sit);
    let it = read_json(&it);
    let (sit, it) = (sit.as_array().unwrap(), it.as_array().unwrap());
    assert_eq!((sit.len(), it.len()), (40, 40));
    for (s, i) in sit.iter().zip(it) {
        assert_eq!(s["id"], i["id"]);
        assert_eq!(s["image"], i["image"]);
        assert!(Path::new(s["image"].as_str().unwrap()).is_file());
        assert!(s["conversations"][0]["value"]
            .as_str()
            .unwrap()
            .starts_with("<image>\n"));
        assert!(s["conversations"][1]["value"]
            .as_str()
            .unwrap()
            .starts_with("Description: "));
        assert!(i["conversations"][1]["value"]
            .as_str()
            .unwrap()
            .starts_with("Answer: "));
    }
    let report = read_json(&dir.path().join("sit.json.report.json"));
    assert_eq!(report["questions"], 9673);
    assert_eq!(report["written"], 40);
    assert_eq!(report["prompts"]["version"], "build/v1/caption");
}
