//! The template file is checked when loaded; bad files are rejected with messages that
//! name the file, the kind and the placeholder.

use seqit_verify::{render_item, StepKind, StepSpec, Templates, BUILTIN_PATH, BUILTIN_TEMPLATES};

fn rejected(text: &str) -> String {
    format!(
        "{:#}",
        Templates::parse(text, "my/steps.toml").expect_err("must be rejected")
    )
}

#[test]
fn builtin_file_has_several_phrasings_and_connectives() {
    let t = Templates::builtin();
    for &kind in StepKind::ALL {
        assert!(t.phrasings(kind).len() >= 3, "{}", kind.name());
    }
    let c = &t.connectives;
    assert!(c.first.iter().any(|s| s.starts_with("First, ")));
    assert!(c.middle.iter().any(|s| s.starts_with("Then ")));
    assert!(c.middle.iter().any(|s| s.starts_with("After that, ")));
    assert!(c.last.iter().any(|s| s.starts_with("Finally, ")));
    assert!(c.numbered_step.iter().any(|s| s == "{n}. {step}"));
    assert!(c.sentence_last.iter().any(|s| s == ", and finally {step}"));
    assert!(t.topics.len() >= 4);
}

#[test]
fn unknown_placeholder_is_rejected_naming_file_kind_and_placeholder() {
    let text = BUILTIN_TEMPLATES.replace(
        "'Count the letters in the word \"{word}\".'",
        "'Count the letters in the word \"{wrod}\" and {word}.'",
    );
    assert_ne!(text, BUILTIN_TEMPLATES);
    let error = rejected(&text);
    assert!(error.contains("my/steps.toml"), "{error}");
    assert!(error.contains("count_letters"), "{error}");
    assert!(error.contains("{wrod}"), "{error}");
}

#[test]
fn kind_without_phrasings_is_rejected() {
    let start = BUILTIN_TEMPLATES.find("\nproduct = [").unwrap();
    let end = start + BUILTIN_TEMPLATES[start..].find("]\n").unwrap() + 2;
    let text = format!(
        "{}{}",
        &BUILTIN_TEMPLATES[..start + 1],
        &BUILTIN_TEMPLATES[end..]
    );
    let error = rejected(&text);
    assert!(error.contains("my/steps.toml"), "{error}");
    assert!(error.contains("`product` has no phrasings"), "{error}");
    // An empty list is no better.
    let text = format!(
        "{}product = []\n{}",
        &BUILTIN_TEMPLATES[..start + 1],
        &BUILTIN_TEMPLATES[end..]
    );
    let error = rejected(&text);
    assert!(error.contains("`product` has no phrasings"), "{error}");
}

#[test]
fn unknown_kind_and_missing_placeholder_are_rejected() {
    let text = BUILTIN_TEMPLATES.replacen(
        "[phrasings]",
        "[phrasings]\nsquare_root = ['Take the root.']",
        1,
    );
    let error = rejected(&text);
    assert!(error.contains("square_root"), "{error}");
    // A sum phrasing that does not say which numbers cannot be answered.
    let text = BUILTIN_TEMPLATES.replace("'Compute the sum of {numbers}.'", "'Compute the sum.'");
    let error = rejected(&text);
    assert!(
        error.contains("phrasings.sum") && error.contains("{numbers}"),
        "{error}"
    );
    // Stray braces and phrasings that cannot be chained.
    let text = BUILTIN_TEMPLATES.replace(
        "'Compute the sum of {numbers}.'",
        "'Compute the sum of {numbers.'",
    );
    assert!(rejected(&text).contains("phrasings.sum"));
    let text = BUILTIN_TEMPLATES.replace(
        "'Compute the sum of {numbers}.'",
        "'compute the sum of {numbers}'",
    );
    assert!(rejected(&text).contains("`sum`"));
    // Connectives must place the step.
    let text = BUILTIN_TEMPLATES.replace("'Finally, {step}'", "'Finally, {stop}'");
    let error = rejected(&text);
    assert!(
        error.contains("connectives.last") && error.contains("{stop}"),
        "{error}"
    );
}

#[test]
fn loading_a_file_names_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steps.toml");
    std::fs::write(&path, BUILTIN_TEMPLATES.replace("{topic}", "{topics}")).unwrap();
    let error = format!("{:#}", Templates::load(&path).unwrap_err());
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("{topics}"), "{error}");
    std::fs::write(&path, BUILTIN_TEMPLATES).unwrap();
    let loaded = Templates::load(&path).unwrap();
    assert_eq!(loaded.hash(), Templates::builtin().hash());
    assert!(BUILTIN_PATH.ends_with("v1/steps.toml"));
}

#[test]
fn hand_chosen_steps_are_rendered_and_validated() {
    let t = Templates::builtin();
    let steps = vec![
        StepSpec::Sum {
            numbers: vec![12, 30],
        },
        StepSpec::MultiplyAnswer { of: 0, factor: 2 },
    ];
    let item = render_item("mine-1", steps, &t, 1).unwrap();
    assert_eq!(item.depth, 2);
    assert!(
        item.sub_steps[0].contains("12 and 30"),
        "{:?}",
        item.sub_steps
    );
    assert!(item.sub_steps[1].contains('2'), "{:?}", item.sub_steps);
    // A dependent step must act on an earlier step of a suitable kind.
    let bad = vec![
        StepSpec::Title {
            topic: "the sea".into(),
        },
        StepSpec::CountWords { of: 0 },
    ];
    let error = format!("{:#}", render_item("mine-2", bad, &t, 1).unwrap_err());
    assert!(
        error.contains("count_words") && error.contains("title"),
        "{error}"
    );
    let forward = vec![
        StepSpec::CountWords { of: 1 },
        StepSpec::AllCapitals { topic: "x".into() },
    ];
    assert!(render_item("mine-3", forward, &t, 1).is_err());
}
