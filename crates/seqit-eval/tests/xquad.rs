//! XQuAD scored the way the SIT paper scores it: gold answers from the English file by
//! question id (plus the item's own), the answer after the first listed of `result:`,
//! `answer:`, `answer is`, `result is`, and a substring match either way. Expected
//! values are the paper's behaviour, worked out by hand on the fixtures in
//! `tests/fixtures/xquad/` (English and German, the German answers worded differently;
//! German `q9` has no English counterpart).

use std::path::{Path, PathBuf};

use seqit_eval::benchmarks::xquad_summary;
use seqit_eval::extract::Mode;
use seqit_eval::metrics::{normalize_xquad, score_xquad, xquad_metrics, XQUAD_MARKERS};
use seqit_eval::tasks::xquad::{self, EnglishGold};
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/xquad")
        .join(name)
}

fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

/// The paper's score (the whole output when no marker is present).
fn paper(output: &str, gold: &[String]) -> (bool, Option<String>, bool) {
    let s = score_xquad(output, gold, Mode::Flexible, XQUAD_MARKERS);
    (s.followed, s.extracted, s.correct)
}

fn correct(output: &str, gold: &[&str]) -> bool {
    paper(output, &strings(gold)).2
}

#[test]
fn the_markers_are_the_papers() {
    assert_eq!(
        XQUAD_MARKERS,
        &["result:", "answer:", "answer is", "result is"]
    );
}

#[test]
fn a_german_item_is_scored_against_the_english_answer_of_its_id() {
    // `xquad.en.json` next to the German file is found without being named.
    let loaded = xquad::read_all(&[fixture("xquad.de.json")], None).unwrap();
    assert_eq!(loaded.english_files, vec![fixture("xquad.en.json")]);
    let q1 = &loaded.items[0];
    assert_eq!((q1.language.as_str(), q1.id.as_str()), ("de", "q1"));
    assert_eq!(q1.answers, strings(&["in die Nordsee", "Nordsee"]));
    assert_eq!(
        q1.english,
        EnglishGold::Found(strings(&["the North Sea", "North Sea"]))
    );
    // English answers first, then the item's own.
    assert_eq!(
        q1.gold(),
        strings(&["the North Sea", "North Sea", "in die Nordsee", "Nordsee"])
    );
    let output = "Translation into English: The Rhine rises in the Swiss Alps and flows into the \
                  North Sea. Question: Where does the Rhine flow into?\nAnswer: the North Sea";
    // Wrong against the German answers alone, right against the English gold of q1.
    assert!(!paper(output, &q1.answers).2);
    assert_eq!(
        paper(output, &q1.gold()),
        (true, Some("the North Sea".to_string()), true)
    );
    // An answer left in German still counts.
    assert!(paper("Answer: in die Nordsee", &q1.gold()).2);

    let q2 = &loaded.items[1];
    assert_eq!(
        q2.english,
        EnglishGold::Found(strings(&["1,230 kilometres"]))
    );
    assert!(paper("The answer is 1,230 kilometres.", &q2.gold()).2);
    assert!(!paper("The answer is 1,230 kilometres.", &q2.answers).2);
}

#[test]
fn ids_missing_from_the_english_file_keep_their_own_answers_and_are_counted() {
    let loaded = xquad::read_all(&[fixture("xquad.de.json")], None).unwrap();
    let q9 = &loaded.items[2];
    assert_eq!(q9.id, "q9");
    assert_eq!(q9.english, EnglishGold::Missing);
    assert_eq!(q9.gold(), strings(&["in den Schweizer Alpen"]));
    assert_eq!(
        loaded.missing,
        vec![(fixture("xquad.en.json"), "de".to_string(), "q9".to_string())]
    );
    assert!(paper("Answer: in den Schweizer Alpen", &q9.gold()).2);
}

