//! Translate-then-predict on the committed fixtures: an English Alpaca file with seven
//! items (five with an input) and German and French translations.

use std::path::{Path, PathBuf};

use seqit_build::prompts::TranslatePrompts;
use seqit_build::translate::{build, run, LanguageSource, TranslateConfig, TranslateJob, Variant};
use seqit_data::{ReadOptions, Record, Schema};
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/translate")
        .join(name)
}

fn config(languages: &[&str], per_language: usize, seed: u64, variant: Variant) -> TranslateConfig {
    TranslateConfig {
        english: fixture("en.json"),
        languages: languages
            .iter()
            .map(|spec| {
                let (code, file) = spec.split_once('=').unwrap();
                LanguageSource::parse(&format!("{code}={}", fixture(file).display())).unwrap()
            })
            .collect(),
        per_language,
        seed,
        variant,
    }
}

fn read(name: &str) -> Vec<Record> {
    seqit_data::read_all(&fixture(name), &ReadOptions::default())
        .unwrap()
        .1
}

#[test]
fn selected_items_become_translate_then_predict_and_the_rest_stay() {
    let prompts = TranslatePrompts::load(None).unwrap();
    let (records, report) = build(
        &config(
            &["de=de.json", "fr=fr.json"],
            2,
            7,
            Variant::TranslateThenPredict,
        ),
        &prompts,
    )
    .unwrap();
    let english = read("en.json");
    let german = read("de.json");
    let french = read("fr.json");
    assert_eq!(records.len(), 7);
    assert_eq!(report.items, 7);
    assert_eq!(report.with_input, 5);
    assert_eq!(report.rewritten.get("de"), Some(&2));
    assert_eq!(report.rewritten.get("fr"), Some(&2));
    assert_eq!(report.prompts.version, "build/v1/translate");

    let mut rewritten = 0;
    for (index, record) in records.iter().enumerate() {
        let Some(provenance) = record.metadata.get("provenance") else {
            assert_eq!(
                record, &english[index],
                "record {index} should be unchanged"
            );
            continue;
        };
        rewritten += 1;
        let en = &english[index];
        assert!(en.input.is_some(), "record {index} had no input");
        let (name, translated) = match provenance["language"].as_str().unwrap() {
            "de" => ("German", &german[index]),
            "fr" => ("French", &french[index]),
            other => panic!("unexpected language {other}"),
        };
        let task = en.instruction().unwrap();
        let lowered = format!("{}{}", task[..1].to_lowercase(), &task[1..]);
        assert_eq!(
            record.instruction().unwrap(),
            format!(
                "First translate the input, which is written in {name}, into English. Then, working from your English translation, {lowered}"
            )
        );
        assert_eq!(record.input, translated.input);
        assert_eq!(
            record.response().unwrap(),
            format!(
                "Translation into English: {}\nResult: {}",
                en.input.as_deref().unwrap(),
                en.response().unwrap()
            )
        );
        assert_eq!(provenance["source_index"], json!(index));
        assert_eq!(provenance["builder"], json!("translate-then-predict"));
        assert_eq!(provenance["original_instruction"], json!(task));
        assert_eq!(provenance["prompt_hash"], json!(prompts.version.hash));
    }
    assert_eq!(rewritten, 4);
}

#[test]
fn one_record_exactly() {
    // With one language and every item with an input drawn, record 5 (Italy) is German.
    let prompts = TranslatePrompts::load(None).unwrap();
    let (records, _) = build(
        &config(&["de=de.json"], 5, 0, Variant::TranslateThenPredict),
        &prompts,
    )
    .unwrap();
    let record = &records[5];
    assert_eq!(
        record.messages[0].content,
        "First translate the input, which is written in German, into English. Then, working from \
         your English translation, find the capital of the country.\n\nItalien"
    );
    assert_eq!(
        record.messages[1].content,
        "Translation into English: Italy\nResult: Rome"
    );
    assert_eq!(records[0], read("en.json")[0]);
}

