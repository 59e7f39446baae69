//! Caption-then-answer on the committed VQAv2 + COCO fixture and on easy-VQA from its
//! package (`$SEQIT_ASSETS/easy_vqa`; skipped without it: `seqit_testkit::require_asset`).

use std::path::{Path, PathBuf};

use seqit_build::caption::{build, run, CaptionJob, LlavaRecord};
use seqit_build::prompts::CaptionPrompts;
use seqit_build::vqa::{read_easy_vqa, read_vqav2, VqaSource, Vqav2Files};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vqav2")
        .join(name)
}

/// easy-VQA's `split` from its package, or `None` when the test is skipped
/// (`seqit_testkit::require_asset`).
fn easy_vqa(split: &str) -> Option<PathBuf> {
    seqit_testkit::require_asset(&format!("easy_vqa/data/{split}/questions.json"))
        .map(|questions| questions.parent().unwrap().to_path_buf())
}

fn vqav2_files() -> Vqav2Files {
    Vqav2Files {
        questions: fixture("questions.json"),
        annotations: fixture("annotations.json"),
        images: fixture("images"),
        captions: Some(fixture("captions.json")),
    }
}

fn turns(record: &LlavaRecord) -> (&str, &str) {
    assert_eq!(record.conversations.len(), 2);
    assert_eq!(record.conversations[0].from, "human");
    assert_eq!(record.conversations[1].from, "gpt");
    (
        &record.conversations[0].value,
        &record.conversations[1].value,
    )
}

#[test]
fn vqav2_with_coco_captions() {
    let set = read_vqav2(&vqav2_files()).unwrap();
    assert_eq!(set.items.len(), 4);
    assert_eq!(set.items[1].answers.len(), 10);
    assert_eq!(set.items[1].answer, "2");
    // Image 9 is named by the captions file, 25 by `data_subtype`, 30 by its bare id.
    let names: Vec<String> = set
        .items
        .iter()
        .map(|i| i.image.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "COCO_val2014_000000000009.jpg",
            "COCO_val2014_000000000025.jpg",
            "COCO_val2014_000000000009.jpg",
            "000000000030.jpg"
        ]
    );

    let prompts = CaptionPrompts::load(None).unwrap();
    let data = build(&set, &prompts, None, 0);
    // Image 30 has no caption: its question is left out of both files.
    assert_eq!(data.report.questions, 4);
    assert_eq!(data.report.without_caption, 1);
    assert_eq!(data.report.written, 3);
    assert_eq!(data.report.images, 2);
    let ids: Vec<&str> = data.sit.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["9000", "25000", "9001"]);
    assert_eq!(
        data.it.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ids
    );
    let (human, gpt) = turns(&data.sit[1]);
    assert_eq!(
        human,
        "<image>\nFirst describe the image in one sentence, then answer the question about it.\nQuestion: How many giraffes are there?"
    );
    // The first caption of the image, trimmed.
    assert_eq!(
        gpt,
        "Description: Two giraffes standing next to a tall tree.\nAnswer: 2"
    );
    let (human, gpt) = turns(&data.it[1]);
    assert_eq!(
        human,
        "<image>\nAnswer the question about the image.\nQuestion: How many giraffes are there?"
    );
    assert_eq!(gpt, "Answer: 2");
    assert_eq!(
        data.sit[0].image,
        fixture("images/COCO_val2014_000000000009.jpg")
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
    );
}

