//! End to end against the fault server's scripted mode on loopback: given
//! classification and rewrite texts, the pipeline must send exactly the prompts it
//! should (five classification examples and three rewrite examples, shuffled by the
//! seeded per-item RNG), freeze D items, keep originals on unparseable rewrites,
//! continue a 1-iteration run to 2 iterations without redoing round 1, and write
//! byte-identical output from the same seed and cached answers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use seqit_augment::{
    item_rng, AugmentPaths, AugmentSettings, Augmenter, Edit, PromptSet, Silent, Teacher,
    TeacherInfo, CLASSIFY_SHOTS, REWRITE_SHOTS,
};
use seqit_core::Prompt;
use seqit_data::{Record, Schema};
use seqit_faultserver::{FaultConfig, FaultServer, LogEntry, ScriptRule};
use seqit_llm::{Cache, Client, RemoteBackend, RemoteConfig};
use seqit_testkit::read_jsonl;
use serde_json::Value;

const SEED: u64 = 11;

/// (id, instruction) of the fixture items.
const ITEMS: [(&str, &str); 5] = [
    ("a", "Alpha task."),
    ("b", "Bravo task."),
    ("c", "Charlie task."),
    ("d", "Delta task."),
    ("e", "Echo task."),
];

fn rule(contains: &str, reply: &str) -> ScriptRule {
    ScriptRule {
        contains: contains.into(),
        reply: reply.into(),
    }
}

/// Classification prompts end with the item and `#Reasoning#:`, rewrites with
/// `#Explanation#:`, so each rule matches one request kind of one instruction.
fn script() -> Vec<ScriptRule> {
    let classify = |instruction: &str, reply: &str| {
        rule(
            &format!("#Instruction#: {instruction}\n#Reasoning#:"),
            reply,
        )
    };
    let rewrite = |instruction: &str, reply: &str| {
        rule(
            &format!("#Instruction#: {instruction}\n#Explanation#:"),
            reply,
        )
    };
    vec![
        // a: B, then d (lower case) in round 2.
        classify("Alpha task.", "It needs a first step.\nOption: B"),
        rewrite("Alpha task.", "A first step helps.\n#Added Task#: Pre A.\n#New Instruction#: First pre A. Then Alpha task.\n###"),
        classify("First pre A. Then Alpha task.", "Enough steps already. option d"),
        // b: a bare letter D.
        classify("Bravo task.", "Nothing to add.\nD."),
        // c: C, but the rewrite has no marker (kept as it is, counted).
        classify("Charlie task.", "A check afterwards helps; Option: C"),
        rewrite("Charlie task.", "Here is my rewrite: Charlie task, then check it."),
        // d: keyword decompose, then B.
        classify("Delta task.", "It is best to decompose this."),
        rewrite("Delta task.", "#New Instruction#: Do D1. Then do D2.\n###"),
        classify("Do D1. Then do D2.", "Option: B"),
        rewrite("Do D1. Then do D2.", "#Added Task#: D0.\n#new instruction#: First D0. Then do D1. Then do D2.###"),
        // e: nothing readable: D by default.
        classify("Echo task.", "Hmm."),
    ]
}

fn records() -> Vec<Record> {
    ITEMS
        .iter()
        .map(|(id, instruction)| {
            let mut r = Record::exchange(instruction, None, Some("old answer"));
            r.id = Some(Value::from(*id));
            r
        })
        .collect()
}

fn teacher(url: &str, cache: Option<&Path>) -> Teacher {
    let backend = RemoteBackend::new(RemoteConfig::new(url, "scripted")).unwrap();
    let mut client = Client::new(Arc::new(backend));
    if let Some(cache) = cache {
        client = client.with_cache(Arc::new(Cache::open(cache).unwrap()));
    }
    let info = TeacherInfo {
        model: "scripted".into(),
        endpoint_kind: "remote".into(),
        backend: format!("remote `scripted` at {url}"),
    };
    Teacher::new(client, info, PromptSet::builtin().cache_version())
}

