//! Verified SIT data against the fault server's scripted mode on loopback: a chain the
//! teacher answers right is kept at its first try, chains answered wrong (nothing
//! useful, or a step skipped) are asked exactly K times and dropped, and a later run
//! with a larger K asks the dropped chains only the new tries.

use std::sync::Arc;

use seqit_augment::{
    AugmentPaths, PromptSet, Silent, Teacher, TeacherInfo, VerifiedAugmenter, VerifySettings,
};
use seqit_data::Schema;
use seqit_faultserver::{FaultConfig, FaultServer, ScriptRule};
use seqit_llm::{Client, RemoteBackend, RemoteConfig};
use seqit_testkit::read_jsonl;
use seqit_verify::{answer_skipping, perfect_answer, synthesize, SynthSettings, Templates};

fn teacher(url: &str) -> Teacher {
    let backend = RemoteBackend::new(RemoteConfig::new(url, "scripted")).unwrap();
    let info = TeacherInfo {
        model: "scripted".into(),
        endpoint_kind: "remote".into(),
        backend: format!("remote `scripted` at {url}"),
    };
    Teacher::new(
        Client::new(Arc::new(backend)),
        info,
        PromptSet::builtin().cache_version(),
    )
}

#[tokio::test]
async fn keeps_the_first_passing_sample_and_drops_chains_without_one() {
    let items = synthesize(
        &SynthSettings {
            depths: vec![2, 3, 4],
            per_depth: 1,
            seed: 5,
        },
        &Templates::builtin(),
    );
    let (right, empty, skipped) = (&items[0], &items[1], &items[2]);
    let script = vec![
        ScriptRule {
            contains: right.prompt.clone(),
            reply: perfect_answer(right),
        },
        ScriptRule {
            contains: empty.prompt.clone(),
            reply: "I cannot help with that.".into(),
        },
        ScriptRule {
            contains: skipped.prompt.clone(),
            reply: answer_skipping(skipped, 1),
        },
    ];
    let server = FaultServer::start(FaultConfig {
        script,
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = AugmentPaths {
        output: dir.path().join("verified.jsonl"),
        it_output: None,
        schema: Schema::Alpaca,
    };
    let teacher = teacher(server.url());
    let run = |tries: u32| {
        let augmenter = VerifiedAugmenter {
            teacher: &teacher,
            settings: VerifySettings {
                tries,
                seed: 9,
                decoding: seqit_augment::paper_decoding(9),
            },
            concurrency: 2,
        };
        let paths = paths.clone();
        let items = items.clone();
        async move { augmenter.run(&items, &paths, &Silent).await.unwrap() }
    };

    let outcome = run(3).await;
    assert_eq!((outcome.stats.kept, outcome.stats.dropped), (1, 2));
    assert_eq!(outcome.stats.samples, 1 + 3 + 3);
    assert_eq!(server.log().len(), 7, "one request per try");
    assert_eq!(outcome.stats.first_try_pass_rate, 1.0 / 3.0);
    let records = read_jsonl(&paths.output);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["output"], perfect_answer(right).as_str());
    assert_eq!(records[0]["instruction"], right.prompt.as_str());
    let provenance = &records[0]["provenance"];
    assert_eq!(provenance["variant"], "sit-verified");
    assert_eq!(provenance["tries"], 1);
    assert_eq!(
        provenance["steps"],
        serde_json::to_value(&right.steps).unwrap()
    );

    // A larger K continues the dropped chains from their fourth try.
    let outcome = run(5).await;
    assert_eq!(outcome.resumed, 1);
    assert_eq!(server.log().len(), 7 + 2 + 2);
    assert_eq!(outcome.stats.samples, 1 + 5 + 5);
    let again = read_jsonl(&paths.output);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["output"], records[0]["output"]);
    assert_eq!(again[0]["provenance"]["tries_limit"], 5);
    let state = std::fs::read_to_string(dir.path().join("verified.jsonl.state.jsonl")).unwrap();
    assert_eq!(state.lines().count(), 3, "the journal is compacted");
    server.stop().await;
}
