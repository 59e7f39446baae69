//! Every step kind's checker on hand-written answers that must pass and answers that
//! must fail, plus decoration, order and dependent-step behaviour.

use std::collections::BTreeSet;

use seqit_verify::{check_steps, Conversion, StepKind, StepSpec};

/// Steps of a small chain; the last one is under test. `lead` answers the steps before
/// it correctly and is put before each response.
struct Case {
    steps: Vec<StepSpec>,
    lead: &'static str,
    pass: &'static [&'static str],
    fail: &'static [&'static str],
}

fn topic() -> String {
    "the sea".to_string()
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn one(spec: StepSpec, pass: &'static [&'static str], fail: &'static [&'static str]) -> Case {
    Case {
        steps: vec![spec],
        lead: "",
        pass,
        fail,
    }
}

fn cases() -> Vec<Case> {
    use StepSpec as S;
    vec![
        one(
            S::AllCapitals { topic: topic() },
            &[
                "THE SEA IS WIDE AND DEEP.",
                "**Step 1:** THE SEA IS WIDE AND DEEP!",
                "Step 1: THE SEA, 2 MILES DEEP, IS COLD.",
            ],
            &["The sea is wide and deep.", "THE SEA is wide.", "SEA", ""],
        ),
        one(
            S::AllLowercase { topic: topic() },
            &[
                "the sea is wide and deep.",
                "1. the sea is calm today.",
                "Then, the sea is calm today.",
            ],
            &["The sea is wide.", "the Sea is wide.", "the sea"],
        ),
        one(
            S::DoubleQuotes { topic: topic() },
            &[
                "\"The sea is wide and deep.\"",
                "“The sea is calm today.”",
                "Step 1: \"The sea is calm today.\"",
            ],
            &[
                "The sea is wide and calm.",
                "\"The sea is wide and calm.",
                "\"Sea\"",
                "The \"sea\" is wide and calm.",
            ],
        ),
        one(
            S::JsonObject {
                subject: "a book".into(),
                keys: words(&["title", "author"]),
            },
            &[
                r#"{"title": "Dune", "author": "Frank Herbert"}"#,
                "```json\n{\n  \"author\": \"A\",\n  \"title\": \"B\"\n}\n```",
                "Step 2:\n{\n  \"title\": \"X\",\n  \"author\": \"Y\"\n}",
            ],
            &[
                r#"{"title": "Dune"}"#,
                r#"{"title": "Dune", "author": "F", "year": 1965}"#,
                "title: Dune, author: Frank",
                r#"{"title": "Dune", "author": }"#,
            ],
        ),
        one(
            S::NumberedList {
                topic: topic(),
                count: 3,
            },
            &[
                "1. waves\n2. salt\n3. tide",
                "Here is my list:\n1) waves\n2) salt\n3) tide",
                "1. waves\n\n2. salt\n\n3. tide",
            ],
            &[
                "1. waves\n2. salt",
                "1. waves\n2. salt\n3. tide\n4. shore",
                "- waves\n- salt\n- tide",
                "1. waves\n3. salt\n4. tide",
            ],
        ),
        one(
            S::BulletedList {
                topic: topic(),
                count: 2,
            },
            &[
                "- waves\n- salt",
                "* waves\n* salt",
                "• waves\n• salt\n\nThat is all.",
            ],
            &[
                "- waves",
                "- waves\n- salt\n- tide",
                "1. waves\n2. salt",
                "waves, salt",
            ],
        ),
        one(
            S::Title { topic: topic() },
            &[
                "<<The Quiet Sea>>",
                "Title: <<The Quiet Sea>>",
                "## <<Sea Stories>>",
            ],
            &["The Quiet Sea", "<The Quiet Sea>", "<<>>", "<<Quiet Sea"],
        ),
        one(
            S::Paragraphs {
                topic: topic(),
                count: 2,
            },
            &[
                "The sea is wide.\n***\nThe sea is deep.",
                "The sea is wide.\n\n***\n\nThe sea is deep.",
                "First part here.\nStill the first part.\n***\nSecond part here.",
            ],
            &[
                "The sea is wide.\n\nThe sea is deep.",
                "A b.\n***\nC d.\n***\nE f.",
                "The sea is wide.\n---\nThe sea is deep.",
            ],
        ),
        one(
            S::EndWith {
                topic: topic(),
                phrase: "or so the story goes".into(),
            },
            &[
                "The sea was calm, or so the story goes.",
                "The sea was calm, or so the story goes",
                "The sea was calm, OR SO THE STORY GOES!",
            ],
            &[
                "Or so the story goes, the sea was calm.",
                "The sea was calm, or so the story went.",
                "The sea was calm, or so the story goes, they said.",
                "or so the story goes",
            ],
        ),
        one(
            S::StartWith {
                topic: topic(),
                word: "Honestly".into(),
            },
            &[
                "Honestly, the sea is lovely.",
                "honestly the sea is lovely",
                "**Step 2:** Honestly, the sea is lovely.",
            ],
            &[
                "The sea is honestly lovely.",
                "Honest people love the sea.",
                "Honestly",
            ],
        ),
        one(
            S::Postscript { topic: topic() },
            &[
                "Dear Ann, the sea was lovely today.\nP.S. Bring a towel.",
                "Dear Ann, the sea was lovely.\n\nP.S. See you soon.",
                "Hi Ann, the sea was calm.\np.s. write back",
            ],
            &[
                "Dear Ann, the sea was lovely.",
                "Dear Ann, the sea was lovely. PS: bring a towel.",
                "Dear Ann, the sea was lovely.\nP.S.",
                "P.S. Bring a towel.",
            ],
        ),
        one(
            S::IncludeKeywords {
                topic: topic(),
                keywords: words(&["waves", "salt"]),
            },
            &[
                "The waves carry salt to the shore.",
                "Salt and WAVES everywhere.",
                "Then, waves bring salt.",
            ],
            &[
                "The waves are high.",
                "The wave carries salty water.",
                "Salt is everywhere.",
            ],
        ),
        one(
            S::AvoidKeyword {
                topic: topic(),
                mention: "sea".into(),
                keyword: "waves".into(),
            },
            &[
                "The sea is calm today.",
                "I love the sea.",
                "Sea air smells of salt.",
            ],
            &[
                "The sea has big waves.",
                "The ocean is calm.",
                "Waves, waves, sea.",
            ],
        ),
        one(
            S::ExactWords {
                topic: topic(),
                count: 5,
            },
            &[
                "The sea is very calm.",
                "Step 1: The sea is very calm.",
                "The sea - is very calm.",
            ],
            &["The sea is calm.", "The sea is very calm today.", ""],
        ),
        one(
            S::MinWords {
                topic: topic(),
                count: 8,
            },
            &[
                "The sea is calm and blue on this sunny day.",
                "one two three four five six seven eight",
                "The sea is calm.\nIt is blue and wide.",
            ],
            &[
                "The sea is calm.",
                "one two three four five six seven",
                "Calm sea.\n\nBlue and wide.",
            ],
        ),
        one(
            S::MaxWords {
                topic: topic(),
                count: 5,
            },
            &[
                "The sea is calm.",
                "Calm blue sea.",
                "Answer: The sea is calm.",
            ],
            &[
                "The sea is calm and blue today.",
                "Calm.",
                "The sea is very calm indeed.",
            ],
        ),
        one(
            S::ExactSentences {
                topic: topic(),
                count: 2,
            },
            &[
                "The sea is calm. It is blue.",
                "The sea is calm! Is it blue?",
                "The sea is calm.\nIt is blue.",
            ],
            &[
                "The sea is calm.",
                "The sea is calm. It is blue. It is cold.",
                "The sea is calm, and it is blue.",
            ],
        ),
        one(
            S::MentionTimes {
                topic: topic(),
                word: "sea".into(),
                count: 3,
            },
            &[
                "The sea, the sea, the sea.",
                "Sea after sea after SEA.",
                "The sea is calm; the sea is blue; I love the sea.",
            ],
            &[
                "The sea, the sea.",
                "The seas are calm, the sea is blue, the seashore is nice.",
                "Ocean, ocean, ocean.",
            ],
        ),
        one(
            S::NoCommas {
                topic: topic(),
                count: 5,
            },
            &[
                "The sea is calm and blue today.",
                "Calm sea and blue sky above us.",
                "Step 3: The sea is calm and very blue.",
            ],
            &[
                "The sea is calm, and blue today.",
                "Calm sea.",
                "The sea、is calm and blue today.",
            ],
        ),
        one(
            S::ChooseWord {
                category: "fruits".into(),
                options: words(&["apple", "pear", "plum"]),
            },
            &["apple", "I choose the pear.", "Plum"],
            &["apple, pear or plum", "banana", "apples"],
        ),
        one(
            S::Sum {
                numbers: vec![12, 30, 5],
            },
            &["47", "12 + 30 + 5 = 47", "The total is 47."],
            &["46", "12 + 30 + 5", "47 or 48", "The total is forty-six."],
        ),
        one(
            S::Product {
                numbers: vec![6, 7],
            },
            &["42", "6 × 7 = 42", "forty-two"],
            &["43", "6 × 7", "13"],
        ),
        one(
            S::Difference {
                minuend: 50,
                subtrahend: 8,
            },
            &["42", "50 - 8 = 42", "The answer is 42."],
            &["58", "50 - 8", "-42"],
        ),
        one(
            S::CountLetters {
                word: "banana".into(),
            },
            &["6", "\"banana\" has 6 letters.", "six"],
            &["5", "banana", "It has 7 letters."],
        ),
        one(
            S::CountLetter {
                word: "banana".into(),
                letter: 'a',
            },
            &["3", "The letter a appears 3 times.", "three times"],
            &["2", "6", "a"],
        ),
        one(
            S::SortWords {
                words: words(&["pear", "apple", "fig"]),
            },
            &[
                "apple, fig, pear",
                "Apple\nFig\nPear",
                "- apple\n- fig\n- pear",
            ],
            &["pear, apple, fig", "apple, pear, fig", "apple, fig"],
        ),
        one(
            S::ReverseWord {
                word: "stone".into(),
            },
            &["enots", "The reverse is \"enots\".", "ENOTS"],
            &["stone", "enot", "e-n-o-t-s"],
        ),
        one(
            S::ConvertUnits {
                value: 5,
                conversion: Conversion::KilometersToMeters,
            },
            &["5000", "5 km = 5,000 m", "5 kilometers is 5000 meters."],
            &["500", "5 km", "50000", "5 × 1000"],
        ),
        one(
            S::UppercaseWord {
                word: "banana".into(),
            },
            &["BANANA", "The word in capitals: BANANA.", "\"BANANA\""],
            &["banana", "Banana", "BANANAS"],
        ),
        one(
            S::LargestNumber {
                numbers: vec![12, 45, 7],
            },
            &[
                "45",
                "The largest is 45.",
                "Of 12, 45 and 7, the largest is 45.",
            ],
            &["12", "12, 45, 7", "7"],
        ),
        Case {
            steps: vec![S::AllCapitals { topic: topic() }, S::CountWords { of: 0 }],
            lead: "THE SEA IS WIDE AND DEEP.",
            pass: &["6", "Your previous answer has 6 words.", "six words"],
            fail: &["5", "7", "The sentence has many words."],
        },
        Case {
            steps: vec![
                S::NumberedList {
                    topic: topic(),
                    count: 2,
                },
                S::ListFirstItemCaps { of: 0 },
            ],
            lead: "1. Waves\n2. Salt",
            pass: &["WAVES", "The first item in capitals: WAVES", "**WAVES**"],
            fail: &["Waves", "SALT", "WAVE"],
        },
        Case {
            steps: vec![
                S::AllLowercase { topic: topic() },
                S::RepeatLastWord { of: 0 },
            ],
            lead: "the sea is wide and deep.",
            pass: &["deep", "The last word is \"deep\".", "Deep."],
            fail: &["wide", "deep sea", "the"],
        },
        Case {
            steps: vec![
                S::ChooseWord {
                    category: "fruits".into(),
                    options: words(&["apple", "pear", "plum"]),
                },
                S::TranslateWord {
                    of: 0,
                    language: "French".into(),
                    table: vec![
                        ("apple".into(), "pomme".into()),
                        ("pear".into(), "poire".into()),
                        ("plum".into(), "prune".into()),
                    ],
                },
            ],
            lead: "pear",
            pass: &["poire", "In French, pear is poire.", "Poire"],
            fail: &["pomme", "poire or pomme", "pear"],
        },
        Case {
            steps: vec![
                S::BulletedList {
                    topic: topic(),
                    count: 3,
                },
                S::CountListItems { of: 0 },
            ],
            lead: "- waves\n- salt\n- tide",
            pass: &["3", "There are 3 items.", "three"],
            fail: &["2", "4", "many"],
        },
        Case {
            steps: vec![
                S::ReverseWord {
                    word: "stone".into(),
                },
                S::CountLettersOfWord { of: 0 },
            ],
            lead: "enots",
            pass: &["5", "enots has 5 letters", "five"],
            fail: &["4", "6", "enots"],
        },
        Case {
            steps: vec![
                S::Sum {
                    numbers: vec![2, 3],
                },
                S::Product {
                    numbers: vec![4, 5],
                },
                S::SumOfAnswers { of: vec![0, 1] },
            ],
            lead: "5\n\n20",
            pass: &["25", "5 + 20 = 25", "The total is 25."],
            fail: &["24", "5 + 20", "20"],
        },
        Case {
            steps: vec![
                S::Sum {
                    numbers: vec![2, 3],
                },
                S::MultiplyAnswer { of: 0, factor: 3 },
            ],
            lead: "5",
            pass: &["15", "5 × 3 = 15", "fifteen"],
            fail: &["8", "5 × 3", "5"],
        },
    ]
}