async fn augment(
    teacher: &Teacher,
    iterations: u32,
    out: &Path,
    it: &Path,
) -> seqit_augment::AugmentOutcome {
    let prompts = PromptSet::builtin();
    let augmenter = Augmenter {
        prompts: &prompts,
        teacher,
        settings: AugmentSettings {
            iterations,
            // The paper's free-text path: the scripted replies are not all in the
            // structured formats (a constrained run would ask again).
            structured: false,
            ..AugmentSettings::paper(SEED)
        },
        concurrency: 3,
    };
    let paths = AugmentPaths {
        output: out.to_path_buf(),
        it_output: Some(it.to_path_buf()),
        schema: Schema::Alpaca,
    };
    augmenter
        .run(&records(), Schema::Alpaca, &paths, &Silent)
        .await
        .unwrap()
}

fn user_text(prompt: &Prompt) -> String {
    let Prompt::Chat(messages) = prompt else {
        panic!("chat prompts")
    };
    messages.last().unwrap().content.clone()
}

fn is_classify(entry: &LogEntry) -> bool {
    entry.prompt.ends_with("#Reasoning#:")
}

fn is_rewrite(entry: &LogEntry) -> bool {
    entry.prompt.ends_with("#Explanation#:")
}

#[tokio::test]
async fn scripted_teacher_end_to_end() {
    let server = FaultServer::start(FaultConfig {
        script: script(),
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (out, it) = (dir.path().join("sit.jsonl"), dir.path().join("it.jsonl"));
    let cache = dir.path().join("cache.sqlite");

    // One iteration, then continued to two: round 1 is not asked again.
    let first = augment(&teacher(server.url(), Some(&cache)), 1, &out, &it).await;
    assert_eq!(first.stats.per_iteration.len(), 1);
    let after_round_one = server.log().len();
    let requests = dir.path().join("requests.jsonl");
    let teacher2 = teacher(server.url(), Some(&cache))
        .with_request_log(&requests)
        .unwrap();
    let outcome = augment(&teacher2, 2, &out, &it).await;
    // The continued run did not even look round 1 up.
    let asked = read_jsonl(&requests);
    assert!(!asked.is_empty());
    assert!(asked.iter().all(|r| r["iteration"] != 1), "{asked:#?}");
    let log = server.log();
    let round_two = &log[after_round_one..];
    // Round-2 work only: classify a, c, d; rewrite c and d; answers of a and d's new
    // instructions (c kept its instruction, already answered).
    let classified: Vec<&str> = round_two
        .iter()
        .filter(|e| is_classify(e))
        .map(|e| e.prompt.as_str())
        .collect();
    assert_eq!(classified.len(), 3, "{classified:#?}");
    for frozen in ["Bravo task.", "Echo task."] {
        assert!(
            !round_two.iter().any(|e| e.prompt.contains(frozen)),
            "the D item `{frozen}` was sent again in round 2"
        );
    }

    // The exact prompts: every classification and rewrite sent is the one the seeded
    // per-item RNG gives for that item and iteration.
    let prompts = PromptSet::builtin();
    let expected_classify: Vec<(String, u32, &str)> = vec![
        ("a".into(), 1, "Alpha task."),
        ("b".into(), 1, "Bravo task."),
        ("c".into(), 1, "Charlie task."),
        ("d".into(), 1, "Delta task."),
        ("e".into(), 1, "Echo task."),
        ("a".into(), 2, "First pre A. Then Alpha task."),
        ("c".into(), 2, "Charlie task."),
        ("d".into(), 2, "Do D1. Then do D2."),
    ];
    let mut expected: HashMap<String, usize> = HashMap::new();
    for (id, iteration, instruction) in &expected_classify {
        let text = user_text(&prompts.classify(
            instruction,
            None,
            &mut item_rng(SEED, id, *iteration, "classify"),
        ));
        assert_eq!(text.matches("#Reasoning#:").count(), CLASSIFY_SHOTS + 1);
        *expected.entry(text).or_default() += 1;
    }
    let expected_rewrites = [
        ("a", 1, Edit::Prefix, "Alpha task."),
        ("c", 1, Edit::Suffix, "Charlie task."),
        ("d", 1, Edit::Decompose, "Delta task."),
        ("c", 2, Edit::Suffix, "Charlie task."),
        ("d", 2, Edit::Prefix, "Do D1. Then do D2."),
    ];
    for (id, iteration, edit, instruction) in expected_rewrites {
        let text = user_text(&prompts.rewrite(
            edit,
            instruction,
            None,
            false,
            &mut item_rng(SEED, id, iteration, "rewrite"),
        ));
        assert_eq!(text.matches("\n#New Instruction#:").count(), REWRITE_SHOTS);
        *expected.entry(text).or_default() += 1;
    }
    let mut sent: HashMap<String, usize> = HashMap::new();
    for entry in log.iter().filter(|e| is_classify(e) || is_rewrite(e)) {
        *sent.entry(entry.prompt.clone()).or_default() += 1;
    }
    assert_eq!(sent, expected);
    // Shuffled: the five classification prompts of round 1 do not all show the
    // examples in one order.
    let orders: std::collections::HashSet<String> = log
        .iter()
        .filter(|e| is_classify(e))
        .map(|e| {
            e.prompt
                .split("Now the instruction")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(orders.len() > 1, "the examples were not shuffled");

    // Outputs: SIT and IT with the same ids in input order, provenance on every record.
    let sit = read_jsonl(&out);
    let it_records = read_jsonl(&it);
    let ids = |records: &[Value]| records.iter().map(|r| r["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&sit), ids(&it_records));
    assert_eq!(ids(&sit), ["a", "b", "c", "d", "e"].map(Value::from));
    let finals = [
        "First pre A. Then Alpha task.",
        "Bravo task.",
        "Charlie task.",
        "First D0. Then do D1. Then do D2.",
        "Echo task.",
    ];
    let options = [
        vec!["B", "D"],
        vec!["D"],
        vec!["C", "C"],
        vec!["A", "B"],
        vec!["D"],
    ];
    for (i, record) in sit.iter().enumerate() {
        assert_eq!(record["instruction"], finals[i]);
        // The answer is the teacher's (the fault server echoes the prompt).
        assert!(
            record["output"].as_str().unwrap().ends_with(finals[i]),
            "{record}"
        );
        let p = &record["provenance"];
        assert_eq!(p["source_id"], ITEMS[i].0);
        assert_eq!(p["original_instruction"], ITEMS[i].1);
        assert_eq!(p["options"], serde_json::json!(options[i]));
        assert_eq!(p["teacher"]["model"], "scripted");
        assert_eq!(p["teacher"]["endpoint_kind"], "remote");
        assert_eq!(p["decoding"]["temperature"], 1.0);
        assert_eq!(p["decoding"]["top_k"], 50);
        assert_eq!(p["prompts"]["version"], "seq-instruct/v2");
        assert_eq!(p["prompts"]["hash"], prompts.hash());
        assert!(p["iterations"][0]["classification"].as_str().unwrap().len() > 1);
        assert_eq!(it_records[i]["instruction"], ITEMS[i].1);
        assert_eq!(it_records[i]["provenance"]["variant"], "it");
    }
    assert_eq!(
        sit[0]["provenance"]["iterations"][0]["added_task"],
        "Pre A."
    );
    assert_eq!(
        sit[0]["provenance"]["iterations"][0]["rewrites"][0]["raw"],
        "A first step helps.\n#Added Task#: Pre A.\n#New Instruction#: First pre A. Then Alpha task.\n###"
    );
    // c: two unusable rewrites, e: an unreadable classification.
    assert_eq!(sit[2]["provenance"]["parse_failures"], 2);
    assert_eq!(sit[4]["provenance"]["parse_failures"], 1);
    assert_eq!(sit[4]["provenance"]["iterations"][0]["rule"], "default");
    // Items never rewritten get the same answer as their IT control.
    assert_eq!(sit[1]["output"], it_records[1]["output"]);

    let stats = &outcome.stats;
    let r1 = &stats.per_iteration[0];
    assert_eq!(
        (
            r1.classified,
            r1.counts[&'A'],
            r1.counts[&'B'],
            r1.counts[&'C'],
            r1.counts[&'D']
        ),
        (5, 1, 1, 1, 2)
    );
    assert_eq!((r1.unparsed_classifications, r1.failed_rewrites), (1, 1));
    // Round 2 over all five items, as the paper counts: b and e, frozen in round 1,
    // stay D beside the one new D.
    let r2 = &stats.per_iteration[1];
    assert_eq!(
        (
            r2.classified,
            r2.frozen_before,
            r2.counts[&'B'],
            r2.counts[&'C'],
            r2.counts[&'D']
        ),
        (3, 2, 1, 1, 3)
    );
    assert_eq!(r2.shares[&'D'], 60.0);
    assert_eq!(r1.paper_shares.as_ref().unwrap()[&'B'], 51.0);
    assert_eq!(stats.rewritten_items, 2);
    let stats_file: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("sit.jsonl.stats.json")).unwrap())
            .unwrap();
    assert_eq!(stats_file["per_iteration"][1]["counts"]["D"], 3);

    // Determinism: a fresh run (new state, same seed) answered from the cache alone
    // writes byte-identical files and sends nothing.
    let sit_bytes = std::fs::read(&out).unwrap();
    let it_bytes = std::fs::read(&it).unwrap();
    let (out2, it2) = (
        dir.path().join("again.jsonl"),
        dir.path().join("again-it.jsonl"),
    );
    let before = server.log().len();
    augment(&teacher(server.url(), Some(&cache)), 2, &out2, &it2).await;
    assert_eq!(
        server.log().len(),
        before,
        "a cached rerun asked the teacher"
    );
    assert_eq!(std::fs::read(&out2).unwrap(), sit_bytes);
    assert_eq!(std::fs::read(&it2).unwrap(), it_bytes);
}

/// Step 0 (split) and the refinement check against scripted answers: a rewrite judged
/// "lost" is retried `refine` times and then dropped; one judged "keep" is used.
#[tokio::test]
async fn split_and_refinement_check() {
    let classify = |instruction: &str| {
        rule(
            &format!("#Instruction#: {instruction}\n\n#Input#: Q"),
            "Option: C",
        )
    };
    let server = FaultServer::start(FaultConfig {
        script: vec![
            rule(
                "#Text#: Kilo mixed",
                "#Instruction#: Kilo task.\n#Input#: Q\n###",
            ),
            rule(
                "#Text#: Lima mixed",
                "#Instruction#: Lima task.\n#Input#: Q\n###",
            ),
            rule(
                "#Original Instruction#: Kilo task.",
                "It dropped the question. Verdict: lost",
            ),
            rule(
                "#Original Instruction#: Lima task.",
                "Everything is there. Verdict: keep",
            ),
            rule(
                "#Explanation#:",
                "#Added Task#: Check.\n#New Instruction#: Rewritten task. Then check.\n###",
            ),
            classify("Kilo task."),
            classify("Lima task."),
        ],
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Record> = ["Kilo mixed: Q", "Lima mixed: Q"]
        .iter()
        .map(|text| Record::prompt(text))
        .collect();
    let prompts = PromptSet::builtin();
    let teacher = teacher(server.url(), None);
    let augmenter = Augmenter {
        prompts: &prompts,
        teacher: &teacher,
        settings: AugmentSettings {
            iterations: 1,
            split: true,
            refine: 2,
            structured: false,
            ..AugmentSettings::paper(SEED)
        },
        concurrency: 2,
    };
    let out = dir.path().join("sit.jsonl");
    let paths = AugmentPaths {
        output: out.clone(),
        it_output: None,
        schema: Schema::Alpaca,
    };
    augmenter
        .run(&records, Schema::FlanCot, &paths, &Silent)
        .await
        .unwrap();
    let sit = read_jsonl(&out);
    // Kilo: split, then three rewrites all judged lost: the split instruction stays.
    assert_eq!(sit[0]["instruction"], "Kilo task.");
    assert_eq!(sit[0]["input"], "Q");
    let round = &sit[0]["provenance"]["iterations"][0];
    assert_eq!(round["rewrites"].as_array().unwrap().len(), 3);
    assert_eq!(round["rewrite_failed"], true);
    assert_eq!(round["rewrites"][0]["kept_everything"], false);
    assert_eq!(sit[0]["provenance"]["split"]["failed"], false);
    assert_eq!(
        sit[0]["provenance"]["original_instruction"],
        "Kilo mixed: Q"
    );
    // Lima: the first rewrite is kept.
    assert_eq!(sit[1]["instruction"], "Rewritten task. Then check.");
    assert_eq!(
        sit[1]["provenance"]["iterations"][0]["rewrites"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The retries were real requests (samples 0, 1, 2 of Kilo's rewrite prompt, 0 of
    // Lima's).
    let rewrites = server.log().iter().filter(|e| is_rewrite(e)).count();
    assert_eq!(rewrites, 4);
}