#[test]
fn vqav2_errors_name_the_file_and_question() {
    let dir = tempfile::tempdir().unwrap();
    let annotations = dir.path().join("annotations.json");
    let text = std::fs::read_to_string(fixture("annotations.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["annotations"].as_array_mut().unwrap().remove(0);
    std::fs::write(&annotations, value.to_string()).unwrap();
    let err = read_vqav2(&Vqav2Files {
        annotations: annotations.clone(),
        ..vqav2_files()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("annotations.json")
            && err.contains("question 25000")
            && err.contains("record 1"),
        "{err}"
    );

    let questions = dir.path().join("questions.json");
    std::fs::write(
        &questions,
        r#"{"questions": [{"image_id": 9, "question_id": "x", "question": "?"}]}"#,
    )
    .unwrap();
    let err = read_vqav2(&Vqav2Files {
        questions,
        ..vqav2_files()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("questions.json") && err.contains("questions[0].question_id"),
        "{err}"
    );

    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let err = read_vqav2(&Vqav2Files {
        images,
        ..vqav2_files()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no file for image 9") && err.contains("COCO_val2014_000000000009.jpg"),
        "{err}"
    );
}

#[test]
fn easy_vqa_test_split_from_the_package() {
    let Some(dir) = easy_vqa("test") else {
        return;
    };
    let set = read_easy_vqa(&dir).unwrap();
    assert_eq!(set.items.len(), 9673);
    assert_eq!(set.images(), 1000);
    // Captions derived from each image's own answers: 988 images get one (34 of them
    // colour only), 12 images' questions tell neither colour nor shape.
    assert_eq!(set.captions.len(), 988);
    assert_eq!(
        set.captions
            .values()
            .filter(|c| c.ends_with(" shape"))
            .count(),
        34
    );
    assert_eq!(set.captions["0"], "a red triangle");
    assert_eq!(set.captions["5"], "a brown circle");
    assert!(!set.captions.contains_key("72"));

    let prompts = CaptionPrompts::load(None).unwrap();
    let data = build(&set, &prompts, None, 0);
    assert_eq!(data.report.written, 9610);
    assert_eq!(data.report.without_caption, 63);
    assert_eq!(data.sit.len(), data.it.len());
    for (sit, it) in data.sit.iter().zip(&data.it) {
        assert_eq!((&sit.id, &sit.image), (&it.id, &it.image));
        assert!(Path::new(&sit.image).is_file(), "{} is missing", sit.image);
        let (_, sit_target) = turns(sit);
        let (_, it_target) = turns(it);
        assert!(sit_target.starts_with("Description: a "), "{sit_target}");
        assert!(sit_target.ends_with(&format!("\n{it_target}")));
        assert!(it_target.starts_with("Answer: ") && !it_target.contains("Description"));
    }
    let first = &data.sit[0];
    assert_eq!(first.id, "0");
    assert_eq!(
        first.image,
        dir.canonicalize()
            .unwrap()
            .join("images/0.png")
            .display()
            .to_string()
    );
    assert_eq!(
        turns(first),
        (
            "<image>\nFirst describe the image in one sentence, then answer the question about it.\nQuestion: what is the red shape?",
            "Description: a red triangle\nAnswer: triangle"
        )
    );
    assert_eq!(turns(&data.it[1]).1, "Answer: red");
}

#[test]
fn limit_draws_a_reproducible_sample_in_file_order() {
    let Some(train) = easy_vqa("train") else {
        return;
    };
    let set = read_easy_vqa(&train).unwrap();
    assert_eq!(set.items.len(), 38575);
    assert_eq!(set.images(), 4000);
    let prompts = CaptionPrompts::load(None).unwrap();
    let a = build(&set, &prompts, Some(100), 5);
    let b = build(&set, &prompts, Some(100), 5);
    assert_eq!(a.sit, b.sit);
    assert_eq!(a.report.written, 100);
    let ids: Vec<usize> = a.sit.iter().map(|r| r.id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_ne!(build(&set, &prompts, Some(100), 6).sit, a.sit);
}

#[test]
fn the_job_writes_both_files_and_the_report_beside_the_sit_output() {
    let dir = tempfile::tempdir().unwrap();
    let job = CaptionJob {
        source: VqaSource::Vqav2(vqav2_files()),
        sit_output: dir.path().join("sit.json"),
        it_output: dir.path().join("it.json"),
        limit: Some(2),
        seed: 3,
        prompts: None,
    };
    let report = run(&job).unwrap();
    assert_eq!(report.written, 2);
    let sit: Vec<LlavaRecord> =
        serde_json::from_value(seqit_testkit::read_json(&job.sit_output)).unwrap();
    let it: Vec<LlavaRecord> =
        serde_json::from_value(seqit_testkit::read_json(&job.it_output)).unwrap();
    assert_eq!(sit.len(), 2);
    assert_eq!(
        sit.iter().map(|r| &r.id).collect::<Vec<_>>(),
        it.iter().map(|r| &r.id).collect::<Vec<_>>()
    );
    let beside = seqit_testkit::read_json(&dir.path().join("sit.json.report.json"));
    assert_eq!(beside, serde_json::to_value(&report).unwrap());

    let error = run(&CaptionJob {
        limit: Some(0),
        ..job
    })
    .unwrap_err()
    .to_string();
    assert_eq!(error, "`--limit` must be at least 1");
}