fn response(case: &Case, answer: &str) -> String {
    if case.lead.is_empty() {
        answer.to_string()
    } else {
        format!("{}\n\n{answer}", case.lead)
    }
}

#[test]
fn every_kind_has_checker_cases() {
    let covered: BTreeSet<StepKind> = cases()
        .iter()
        .map(|c| c.steps.last().unwrap().kind())
        .collect();
    let missing: Vec<&str> = StepKind::ALL
        .iter()
        .filter(|k| !covered.contains(k))
        .map(|k| k.name())
        .collect();
    assert!(
        missing.is_empty(),
        "kinds without checker cases: {missing:?}"
    );
    assert!(StepKind::ALL.len() >= 30);
    assert!(StepKind::ALL.iter().filter(|k| k.is_dependent()).count() >= 5);
}

#[test]
fn hand_written_answers_pass_and_fail_as_expected() {
    let mut wrong = Vec::new();
    for case in cases() {
        let kind = case.steps.last().unwrap().kind().name();
        assert!(case.pass.len() >= 3 && case.fail.len() >= 3, "{kind}");
        for (answers, expected) in [(case.pass, true), (case.fail, false)] {
            for answer in answers {
                let result = check_steps(&case.steps, &response(&case, answer));
                let last = result.steps.last().unwrap();
                // The lead is right, so only the step under test decides.
                assert!(
                    result.steps[..result.steps.len() - 1]
                        .iter()
                        .all(|s| s.passed),
                    "{kind}: lead failed for {answer:?}"
                );
                if last.passed != expected || result.all_passed != expected {
                    wrong.push(format!("{kind}: {answer:?} expected {expected}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn dependent_steps_follow_the_models_own_earlier_answer() {
    let steps = vec![
        StepSpec::AllCapitals { topic: topic() },
        StepSpec::CountWords { of: 0 },
    ];
    // Whatever the model wrote first is what it must count.
    let seven = "THE SEA IS VERY WIDE AND DEEP.";
    assert!(check_steps(&steps, &format!("{seven}\n\n7")).all_passed);
    assert!(!check_steps(&steps, &format!("{seven}\n\n6")).all_passed);
    // A wrong first step leaves nothing to count.
    let result = check_steps(&steps, "The sea is wide and deep.\n\n6");
    assert_eq!(result.first_failed, Some(0));
    assert!(!result.steps[1].passed);
}

#[test]
fn decoration_does_not_fail_and_echoed_instructions_do_not_pass() {
    let steps = vec![
        StepSpec::IncludeKeywords {
            topic: topic(),
            keywords: words(&["waves", "salt"]),
        },
        StepSpec::CountWords { of: 0 },
        StepSpec::Sum {
            numbers: vec![12, 30],
        },
    ];
    let response = "**Step 1: Write a sentence that uses \"waves\" and \"salt\"**\n\
                    The waves taste of salt.\n\n\
                    ### Step 2: Count the words in your previous answer\n\
                    2. **5**\n\n\
                    Finally, 12 + 30 = 42";
    let result = check_steps(&steps, response);
    assert!(result.all_passed, "{result:?}");
    // The echoed heading is skipped: step 1 is the sentence on line 1, not line 0.
    assert_eq!(result.steps[0].span.unwrap().start_line, 1);
    // Decoration alone does not pass.
    let result = check_steps(
        &steps,
        "**Step 1:** The waves.\n\n**Step 2:** 5\n\n**Step 3:** 43",
    );
    assert_eq!(result.first_failed, Some(0));
    assert!(!result.steps[2].passed);
}

#[test]
fn order_is_measured_apart_from_doing() {
    let steps = vec![
        StepSpec::Sum {
            numbers: vec![12, 30],
        },
        StepSpec::ReverseWord {
            word: "stone".into(),
        },
    ];
    let in_order = check_steps(&steps, "42\n\nenots");
    assert!(in_order.all_passed && in_order.in_order);
    let swapped = check_steps(&steps, "enots\n\n42");
    assert!(!swapped.all_passed);
    assert!(!swapped.in_order);
    assert!(swapped.all_done());
    assert_eq!(swapped.passed_count(), 1);
    assert_eq!(swapped.done_count(), 2);
    assert_eq!(swapped.first_failed, Some(1));
    // A step left out is not done, but what was done is in order.
    let skipped = check_steps(&steps, "enots");
    assert!(!skipped.all_passed);
    assert!(skipped.in_order);
    assert_eq!(skipped.first_failed, Some(0));
    assert!(skipped.steps[1].passed);
    // Nothing at all.
    let empty = check_steps(&steps, "");
    assert_eq!(empty.first_failed, Some(0));
    assert_eq!(empty.done_count(), 0);
}

#[test]
fn an_early_segment_passing_by_chance_does_not_hide_the_chain() {
    let steps = vec![
        StepSpec::MaxWords {
            topic: topic(),
            count: 5,
        },
        StepSpec::CountWords { of: 0 },
    ];
    // The preface has 3 words and would pass "at most 5 words"; the chain is below it.
    let response = "Sure, here goes.\n\nThe sea is calm.\n\n4";
    let result = check_steps(&steps, response);
    assert!(result.all_passed, "{result:?}");
    assert_eq!(result.steps[0].span.unwrap().start_line, 2);
    // With a wrong count there is no such assignment.
    let result = check_steps(&steps, "Sure, here goes.\n\nThe sea is calm.\n\n5");
    assert!(!result.all_passed);
    assert_eq!(result.first_failed, Some(1));
}

/// Answers written the way chat models write them: prefaces, bold headings, labels,
/// fences, emphasis on the result.
#[test]
fn realistic_model_answers() {
    use StepSpec as S;
    let list_then_caps = vec![
        S::NumberedList {
            topic: topic(),
            count: 3,
        },
        S::ListFirstItemCaps { of: 0 },
        S::Sum {
            numbers: vec![12, 30],
        },
    ];
    let answer = "Sure! Here's how I'd approach each step.\n\n\
                  **Step 1: Numbered list**\n1. Waves\n2. Seagulls\n3. Tides\n\n\
                  **Step 2: First item in capitals**\nWAVES\n\n\
                  **Step 3: Sum**\n12 + 30 = **42**";
    assert!(check_steps(&list_then_caps, answer).all_passed);
    let wrong = answer.replace("= **42**", "= **43**");
    assert_eq!(check_steps(&list_then_caps, &wrong).first_failed, Some(2));

    let sentence_then_counts = vec![
        S::AllLowercase {
            topic: "winter".into(),
        },
        S::CountWords { of: 0 },
        S::RepeatLastWord { of: 0 },
    ];
    let answer = "1. winter brings quiet mornings and frosty windows.\n\
                  2. The sentence above contains 7 words.\n\
                  3. The last word is \"windows.\"";
    assert!(check_steps(&sentence_then_counts, answer).all_passed);
    let miscounted = answer.replace("7 words", "8 words");
    let result = check_steps(&sentence_then_counts, &miscounted);
    assert_eq!(result.first_failed, Some(1));
    assert!(result.steps[2].passed, "the other steps still count");

    let choose_translate = vec![
        S::ChooseWord {
            category: "fruits".into(),
            options: words(&["apple", "pear", "plum"]),
        },
        S::TranslateWord {
            of: 0,
            language: "French".into(),
            table: vec![
                ("apple".into(), "pomme".into()),
                ("pear".into(), "poire".into()),
                ("plum".into(), "prune".into()),
            ],
        },
        S::CountLettersOfWord { of: 1 },
    ];
    let answer = "Step 1: Pear\nStep 2: \"Pear\" in French is **poire**.\n\
                  Step 3: The word \"poire\" has 5 letters.";
    assert!(check_steps(&choose_translate, answer).all_passed);
    // Translating a word other than the one chosen is wrong.
    let other = answer.replace("poire", "pomme");
    assert_eq!(check_steps(&choose_translate, &other).first_failed, Some(1));

    let json_then_paragraphs = vec![
        S::JsonObject {
            subject: "a book".into(),
            keys: words(&["title", "author", "year"]),
        },
        S::Paragraphs {
            topic: "the moon".into(),
            count: 2,
        },
    ];
    let answer = "Here is the JSON object:\n\n```json\n{\n  \"title\": \"The Silent Moon\",\n  \
                  \"author\": \"Jane Doe\",\n  \"year\": 2020\n}\n```\n\n\
                  Now the two paragraphs:\n\nThe moon hangs low over the hills tonight.\n\n***\n\n\
                  By morning it fades into the pale sky.";
    assert!(check_steps(&json_then_paragraphs, answer).all_passed);
    let no_divider = answer.replace("***\n\n", "");
    assert_eq!(
        check_steps(&json_then_paragraphs, &no_divider).first_failed,
        Some(1)
    );
}
