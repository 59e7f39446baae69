//! A synthesized set of 400 items (depths 1–4, 100 each): its properties, and the
//! checker's agreement with the scripted answerers on it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::OnceLock;

use seqit_verify::{
    answer_in_order, answer_reversed, answer_skipping, check, perfect_answer, read_jsonl,
    summarize, synthesize, write_jsonl, StepKind, SynthSettings, Templates, VerifiableItem,
};

const SEED: u64 = 20240611;

fn items() -> &'static [VerifiableItem] {
    static ITEMS: OnceLock<Vec<VerifiableItem>> = OnceLock::new();
    ITEMS.get_or_init(|| synthesize(&SynthSettings::standard(SEED), &Templates::builtin()))
}

#[test]
fn four_hundred_unique_items_with_every_depth_and_kind() {
    let items = items();
    assert_eq!(items.len(), 400);
    let mut per_depth: BTreeMap<usize, usize> = BTreeMap::new();
    for item in items {
        *per_depth.entry(item.depth).or_default() += 1;
        item.validate().unwrap();
        assert_eq!(item.steps.len(), item.depth);
        assert_eq!(item.sub_steps.len(), item.depth);
        assert!(
            item.id.starts_with(&format!("v-{}-", item.depth)),
            "{}",
            item.id
        );
        assert_eq!(item.template_version, "seqeval-verifiable/v1");
        assert!(item.input.is_empty());
        // Every step's text is in the prompt (lowercased when it continues a sentence).
        for step in &item.sub_steps {
            let tail = &step[1..step.len() - 1];
            assert!(
                item.prompt.contains(tail),
                "{:?} not in {:?}",
                step,
                item.prompt
            );
        }
    }
    assert_eq!(
        per_depth,
        BTreeMap::from([(1, 100), (2, 100), (3, 100), (4, 100)])
    );
    let prompts: HashSet<&str> = items.iter().map(|i| i.prompt.as_str()).collect();
    assert_eq!(prompts.len(), items.len(), "duplicate prompts");
    let ids: HashSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), items.len(), "duplicate ids");
    let used: BTreeSet<StepKind> = items
        .iter()
        .flat_map(|i| i.steps.iter().map(|s| s.kind()))
        .collect();
    let unused: Vec<&str> = StepKind::ALL
        .iter()
        .filter(|k| !used.contains(k))
        .map(|k| k.name())
        .collect();
    assert!(unused.is_empty(), "kinds never used: {unused:?}");
}

#[test]
fn dependent_steps_only_act_on_earlier_suitable_steps() {
    for item in items() {
        for (i, step) in item.steps.iter().enumerate() {
            for r in step.references() {
                assert!(r < i, "{}: step {i} refers to {r}", item.id);
                assert!(
                    step.kind().can_refer_to(item.steps[r].kind()),
                    "{}",
                    item.id
                );
            }
        }
        if item.depth == 1 {
            assert!(!item.steps[0].kind().is_dependent(), "{}", item.id);
        }
        // Contradictory kinds are never combined.
        let kinds: Vec<StepKind> = item.steps.iter().map(|s| s.kind()).collect();
        assert!(
            !(kinds.contains(&StepKind::AllCapitals) && kinds.contains(&StepKind::AllLowercase)),
            "{}",
            item.id
        );
        let counts = [StepKind::ExactWords, StepKind::MinWords, StepKind::MaxWords];
        assert!(
            kinds.iter().filter(|k| counts.contains(k)).count() <= 1,
            "{}",
            item.id
        );
        let distinct: BTreeSet<&StepKind> = kinds.iter().collect();
        assert_eq!(distinct.len(), kinds.len(), "{}: a kind twice", item.id);
    }
}

