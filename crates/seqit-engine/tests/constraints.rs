//! Constrained decoding (structured outputs) and log-probabilities on the tiny random
//! model, whose unconstrained text is noise (so the constraint does all the work), and
//! on the embedded SmolLM2. Every output is checked by an independent validator: the
//! `jsonschema` crate for JSON, the `regex` crate for regular expressions and choices.

use seqit_core::{Constraint, FinishReason, SamplingParams};
use seqit_engine::{Engine, EngineOptions, GenerationRequest};
use seqit_testkit::{user_prompt, TinyModel, TinyModelSpec};
use serde_json::{json, Value};

fn tiny_engine(dir: &std::path::Path) -> Engine {
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(dir)
        .unwrap();
    Engine::load(&hf, EngineOptions::default()).unwrap()
}

/// The default model, or `None` when the test is skipped (see `seqit_testkit::require_model`).
fn smollm2() -> Option<Engine> {
    let path = seqit_testkit::require_model()?;
    Some(Engine::load(&path, EngineOptions::default()).unwrap())
}

fn constrained(
    constraint: Constraint,
    max_tokens: usize,
    temperature: f64,
    seed: u64,
) -> SamplingParams {
    SamplingParams {
        temperature,
        seed,
        constraint: Some(constraint),
        ..SamplingParams::greedy(max_tokens)
    }
}

/// A small schema of the kind the judges and the augmenter use.
fn verdict_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": 40},
            "option": {"enum": ["A", "B", "C", "D"]},
            "score": {"type": "integer", "minimum": 1, "maximum": 5}
        },
        "required": ["reason", "option", "score"],
        "additionalProperties": false
    })
}

/// Checks `text` against `constraint` without llguidance.
fn independently_valid(constraint: &Constraint, text: &str) -> bool {
    match constraint {
        Constraint::JsonObject => serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object()),
        Constraint::JsonSchema { schema } => serde_json::from_str::<Value>(text)
            .is_ok_and(|v| jsonschema::validator_for(schema).unwrap().is_valid(&v)),
        Constraint::Regex { pattern } => regex::Regex::new(&format!("^(?:{pattern})$"))
            .unwrap()
            .is_match(text),
        Constraint::Choice { options } => options.iter().any(|o| o == text),
        Constraint::Grammar { .. } => unreachable!("grammars are checked by their own test"),
    }
}

fn every_kind() -> Vec<Constraint> {
    vec![
        Constraint::JsonSchema {
            schema: verdict_schema(),
        },
        Constraint::JsonObject,
        Constraint::Regex {
            pattern: r"Option: [ABCD]\. Score: [1-5]".into(),
        },
        Constraint::Regex {
            pattern: r"(yes|no)(, (yes|no)){2}".into(),
        },
        Constraint::Choice {
            options: vec!["keep".into(), "lost".into(), "keep it".into()],
        },
    ]
}

#[test]
fn every_constraint_kind_holds_on_noise() {
    let dir = tempfile::tempdir().unwrap();
    let engine = tiny_engine(dir.path());
    let mut requests = Vec::new();
    for constraint in every_kind() {
        for seed in 0..6 {
            // Sampling from a random model: anything the mask lets through is likely.
            let temperature = if seed == 0 { 0.0 } else { 1.0 };
            requests.push(GenerationRequest {
                prompt: user_prompt("Say something."),
                params: constrained(constraint.clone(), 96, temperature, seed),
            });
        }
    }
    let completions = engine.generate(&requests, &mut |_, _| {}).unwrap();
    let mut checked = 0;
    for (request, completion) in requests.iter().zip(&completions) {
        let constraint = request.params.constraint.as_ref().unwrap();
        // A random model may not close a JSON object within the budget: the constraint
        // then reports it unmet and the text is a valid prefix, never invalid text.
        if completion.finish_reason == FinishReason::Length {
            assert_eq!(completion.constraint_met, Some(false), "{completion:?}");
            continue;
        }
        assert_eq!(completion.constraint_met, Some(true), "{completion:?}");
        assert!(
            independently_valid(constraint, &completion.text),
            "{} produced {:?}",
            constraint.kind(),
            completion.text
        );
        checked += 1;
    }
    // The text constraints always finish; most JSON replies do.
    assert!(
        checked >= requests.len() * 3 / 4,
        "only {checked} of {} finished",
        requests.len()
    );
}

#[test]
fn a_lark_grammar_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = tiny_engine(dir.path());
    let lark = r#"
start: "Task " NUM ": " verdict ("\nTask " NUM ": " verdict)*
verdict: "yes" | "no"
NUM: /[1-9]/
"#;
    let shape = regex::Regex::new(r"^Task [1-9]: (yes|no)(\nTask [1-9]: (yes|no))*$").unwrap();
    for seed in 0..8 {
        let request = GenerationRequest {
            prompt: user_prompt("Grade it."),
            params: constrained(Constraint::Grammar { lark: lark.into() }, 60, 1.0, seed),
        };
        let completion = &engine.generate(&[request], &mut |_, _| {}).unwrap()[0];
        // An unbounded repetition may run to the budget; every prefix is still valid
        // up to its last complete line.
        if completion.finish_reason == FinishReason::Stop {
            assert!(shape.is_match(&completion.text), "{:?}", completion.text);
            assert_eq!(completion.constraint_met, Some(true));
        } else {
            let complete = completion
                .text
                .rsplit_once('\n')
                .map_or("", |(head, _)| head);
            assert!(
                complete.is_empty() || shape.is_match(complete),
                "{:?}",
                completion.text
            );
        }
    }
}

