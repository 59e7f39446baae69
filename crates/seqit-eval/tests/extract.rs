//! Answer extraction on tricky model outputs, the dataset readers on small fixtures
//! written for seqit, and the built-in prompts.

use std::path::{Path, PathBuf};

use seqit_eval::extract::{
    answer_after_marker, extract_number, format_number, Mode, ANSWER_MARKERS,
};
use seqit_eval::metrics::{score_xquad, XQUAD_MARKERS};
use seqit_eval::tasks::{gsm8k, mgsm, score_number, xquad};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/eval")
        .join(name)
}

fn strict(text: &str) -> Option<f64> {
    extract_number(text, Mode::Strict, ANSWER_MARKERS)
}

fn flexible(text: &str) -> Option<f64> {
    extract_number(text, Mode::Flexible, ANSWER_MARKERS)
}

#[test]
fn gsm8k_outputs() {
    let cases: &[(&str, Option<f64>, Option<f64>)] = &[
        // (output, strict, flexible)
        ("Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips in total.\nThe answer is 72.", Some(72.0), Some(72.0)),
        ("The answer is $1,234.50.", Some(1234.5), Some(1234.5)),
        ("It dropped 9 degrees from 4, so 4 - 9 = -5. The answer is -5 degrees.", Some(-5.0), Some(-5.0)),
        ("3 + 4 = 7\n#### 7", Some(7.0), Some(7.0)),
        ("She earns 18 dollars a day, so 18 x 7 = 126 per week.", None, Some(126.0)),
        ("The answer is: twelve, i.e. 12 apples.", Some(12.0), Some(12.0)),
        ("The final answer is **18**.", Some(18.0), Some(18.0)),
        ("THE ANSWER IS 1,000,000 dollars", Some(1_000_000.0), Some(1_000_000.0)),
        ("So 25% of them. The answer is 25%.", Some(25.0), Some(25.0)),
        ("The answer is 10. Wait, 6 + 6 = 12, so the answer is 12.", Some(12.0), Some(12.0)),
        ("The answer is 3.0", Some(3.0), Some(3.0)),
        ("The answer is −8 (U+2212 minus).", Some(-8.0), Some(-8.0)),
        ("He paid $0.75 per apple; the answer is .75", Some(0.75), Some(0.75)),
        ("The answer is unclear.", None, None),
        ("", None, None),
    ];
    for &(output, want_strict, want_flexible) in cases {
        assert_eq!(strict(output), want_strict, "strict: {output:?}");
        assert_eq!(flexible(output), want_flexible, "flexible: {output:?}");
    }
}

#[test]
fn a_model_that_goes_on_to_invent_the_next_question_is_cut_at_the_stop() {
    let prompt = gsm8k::cot_prompt();
    let output = " 2 + 3 = 5. The answer is 5.\n\nQuestion: Tom has 3 apples and eats one. How many are left?\nAnswer: 3 - 1 = 2. The answer is 2.";
    let scored = score_number(output, 5.0, Mode::Strict, &prompt.template.stop, None);
    assert_eq!(scored.extracted, Some(5.0));
    assert!(scored.correct);
    // Without the stop the invented answer would win.
    assert_eq!(strict(output), Some(2.0));
}

#[test]
fn mgsm_outputs_in_many_languages() {
    let cases: &[(&str, &str, f64)] = &[
        ("es", "Primero, 5 + 7 = 12. La respuesta es 12.", 12.0),
        ("fr", "Il reste 50 - 39 = 11 $. La réponse est 11 $.", 11.0),
        (
            "de",
            "Lena hat 1.500 - 250 = 1.250 Euro übrig. Die Antwort lautet 1.250.",
            1250.0,
        ),
        ("de", "Das sind 2,5 Liter. Die Antwort ist 2,5.", 2.5),
        ("zh", "所以一共是２５个。答案是２５。", 25.0),
        ("ja", "全部で42個です。答えは42個です。", 42.0),
        ("ru", "Итого 300 литров. Ответ: 300.", 300.0),
        ("sw", "Jumla ni 15. Jibu ni 15.", 15.0),
        ("th", "รวมเป็น 1,200 บาท คำตอบคือ 1,200", 1200.0),
        ("bn", "মোট ৩৫টি। উত্তর হল ৩৫।", 35.0),
        ("te", "మొత్తం 18. సమాధానం 18.", 18.0),
        (
            "fr",
            "Il a 1\u{a0}234 billes. La réponse est 1\u{a0}234.",
            1234.0,
        ),
        (
            "de",
            "Translation into English: How much is left?\nThe answer is 8.",
            8.0,
        ),
    ];
    let stops = mgsm::prompt(mgsm::PromptStyle::Cot).template.stop;
    for &(language, output, gold) in cases {
        let scored = score_number(output, gold, Mode::Strict, &stops, Some(language));
        assert!(
            scored.correct,
            "{language}: {output:?} → {:?}",
            scored.extracted
        );
    }
    // A German lone `1.250` is 1250; in English it stays 1.25.
    assert_eq!(
        score_number("The answer is 1.250", 1.25, Mode::Strict, &stops, None).extracted,
        Some(1.25)
    );
    assert_eq!(
        score_number(
            "Die Antwort ist 1.250",
            1250.0,
            Mode::Strict,
            &stops,
            Some("de")
        )
        .extracted,
        Some(1250.0)
    );
}