#[test]
fn synthesis_is_deterministic() {
    let templates = Templates::builtin();
    let again = synthesize(&SynthSettings::standard(SEED), &templates);
    assert_eq!(items(), again.as_slice());
    let bytes = |items: &[VerifiableItem]| {
        items
            .iter()
            .map(|i| serde_json::to_string(i).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(bytes(items()), bytes(&again));
    let other = synthesize(&SynthSettings::standard(SEED + 1), &templates);
    assert_ne!(items(), other.as_slice());
}

#[test]
fn perfect_answers_pass_every_chain() {
    let failures: Vec<String> = items()
        .iter()
        .filter_map(|item| {
            let result = check(item, &perfect_answer(item));
            (!result.all_passed || !result.in_order || result.first_failed.is_some())
                .then(|| format!("{}: {:?}", item.id, result.first_failed))
        })
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn skipping_any_step_fails_the_chain_at_that_step() {
    let mut checked = 0;
    for item in items() {
        for k in 0..item.depth {
            let answer = answer_skipping(item, k);
            if item.depth == 1 {
                assert!(answer.is_empty());
            }
            let result = check(item, &answer);
            assert!(!result.all_passed, "{} without step {k} passed", item.id);
            let failed = result.first_failed.expect("a failed step");
            assert!(
                failed <= k,
                "{} without step {k}: first failed {failed}",
                item.id
            );
            assert_eq!(failed, k, "{}", item.id);
            assert!(!result.steps[k].passed_anywhere, "{} step {k}", item.id);
            checked += 1;
        }
    }
    assert_eq!(checked, 100 + 200 + 300 + 400);
}

#[test]
fn reversed_answers_are_out_of_order() {
    let mut reversed = 0;
    for item in items().iter().filter(|i| i.depth >= 2) {
        let result = check(item, &answer_reversed(item));
        assert!(!result.in_order, "{}", item.id);
        assert!(!result.all_passed, "{}", item.id);
        // The first step is still found: it is the last segment.
        assert!(result.steps[0].passed, "{}", item.id);
        reversed += 1;
    }
    assert_eq!(reversed, 300);
    // Swapping only the last two steps is caught too.
    for item in items().iter().filter(|i| i.depth >= 3) {
        let mut order: Vec<usize> = (0..item.depth).collect();
        order.swap(item.depth - 2, item.depth - 1);
        let result = check(item, &answer_in_order(item, &order));
        assert!(!result.all_passed, "{}", item.id);
        assert_eq!(result.first_failed, Some(item.depth - 1), "{}", item.id);
    }
}

/// Answers as chat models decorate them: a bold heading echoing each instruction and
/// the answer labelled with its step; a Markdown heading per step; connectives.
#[test]
fn decorated_perfect_answers_still_pass() {
    type Decorate = fn(usize, usize, &str, &str) -> String;
    let styles: [(&str, Decorate); 3] = [
        ("echoed heading", |k, _, step, answer| {
            format!("**Step {}: {step}**\nStep {}: {answer}", k + 1, k + 1)
        }),
        ("markdown heading", |k, _, _, answer| {
            format!("### Step {}\n{answer}", k + 1)
        }),
        ("connectives", |k, depth, _, answer| {
            let word = match k {
                0 => "First,",
                _ if k + 1 == depth => "Finally,",
                _ => "Then,",
            };
            format!("{word} {answer}")
        }),
    ];
    for (style, decorate) in styles {
        for item in items() {
            let segments = seqit_verify::perfect_segments(&item.steps);
            let decorated: Vec<String> = segments
                .iter()
                .zip(&item.sub_steps)
                .enumerate()
                .map(|(k, (answer, step))| decorate(k, item.depth, step, answer))
                .collect();
            let result = check(item, &decorated.join("\n\n"));
            assert!(
                result.all_passed,
                "{style}, {}: {:?}\n{}",
                item.id,
                result.first_failed,
                decorated.join("\n\n")
            );
        }
    }
}

#[test]
fn jsonl_round_trip_keeps_the_seqeval_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verifiable.jsonl");
    write_jsonl(&path, items()).unwrap();
    let back = read_jsonl(&path).unwrap();
    assert_eq!(back.as_slice(), items());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 400);
    let first: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let record = first.as_object().unwrap();
    for field in [
        "id",
        "instruction",
        "input",
        "iteration",
        "original_instruction",
        "modes",
        "sub_steps",
        "steps",
        "template_version",
    ] {
        assert!(record.contains_key(field), "missing {field}");
    }
    assert_eq!(record["input"], "");
    assert_eq!(record["iteration"], 4);
    assert_eq!(record["sub_steps"].as_array().unwrap().len(), 4);
    assert!(record["steps"][0]["kind"].is_string());
    // A broken line is reported with its file and line number.
    std::fs::write(
        &path,
        format!("{}\n{{\"id\": 3}}\n", text.lines().next().unwrap()),
    )
    .unwrap();
    let error = format!("{:#}", read_jsonl(&path).unwrap_err());
    assert!(
        error.contains("verifiable.jsonl") && error.contains("line 2"),
        "{error}"
    );
}

#[test]
fn scores_summarize_the_checks() {
    let items = items();
    let perfect: Vec<_> = items.iter().map(|i| check(i, &perfect_answer(i))).collect();
    let summary = summarize(items, &perfect);
    assert_eq!(summary.overall.items, 400);
    assert_eq!(summary.overall.chain_accuracy(), 1.0);
    assert_eq!(summary.overall.step_accuracy(), 1.0);
    assert_eq!(summary.by_depth.len(), 4);
    assert_eq!(summary.by_kind.len(), StepKind::ALL.len());
    let skipped: Vec<_> = items
        .iter()
        .map(|i| check(i, &answer_skipping(i, i.depth - 1)))
        .collect();
    let summary = summarize(items, &skipped);
    assert_eq!(summary.overall.chain_accuracy(), 0.0);
    assert_eq!(summary.overall.in_order_rate(), 1.0);
    // One step of each chain is missing: 1000 steps, 400 of them not done.
    assert_eq!(summary.overall.steps, 1000);
    assert_eq!(summary.overall.steps_done, 600);
    assert_eq!(summary.by_depth[&1].chain_accuracy(), 0.0);
}

/// Repeating the instruction back is not an answer: no step passes on an echo, though
/// echoes hold the keywords, phrases and numbers the steps ask for.
#[test]
fn echoing_the_instruction_passes_no_step() {
    for item in items() {
        for response in [item.prompt.clone(), item.sub_steps.join("\n\n")] {
            let result = check(item, &response);
            assert_eq!(result.done_count(), 0, "{}: {response}", item.id);
        }
    }
}
