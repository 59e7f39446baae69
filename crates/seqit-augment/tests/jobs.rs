//! The whole jobs against the fault server's scripted mode on loopback: the teacher
//! opened from [`TeacherSettings`] with the request cache beside the output, settings
//! refused before any request, and the summaries the CLI prints.

use seqit_augment::{AugmentJob, AugmentPaths, AugmentSettings, Silent, SynthJob, TeacherSettings};
use seqit_data::{Record, Schema, WriteOptions};
use seqit_faultserver::{FaultConfig, FaultServer, ScriptRule};
use seqit_llm::DEFAULT_CACHE_FILE;
use seqit_testkit::read_jsonl;
use seqit_verify::{perfect_answer, SynthSettings};

fn teacher(url: &str) -> TeacherSettings {
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        teacher: TeacherSettings,
    }
    let flags = [
        "augment",
        "--teacher-endpoint",
        url,
        "--teacher-model",
        "scripted",
        "--concurrency",
        "2",
        "--timeout",
        "30",
        "--max-retries",
        "0",
        "--local-batch",
        "1",
    ];
    <Flags as clap::Parser>::parse_from(flags).teacher
}

#[tokio::test]
async fn augment_opens_the_teacher_with_the_cache_beside_the_output() {
    // Every item is classified D (kept as it is), then answered (an echo).
    let server = FaultServer::start(FaultConfig {
        script: vec![ScriptRule {
            contains: "#Reasoning#:".into(),
            reply: "Nothing to add.\nOption: D".into(),
        }],
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let records = [
        Record::exchange("First task.", None, Some("old")),
        Record::exchange("Second task.", None, Some("old")),
    ];
    seqit_data::write_all(&input, &WriteOptions::new(Schema::Alpaca), &records).unwrap();
    let job = AugmentJob {
        input,
        input_format: None,
        paths: AugmentPaths {
            output: dir.path().join("sit.jsonl"),
            it_output: Some(dir.path().join("it.jsonl")),
            schema: Schema::Alpaca,
        },
        settings: AugmentSettings {
            iterations: 1,
            structured: false,
            ..AugmentSettings::paper(4)
        },
        verify: None,
        teacher: teacher(server.url()),
    };
    let report = seqit_augment::augment(&job, |_| Silent).await.unwrap();
    assert!(dir.path().join(DEFAULT_CACHE_FILE).exists());
    assert_eq!(read_jsonl(&job.paths.output).len(), 2);
    assert_eq!(read_jsonl(&dir.path().join("it.jsonl")).len(), 2);
    let summary = report.summary(&job.paths);
    assert!(summary.starts_with(&report.stats), "{summary}");
    assert!(
        summary.ends_with(&format!(
            "wrote {}, {} and {} (0 items reused from an earlier run)",
            job.paths.output.display(),
            dir.path().join("it.jsonl").display(),
            job.paths.stats().display()
        )),
        "{summary}"
    );
    let asked = server.log().len();
    let again = seqit_augment::augment(&job, |_| Silent).await.unwrap();
    assert_eq!(again.resumed, 2);
    assert_eq!(server.log().len(), asked, "a finished run asks nothing");

    // Settings that cannot work are refused before any request.
    let refused = |change: fn(&mut AugmentJob)| {
        let mut bad = job.clone();
        bad.paths.output = dir.path().join("other.jsonl");
        change(&mut bad);
        async move {
            seqit_augment::augment(&bad, |_| Silent)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    assert_eq!(
        refused(|job| job.paths.it_output = Some(job.paths.output.clone())).await,
        "`--it-output` and `--output` are the same file"
    );
    assert_eq!(
        refused(|job| job.paths.schema = Schema::Prompts).await,
        "`--format prompts` cannot hold augmented data\nhint: use alpaca, messages or sharegpt"
    );
    assert_eq!(
        refused(|job| job.settings.iterations = 0).await,
        "`--iterations` must be at least 1"
    );
    assert_eq!(
        refused(|job| job.teacher.concurrency = 0).await,
        "`--concurrency` must be at least 1"
    );
    assert_eq!(server.log().len(), asked);
    server.stop().await;
}

#[tokio::test]
async fn synthesized_chains_get_verified_answers() {
    let dir = tempfile::tempdir().unwrap();
    let synth = SynthJob {
        output: dir.path().join("chains.jsonl"),
        settings: SynthSettings {
            depths: vec![2],
            per_depth: 2,
            seed: 1,
        },
        templates: None,
    };
    let made = seqit_augment::synthesize_seqeval(&synth).unwrap();
    assert_eq!(made.items, 2);
    let items = seqit_verify::read_jsonl(&synth.output).unwrap();
    let server = FaultServer::start(FaultConfig {
        script: vec![ScriptRule {
            contains: items[0].prompt.clone(),
            reply: perfect_answer(&items[0]),
        }],
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let mut teacher = teacher(server.url());
    teacher.no_cache = true;
    let job = AugmentJob {
        input: synth.output.clone(),
        input_format: None,
        paths: AugmentPaths {
            output: dir.path().join("verified.jsonl"),
            it_output: None,
            schema: Schema::Alpaca,
        },
        settings: AugmentSettings::paper(1),
        verify: Some(2),
        teacher,
    };
    let report = seqit_augment::augment(&job, |_| Silent).await.unwrap();
    assert!(!dir.path().join(DEFAULT_CACHE_FILE).exists());
    assert_eq!(read_jsonl(&job.paths.output).len(), 1);
    assert_eq!(
        server.log().len(),
        1 + 2,
        "one try for the right chain, two for the other"
    );
    assert!(report.summary(&job.paths).contains("\nwrote "));
    server.stop().await;
}