#[test]
fn xquad_outputs() {
    let gold = vec![
        "en el mar Mediterráneo".to_string(),
        "mar Mediterráneo".to_string(),
    ];
    let cases: &[(&str, Mode, bool, bool, Option<&str>)] = &[
        // (output, mode, followed, correct, extracted)
        ("Translation into English: Where does the Ebro flow into?\nAnswer: **en el mar Mediterráneo**.", Mode::Strict, true, true, Some("en el mar Mediterráneo")),
        ("ANSWER: Mar Mediterráneo, en el delta", Mode::Strict, true, true, Some("Mar Mediterráneo, en el delta")),
        ("Answer: el mar Mediterráneo", Mode::Strict, true, true, Some("el mar Mediterráneo")),
        ("El Ebro desemboca en el mar Mediterráneo.", Mode::Flexible, false, true, Some("El Ebro desemboca en el mar Mediterráneo")),
        ("El Ebro desemboca en el mar Mediterráneo.", Mode::Strict, false, false, None),
        ("Answer: Madrid", Mode::Flexible, true, false, Some("Madrid")),
        // A marker written twice is read at its first occurrence (the paper's script).
        ("Answer: Madrid.\nTranslation into English: ...\nAnswer: \"mar Mediterráneo\"", Mode::Strict, true, true, Some("Madrid.\nTranslation into English: ...\nAnswer: \"mar Mediterráneo")),
        ("Answer:\n   mar mediterraneo", Mode::Strict, true, false, Some("mar mediterraneo")),
        ("Answer: ", Mode::Flexible, true, false, None),
        // The full-width colon is not one of the paper's markers: the whole output counts.
        ("Answer：「mar Mediterráneo」", Mode::Strict, false, false, None),
        ("Answer：「mar Mediterráneo」", Mode::Flexible, false, true, Some("Answer：「mar Mediterráneo")),
    ];
    for &(output, mode, followed, correct, extracted) in cases {
        let s = score_xquad(output, &gold, mode, XQUAD_MARKERS);
        assert_eq!(
            (s.followed, s.correct, s.extracted.as_deref()),
            (followed, correct, extracted),
            "{output:?} ({mode:?})"
        );
    }
    // Case and punctuation do not matter; accents do (no transliteration).
    let paris = vec!["El Acuerdo de París".to_string()];
    assert!(
        score_xquad(
            "Answer: el acuerdo de parís,",
            &paris,
            Mode::Strict,
            XQUAD_MARKERS
        )
        .correct
    );
    assert!(
        !score_xquad(
            "Answer: el acuerdo de paris",
            &paris,
            Mode::Strict,
            XQUAD_MARKERS
        )
        .correct
    );
    assert_eq!(answer_after_marker("no marker", XQUAD_MARKERS), None);
}

#[test]
fn reads_gsm8k() {
    let items = gsm8k::read(&fixture("gsm8k_mini.jsonl")).unwrap();
    let golds: Vec<f64> = items.iter().map(|i| i.gold).collect();
    assert_eq!(golds, vec![26.0, 1335.0, -5.0, 10.0]);
    assert_eq!(items[0].id, "0");
    assert_eq!(items[3].id, "custom-7");
    assert_eq!(format_number(items[1].gold), "1335");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"question\": \"q\", \"answer\": \"no marker here\"}\n",
    )
    .unwrap();
    let err = gsm8k::read(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad.jsonl")
            && err.contains("line 1")
            && err.contains("`answer`")
            && err.contains("####"),
        "{err}"
    );
}

#[test]
fn reads_mgsm_tsv_and_jsonl() {
    let de = mgsm::read(&fixture("mgsm_de.tsv"), None).unwrap();
    assert_eq!(de.len(), 3);
    assert!(de.iter().all(|i| i.language == "de"));
    assert_eq!(
        de.iter().map(|i| i.gold).collect::<Vec<_>>(),
        vec![36.0, 1250.0, 180.0]
    );
    // The answer is the last column even when the question holds a tab.
    assert!(de[2].question.contains("Wie weit"));
    assert_eq!(de[1].id, "de/1");

    let es = mgsm::read(&fixture("mgsm_es.jsonl"), None).unwrap();
    assert_eq!(
        es.iter().map(|i| i.gold).collect::<Vec<_>>(),
        vec![12.0, 1000.0]
    );
    assert_eq!(es[0].language, "es");

    let dir = tempfile::tempdir().unwrap();
    let unnamed = dir.path().join("questions.tsv");
    std::fs::write(&unnamed, "q\t1\n").unwrap();
    let err = mgsm::read(&unnamed, None).unwrap_err().to_string();
    assert!(err.contains("language") && err.contains("hint:"), "{err}");
    assert_eq!(mgsm::read(&unnamed, Some("sw")).unwrap()[0].language, "sw");
    let bad = dir.path().join("mgsm_fr.tsv");
    std::fs::write(&bad, "q\t1\nno tab here\n").unwrap();
    let err = mgsm::read(&bad, None).unwrap_err().to_string();
    assert!(
        err.contains("line 2") && err.contains("question<TAB>answer"),
        "{err}"
    );
}