#[test]
fn an_unfinishable_constraint_ends_by_length_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let engine = tiny_engine(dir.path());
    let request = GenerationRequest {
        prompt: user_prompt("Count."),
        params: constrained(
            Constraint::Regex {
                pattern: "a{40}b".into(),
            },
            8,
            0.0,
            0,
        ),
    };
    let completion = &engine.generate(&[request], &mut |_, _| {}).unwrap()[0];
    assert_eq!(completion.finish_reason, FinishReason::Length);
    assert_eq!(completion.constraint_met, Some(false));
    assert!(completion.text.chars().all(|c| c == 'a') && !completion.text.is_empty());
}

#[test]
fn invalid_constraints_are_refused_before_generation() {
    let dir = tempfile::tempdir().unwrap();
    let engine = tiny_engine(dir.path());
    let cases = [
        (
            Constraint::Regex {
                pattern: "(unclosed".into(),
            },
            "regex",
        ),
        (
            Constraint::Grammar {
                lark: "start: undefined_rule".into(),
            },
            "grammar",
        ),
        (
            Constraint::JsonSchema {
                schema: json!({"type": "object", "properties": {"a": {"type": "no-such-type"}}}),
            },
            "json_schema",
        ),
        (
            Constraint::Choice { options: vec![] },
            "at least one option",
        ),
    ];
    for (constraint, expected) in cases {
        let error = engine.check_constraint(&constraint).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains(expected), "{message}");
        let request = GenerationRequest {
            prompt: user_prompt("x"),
            params: constrained(constraint, 4, 0.0, 0),
        };
        assert!(engine.generate(&[request], &mut |_, _| {}).is_err());
    }
}

#[test]
fn constrained_rows_leave_their_batch_neighbours_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let engine = tiny_engine(dir.path());
    let free = GenerationRequest {
        prompt: user_prompt("the cat sat"),
        params: SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(12)
        },
    };
    let alone = engine
        .generate(std::slice::from_ref(&free), &mut |_, _| {})
        .unwrap();
    let mut batch = vec![free.clone()];
    for constraint in every_kind() {
        batch.push(GenerationRequest {
            prompt: user_prompt("in an inn"),
            params: constrained(constraint, 30, 0.0, 0),
        });
    }
    let together = engine.generate(&batch, &mut |_, _| {}).unwrap();
    assert_eq!(together[0].token_ids, alone[0].token_ids);
    assert_eq!(together[0].constraint_met, None);
}

#[test]
fn logprobs_are_a_distribution_and_match_the_chosen_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let engine = tiny_engine(dir.path());
    let request = GenerationRequest {
        prompt: user_prompt("hello"),
        params: SamplingParams {
            logprobs: Some(5),
            ignore_eos: true,
            ..SamplingParams::greedy(10)
        },
    };
    let completion = &engine.generate(&[request], &mut |_, _| {}).unwrap()[0];
    let logprobs = completion.logprobs.as_ref().unwrap();
    assert_eq!(logprobs.len(), completion.token_ids.len());
    for entry in logprobs {
        assert!(entry.logprob <= 0.0);
        assert_eq!(entry.top.len(), 5);
        assert!(entry.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        // Greedy: the chosen token is the most likely one.
        assert_eq!(entry.top[0].logprob, entry.logprob);
        assert_eq!(entry.top[0].bytes, entry.bytes);
        let mass: f32 = entry.top.iter().map(|t| t.logprob.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "{mass}");
    }
    // The tokens' bytes spell the text (special tokens are not part of it; the text
    // leaves out a last, incomplete UTF-8 character, which this random model emits).
    let special = engine.tokenizer().special_ids();
    let text: Vec<u8> = logprobs
        .iter()
        .zip(&completion.token_ids)
        .filter(|(_, id)| !special.contains(id))
        .flat_map(|(e, _)| e.bytes.clone())
        .collect();
    let spelled = String::from_utf8_lossy(&text);
    let rest = spelled
        .strip_prefix(completion.text.as_str())
        .unwrap_or_else(|| panic!("{spelled:?} does not start with {:?}", completion.text));
    assert!(
        rest.chars().all(|c| c == char::REPLACEMENT_CHARACTER),
        "{rest:?}"
    );
}

#[test]
fn smollm2_follows_every_constraint_kind() {
    let Some(engine) = smollm2() else {
        return;
    };
    let prompts = [
        "Classify the instruction 'Write a poem about the sea' into option A, B, C or D and rate it.",
        "Is the sky green? Answer yes or no three times.",
        "Describe a cat.",
    ];
    let mut requests = Vec::new();
    for constraint in every_kind() {
        for (i, prompt) in prompts.iter().enumerate() {
            requests.push(GenerationRequest {
                prompt: user_prompt(prompt),
                params: constrained(
                    constraint.clone(),
                    80,
                    if i == 0 { 0.0 } else { 0.8 },
                    i as u64,
                ),
            });
        }
    }
    let completions = engine.generate(&requests, &mut |_, _| {}).unwrap();
    for (request, completion) in requests.iter().zip(&completions) {
        let constraint = request.params.constraint.as_ref().unwrap();
        assert_eq!(completion.constraint_met, Some(true), "{completion:?}");
        assert!(
            independently_valid(constraint, &completion.text),
            "{}: {:?}",
            constraint.kind(),
            completion.text
        );
    }
}