#[test]
fn english_items_are_scored_against_their_own_answers() {
    let loaded =
        xquad::read_all(&[fixture("xquad.en.json"), fixture("xquad.de.json")], None).unwrap();
    assert_eq!(loaded.items.len(), 6);
    assert_eq!(loaded.english_files, vec![fixture("xquad.en.json")]);
    for item in loaded.items.iter().filter(|i| i.language == "en") {
        assert_eq!(item.english, EnglishGold::NotUsed, "{}", item.id);
        assert_eq!(item.gold(), item.answers);
    }
    assert_eq!(loaded.missing.len(), 1);
}

#[test]
fn the_english_file_can_be_named_and_is_optional() {
    // A German file alone in its directory: own answers only, nothing missing.
    let dir = tempfile::tempdir().unwrap();
    let german = dir.path().join("xquad.de.json");
    std::fs::copy(fixture("xquad.de.json"), &german).unwrap();
    let alone = xquad::read_all(std::slice::from_ref(&german), None).unwrap();
    assert!(alone.english_files.is_empty() && alone.missing.is_empty());
    assert!(alone
        .items
        .iter()
        .all(|i| i.english == EnglishGold::NotUsed && i.gold() == i.answers));
    // `--english FILE`: any name, read as English.
    let english = dir.path().join("english-dev.json");
    std::fs::copy(fixture("xquad.en.json"), &english).unwrap();
    let named = xquad::read_all(std::slice::from_ref(&german), Some(&english)).unwrap();
    assert_eq!(named.english_files, vec![english.clone()]);
    assert_eq!(
        named.items[0].english,
        EnglishGold::Found(strings(&["the North Sea", "North Sea"]))
    );
    assert_eq!(named.missing.len(), 1);
    // A named file that does not exist is an error naming it.
    let err = xquad::read_all(
        std::slice::from_ref(&german),
        Some(&dir.path().join("nope.json")),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nope.json"), "{err}");
}

#[test]
fn attach_english_matches_by_id_not_by_position() {
    let mut german = xquad::read(&fixture("xquad.de.json"), None).unwrap();
    let mut english = xquad::read(&fixture("xquad.en.json"), None).unwrap();
    english.reverse();
    let missing = xquad::attach_english(&mut german, &english);
    assert_eq!(missing, vec![("de".to_string(), "q9".to_string())]);
    assert_eq!(
        german[1].english,
        EnglishGold::Found(strings(&["1,230 kilometres"]))
    );
}

#[test]
fn each_marker_introduces_the_answer() {
    let gold = strings(&["2015"]);
    for output in [
        "Translation: When was the Paris Agreement adopted?\nResult: 2015",
        "Translation: When was the Paris Agreement adopted?\nanswer: 2015",
        "It was adopted in 1999? No. The answer is 2015",
        "It was adopted in 1999? No. The RESULT IS 2015.",
    ] {
        assert_eq!(
            paper(output, &gold),
            (true, Some("2015".to_string()), true),
            "{output:?}"
        );
        let strict = score_xquad(output, &gold, Mode::Strict, XQUAD_MARKERS);
        assert!(strict.followed && strict.correct, "{output:?}");
    }
}

#[test]
fn the_first_listed_marker_is_read_at_its_first_occurrence() {
    // `result:` comes before `answer is` in the paper's list, wherever they stand.
    let output = "The answer is Lyon.\nResult: Paris";
    assert_eq!(
        paper(output, &strings(&["Paris"])).1,
        Some("Paris".to_string())
    );
    assert!(correct(output, &["Paris"]) && !correct(output, &["Lyon"]));
    // A marker written twice is read at its first occurrence, to the end of the output.
    let output = "Answer: Lyon. Answer: Paris";
    assert_eq!(
        paper(output, &strings(&["Lyon"])),
        (true, Some("Lyon. Answer: Paris".to_string()), true)
    );
    // The prediction is everything after the marker, over several lines.
    let output = "Answer: it flows into\nthe North Sea.";
    assert_eq!(
        paper(output, &strings(&["the North Sea"])),
        (true, Some("it flows into\nthe North Sea".to_string()), true)
    );
}

#[test]
fn substrings_match_either_way_after_normalization() {
    let gold = ["the North Sea"];
    // Gold inside the prediction.
    assert!(correct(
        "Answer: It flows into the North Sea near Rotterdam.",
        &gold
    ));
    // Prediction inside the gold.
    assert!(correct("Answer: North Sea", &gold));
    assert!(correct("Answer: north", &gold));
    // Case, surrounding quotes and emphasis, and spacing do not matter.
    assert!(correct("ANSWER: **\"The  NORTH\n Sea\".**", &gold));
    assert_eq!(
        normalize_xquad("  **«The  NORTH\n Sea».** "),
        "the north sea"
    );
    assert_eq!(normalize_xquad("U.S. Army"), "u.s. army");
    // Neither contains the other.
    assert!(!correct("Answer: the Baltic Sea", &gold));
    assert!(!correct("Answer: North Atlantic", &gold));
    // No marker: the whole output is the prediction (the paper's headline); strict
    // counts it wrong, and it does not count as followed.
    assert_eq!(
        paper("It flows into the North Sea.", &strings(&gold)),
        (false, Some("It flows into the North Sea".to_string()), true)
    );
    let strict = score_xquad(
        "It flows into the North Sea.",
        &strings(&gold),
        Mode::Strict,
        XQUAD_MARKERS,
    );
    assert_eq!(
        (strict.followed, strict.extracted, strict.correct),
        (false, None, false)
    );
}

#[test]
fn an_empty_prediction_never_matches() {
    let gold = strings(&["the North Sea"]);
    for output in [
        "",
        "   ",
        "Answer:",
        "Answer: ",
        "The answer is **.**",
        "Result: \"\"",
    ] {
        for mode in [Mode::Flexible, Mode::Strict] {
            let s = score_xquad(output, &gold, mode, XQUAD_MARKERS);
            assert_eq!(
                (s.extracted, s.correct),
                (None, false),
                "{output:?} {mode:?}"
            );
        }
    }
    // An empty gold answer matches nothing either.
    assert!(!correct("Answer: Paris", &["", "..."]));
}

#[test]
fn follow_rate_is_the_share_of_outputs_with_a_marker() {
    let gold = strings(&["2015"]);
    let outputs = [
        "Result: 2015",            // followed, right
        "The answer is 2014",      // followed, wrong
        "It was adopted in 2015.", // not followed, right (whole output)
        "I do not know",           // not followed, wrong
    ];
    let paper: Vec<_> = outputs
        .iter()
        .map(|o| score_xquad(o, &gold, Mode::Flexible, XQUAD_MARKERS))
        .collect();
    let m = xquad_metrics(&paper);
    assert_eq!(
        (m.follow_rate.hits, m.accuracy.hits, m.accuracy.total),
        (2, 2, 4)
    );
    let strict: Vec<_> = outputs
        .iter()
        .map(|o| score_xquad(o, &gold, Mode::Strict, XQUAD_MARKERS))
        .collect();
    let m = xquad_metrics(&strict);
    assert_eq!((m.follow_rate.hits, m.accuracy.hits), (2, 1));
}

#[test]
fn the_summary_counts_english_gold() {
    let records = [
        json!({"language": "de", "correct": true, "correct_strict": true, "followed": true, "english_gold": "used"}),
        json!({"language": "de", "correct": true, "correct_strict": false, "followed": false, "english_gold": "missing"}),
        json!({"language": "en", "correct": false, "correct_strict": false, "followed": true, "english_gold": "not_used"}),
    ];
    let scores = xquad_summary(&records);
    assert_eq!(
        scores["english_gold"],
        json!({"used": 1, "missing": 1, "not_used": 1})
    );
    assert_eq!(scores["accuracy"]["rate"]["hits"], 2);
    assert_eq!(scores["accuracy_strict"]["rate"]["hits"], 1);
    assert_eq!(scores["follow_rate"]["hits"], 2);
}