#[test]
fn reads_xquad() {
    let items = xquad::read(&fixture("xquad.es.json"), None).unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].language, "es");
    assert_eq!(
        items[0].answers,
        vec!["en el mar Mediterráneo", "mar Mediterráneo"]
    );
    assert_eq!(
        items[2].context,
        "El Acuerdo de París fue adoptado en 2015 por 196 partes."
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("xquad.de.json");
    std::fs::write(&bad, "{\"data\": [{\"paragraphs\": [{\"qas\": []}]}]}").unwrap();
    let err = xquad::read(&bad, None).unwrap_err().to_string();
    assert!(
        err.contains("xquad.de.json") && err.contains("context"),
        "{err}"
    );
}

#[test]
fn gsm8k_prompt_is_eight_shot_and_its_exemplars_are_consistent() {
    let prompt = gsm8k::cot_prompt();
    assert_eq!(prompt.version, "gsm8k/v1/cot");
    assert_eq!(prompt.exemplars.len(), 8);
    for exemplar in &prompt.exemplars {
        let answer: f64 = exemplar["answer"].parse().unwrap();
        assert_eq!(strict(&exemplar["reasoning"]), Some(answer), "{exemplar:?}");
    }
    let rendered = gsm8k::render(&prompt, "What is 2 + 2?").unwrap();
    assert_eq!(rendered.text.matches("Question: ").count(), 9);
    assert!(rendered
        .text
        .starts_with("Question: A baker makes 24 muffins"));
    assert!(rendered
        .text
        .ends_with("\n\nQuestion: What is 2 + 2?\nAnswer:"));
    assert_eq!(rendered.stop, vec!["Question:"]);
    assert_eq!(rendered.hash, gsm8k::cot_prompt().hash);
}

#[test]
fn mgsm_prompts_differ_only_by_the_translation_step() {
    let plain = mgsm::prompt(mgsm::PromptStyle::Cot);
    let translate = mgsm::prompt(mgsm::PromptStyle::TranslateCot);
    assert_eq!(plain.exemplars.len(), 8);
    assert_ne!(plain.hash, translate.hash);
    for exemplar in &plain.exemplars {
        let answer: f64 = exemplar["answer"].parse().unwrap();
        assert_eq!(strict(&exemplar["reasoning"]), Some(answer), "{exemplar:?}");
        assert!(!exemplar["translation"].is_empty() && exemplar["language"].len() == 2);
    }
    let question = "Ein Buch kostet 12 Euro. Wie viel kosten 3 Bücher?";
    let a = mgsm::render(&plain, question).unwrap().text;
    let b = mgsm::render(&translate, question).unwrap().text;
    assert_eq!(a.matches("Translation into English:").count(), 0);
    assert_eq!(b.matches("Translation into English:").count(), 8 + 1); // shots + the instruction
    assert!(a.ends_with(&format!("Question: {question}\nStep-by-step answer:")));
    assert!(b.ends_with(&format!("Question: {question}\nStep-by-step answer:")));
    assert!(b.contains("Question: Una panadera hace 24 magdalenas"));
}

#[test]
fn xquad_prompt_is_zero_shot_translate_then_answer() {
    let prompt = xquad::translate_answer_prompt();
    let items = xquad::read(&fixture("xquad.es.json"), None).unwrap();
    let rendered = xquad::render(&prompt, &items[1]).unwrap();
    assert!(
        rendered.text.contains("Translation into English:")
            && rendered.text.contains("\"Answer:\"")
    );
    assert!(rendered.text.ends_with(&format!(
        "Context: {}\nQuestion: {}",
        items[1].context, items[1].question
    )));
    assert_eq!(rendered.version, "xquad/v1/translate_answer");
}

/// The paper scores GSM8K/MGSM on the last number of the output, whatever a marker says;
/// the marker-based reading is the strict second figure.
#[test]
fn gsm8k_headline_is_the_last_number() {
    let last = |text: &str| extract_number(text, Mode::LastNumber, ANSWER_MARKERS);
    let cases: &[(&str, Option<f64>, Option<f64>)] = &[
        // (output, last number: the headline, strict)
        ("The answer is 72.", Some(72.0), Some(72.0)),
        (
            "The answer is 42. Checking: 42 + 1 = 43",
            Some(43.0),
            Some(42.0),
        ),
        (
            "She earns 18 dollars a day, so 18 x 7 = 126 per week.",
            Some(126.0),
            None,
        ),
        ("The answer is unclear.", None, None),
    ];
    for &(output, want_last, want_strict) in cases {
        assert_eq!(last(output), want_last, "last number: {output:?}");
        assert_eq!(strict(output), want_strict, "strict: {output:?}");
    }
    let scored = score_number(
        "The answer is 42. Checking: 42 + 1 = 43",
        42.0,
        Mode::LastNumber,
        &[],
        None,
    );
    assert!(!scored.correct, "the paper's scoring reads 43");
}