#[test]
fn same_seed_same_output_and_the_control_uses_the_same_items() {
    let prompts = TranslatePrompts::load(None).unwrap();
    let languages = ["de=de.json", "fr=fr.json"];
    let (a, _) = build(
        &config(&languages, 2, 3, Variant::TranslateThenPredict),
        &prompts,
    )
    .unwrap();
    let (b, _) = build(
        &config(&languages, 2, 3, Variant::TranslateThenPredict),
        &prompts,
    )
    .unwrap();
    assert_eq!(a, b);
    let (control, report) =
        build(&config(&languages, 2, 3, Variant::CrossLingual), &prompts).unwrap();
    assert_eq!(report.rewritten.values().sum::<usize>(), 4);
    let english = read("en.json");
    for (index, (sit, control)) in a.iter().zip(&control).enumerate() {
        let language = |r: &Record| r.metadata.get("provenance").map(|p| p["language"].clone());
        assert_eq!(language(sit), language(control), "record {index}");
        if language(control).is_some() {
            // Cross-lingual: the English task on the translated input, answered directly.
            assert_eq!(control.instruction(), english[index].instruction());
            assert_eq!(control.input, sit.input);
            assert_eq!(control.response(), english[index].response());
            assert_eq!(
                control.metadata["provenance"]["builder"],
                json!("cross-lingual")
            );
        }
    }
    let seeds: Vec<Vec<Option<serde_json::Value>>> = (0..6)
        .map(|seed| {
            build(
                &config(&languages, 2, seed, Variant::TranslateThenPredict),
                &prompts,
            )
            .unwrap()
            .0
            .iter()
            .map(|r| r.metadata.get("provenance").map(|p| p["language"].clone()))
            .collect()
        })
        .collect();
    assert!(
        seeds.iter().any(|s| s != &seeds[0]),
        "the seed changes the selection"
    );
}

#[test]
fn misaligned_files_are_named_with_the_record() {
    let prompts = TranslatePrompts::load(None).unwrap();
    let err = build(
        &config(
            &["de=de.json", "fr=fr_short.json"],
            1,
            0,
            Variant::TranslateThenPredict,
        ),
        &prompts,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("fr_short.json") && err.contains("has 6 records") && err.contains("has 7"),
        "{err}"
    );
    let err = build(
        &config(
            &["de=de_missing_input.json"],
            1,
            0,
            Variant::TranslateThenPredict,
        ),
        &prompts,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("de_missing_input.json")
            && err.contains("record 5")
            && err.contains("`input`"),
        "{err}"
    );
    let err = build(
        &config(
            &["de=de.json", "fr=fr.json"],
            3,
            0,
            Variant::TranslateThenPredict,
        ),
        &prompts,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("needs 6 items") && err.contains("has 5") && err.contains("at most 2"),
        "{err}"
    );
}

#[test]
fn the_job_writes_the_output_and_its_report_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let job = TranslateJob {
        config: config(&["de=de.json"], 2, 7, Variant::CrossLingual),
        prompts: None,
        output: dir.path().join("sit.jsonl"),
        schema: Schema::Messages,
    };
    let report = run(&job).unwrap();
    assert_eq!(report.rewritten.get("de"), Some(&2));
    let written = seqit_testkit::read_jsonl(&job.output);
    assert_eq!(written.len(), 7);
    assert!(written.iter().all(|r| r.get("messages").is_some()));
    let beside = seqit_testkit::read_json(&dir.path().join("sit.jsonl.report.json"));
    assert_eq!(beside, serde_json::to_value(&report).unwrap());

    let none = TranslateJob {
        config: config(&["de=de.json"], 0, 7, Variant::CrossLingual),
        ..job
    };
    let error = run(&none).unwrap_err().to_string();
    assert_eq!(error, "`--per-language` must be at least 1");
}
