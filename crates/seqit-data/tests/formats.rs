//! Round trips of every format on the hand-written fixtures in `tests/fixtures/data/`.

use std::path::Path;

use seqit_core::{ChatMessage, Role};
use seqit_data::{
    read_all, Container, EncodeOptions, Error, Format, ReadOptions, Record, Schema, WriteOptions,
};
use seqit_testkit::fixture;
use serde_json::{json, Value};

fn read(path: &Path) -> (Format, Vec<Record>) {
    read_all(path, &ReadOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn extension(container: Container) -> &'static str {
    match container {
        Container::JsonArray => "json",
        Container::Jsonl => "jsonl",
        Container::Text => "txt",
        Container::Parquet => "parquet",
    }
}

/// Writes records as `schema` in `container` and reads them back.
fn round_trip(
    records: &[Record],
    schema: Schema,
    container: Container,
    options: EncodeOptions,
) -> Result<(Vec<Record>, String), Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("out.{}", extension(container)));
    let write = WriteOptions {
        schema,
        container: None,
        encode: options,
    };
    seqit_data::write_all(&path, &write, records)?;
    let text = std::fs::read(&path).unwrap();
    let (format, back) = read_all(&path, &ReadOptions::with_schema(Some(schema)))?;
    assert_eq!(format, Format { schema, container });
    Ok((back, String::from_utf8_lossy(&text).into_owned()))
}

#[test]
fn fixtures_read_as_expected() {
    let (format, records) = read(&fixture("data/alpaca.jsonl"));
    assert_eq!(format.to_string(), "alpaca (JSON Lines)");
    assert_eq!(records.len(), 5);
    let a2 = &records[1];
    assert_eq!(a2.id, Some(json!("a2")));
    assert_eq!(
        a2.instruction(),
        Some("Translate the sentence into French.")
    );
    assert_eq!(a2.input.as_deref(), Some("The cat sleeps on the sofa."));
    assert_eq!(
        a2.prompt_text(),
        Some("Translate the sentence into French.\n\nThe cat sleeps on the sofa.")
    );
    assert_eq!(a2.response(), Some("Le chat dort sur le canapé."));
    assert_eq!(a2.metadata["category"], json!("translation"));
    let a4 = &records[3];
    assert_eq!(a4.id, Some(json!(4)));
    assert_eq!(
        a4.messages.len(),
        6,
        "two history exchanges and the last one"
    );
    assert_eq!(a4.messages[0], ChatMessage::user("Hi!"));
    assert_eq!(
        a4.response(),
        Some("A slightly smiling face: mild happiness or politeness.")
    );

    let (format, records) = read(&fixture("data/alpaca.json"));
    assert_eq!(format.to_string(), "alpaca (JSON array)");
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[1].system.as_deref(),
        Some("You are a careful annotator.")
    );
    assert_eq!(records[2].input, None, "null input");
    assert_eq!(records[2].metadata["difficulty"], json!(2));
    assert_eq!(records[3].input, None, "empty input");

    let (format, records) = read(&fixture("data/sharegpt.json"));
    assert_eq!(format.schema, Schema::ShareGpt);
    assert_eq!(
        records[0].system.as_deref(),
        Some("You are a patient maths tutor.")
    );
    assert_eq!(records[0].messages.len(), 4);
    assert_eq!(records[1].system.as_deref(), Some("Réponds en français."));
    assert_eq!(records[1].messages[0].role, Role::User);
    assert_eq!(
        records[2].metadata["turn_fields"],
        json!({"1": {"weight": 0}, "3": {"weight": 1}})
    );
    assert_eq!(
        records[3].messages[1].role,
        Role::Other("function_call".into())
    );

    let (_, records) = read(&fixture("data/messages.jsonl"));
    assert_eq!(records[1].user_turns(), 2);
    assert_eq!(
        records[3].instruction(),
        Some("Summarise this article, then translate the summary into German.")
    );
    assert_eq!(
        records[3].input.as_deref(),
        Some("The Rhine flows through six countries.")
    );

    let (format, records) = read(&fixture("data/flan.jsonl"));
    assert_eq!(format.schema, Schema::FlanCot);
    assert_eq!(records[1].system, None);
    assert_eq!(records[2].metadata["task"], json!("translation"));

    let (format, records) = read(&fixture("data/alpaca_eval.json"));
    assert_eq!(format.schema, Schema::AlpacaEval);
    assert_eq!(records[0].metadata["generator"], json!("smollm2-135m-sit"));
    assert_eq!(records[2].metadata["dataset"], json!("selfinstruct"));

    let (format, records) = read(&fixture("data/prompts.txt"));
    assert_eq!(format.to_string(), "prompts (text lines)");
    assert_eq!(records.len(), 3, "the blank line is skipped");
    assert_eq!(
        records[2].prompt_text(),
        Some("Переведи «hello» на русский.")
    );
    let (_, records) = read(&fixture("data/prompts.jsonl"));
    assert_eq!(records[1].system.as_deref(), Some("Be brief."));
    assert_eq!(records[1].response(), None);
}

/// Files already in the writer's layout come back byte for byte.
#[test]
fn canonical_fixtures_round_trip_byte_for_byte() {
    for name in [
        "alpaca.jsonl",
        "messages.jsonl",
        "flan.jsonl",
        "alpaca_eval.json",
        "prompts.jsonl",
        "prompts.txt",
    ] {
        let path = fixture(&format!("data/{name}"));
        let (format, records) = read(&path);
        let original = std::fs::read_to_string(&path).unwrap();
        let (back, text) = round_trip(
            &records,
            format.schema,
            format.container,
            EncodeOptions::default(),
        )
        .unwrap();
        let expected = if name == "prompts.txt" {
            original.replace("\n\n", "\n") // blank lines are not records
        } else {
            original
        };
        assert_eq!(text, expected, "{name}");
        assert_eq!(back, records, "{name}");
    }
}

/// Every fixture converted to every format that can hold it, in both JSON containers,
/// and read back: the same records.
#[test]
fn every_fixture_through_every_format() {
    let fixtures = [
        "alpaca.jsonl",
        "alpaca.json",
        "sharegpt.json",
        "messages.jsonl",
        "flan.jsonl",
        "alpaca_eval.json",
        "prompts.jsonl",
    ];
    let mut checked = 0;
    for name in fixtures {
        let (_, records) = read(&fixture(&format!("data/{name}")));
        for schema in Schema::ALL {
            if matches!(schema, Schema::Prompts | Schema::SeqEval) {
                // Prompts only: see `prompt_lists_keep_prompts` and
                // `seqeval_records_keep_their_chain_fields`.
                continue;
            }
            for container in [Container::Jsonl, Container::JsonArray] {
                // Records a single-exchange format cannot hold are checked separately.
                let holdable: Vec<Record> = records
                    .iter()
                    .filter(|r| {
                        matches!(schema, Schema::ShareGpt | Schema::Messages)
                            || r.messages
                                .iter()
                                .all(|m| matches!(m.role, Role::User | Role::Assistant))
                    })
                    // Without a reply, single-exchange formats write an empty one.
                    .filter(|r| {
                        matches!(schema, Schema::ShareGpt | Schema::Messages)
                            || r.response().is_some()
                    })
                    .cloned()
                    .collect();
                if holdable.is_empty() {
                    continue;
                }
                let options = EncodeOptions { generator: None };
                let mut expected = holdable.clone();
                if schema == Schema::AlpacaEval {
                    for r in &mut expected {
                        r.metadata.entry("generator").or_insert(json!("test-model"));
                    }
                }
                let (back, text) = round_trip(&expected, schema, container, options)
                    .unwrap_or_else(|e| panic!("{name} as {schema} ({container}): {e}"));
                assert_eq!(back, expected, "{name} as {schema} ({container}):\n{text}");
                checked += 1;
            }
        }
    }
    // 7 fixtures × 5 formats × 2 containers, less prompts.jsonl in the 3 single-exchange
    // formats (its records have no reply).
    assert_eq!(checked, 7 * 5 * 2 - 3 * 2);
    // Prompts in Alpaca: an empty `output` to be filled in later.
    let (_, records) = read(&fixture("data/prompts.jsonl"));
    let (back, text) = round_trip(
        &records,
        Schema::Alpaca,
        Container::Jsonl,
        Default::default(),
    )
    .unwrap();
    assert!(text.starts_with("{\"id\":1,\"instruction\":\"Explain photosynthesis to a ten-year-old.\",\"input\":\"\",\"output\":\"\"}\n"), "{text}");
    assert_eq!(back[2].response(), Some(""));
    assert_eq!(back[2].metadata["lang"], json!("fr"));
}

/// Two conversions in a row (A → B → C → A) lose nothing either.
#[test]
fn chains_of_conversions() {
    let (_, records) = read(&fixture("data/alpaca.jsonl"));
    let mut current = records.clone();
    for schema in [
        Schema::Messages,
        Schema::ShareGpt,
        Schema::FlanCot,
        Schema::Alpaca,
    ] {
        current = round_trip(&current, schema, Container::Jsonl, EncodeOptions::default())
            .unwrap()
            .0;
    }
    assert_eq!(current, records);
}

#[test]
fn what_each_format_writes() {
    let (_, records) = read(&fixture("data/alpaca.jsonl"));
    // a2 as messages: the input joined into the user turn and kept apart in `seqit`.
    let (_, text) = round_trip(
        &records[1..2],
        Schema::Messages,
        Container::Jsonl,
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        text,
        "{\"id\":\"a2\",\"messages\":[{\"role\":\"user\",\"content\":\"Translate the sentence into French.\\n\\nThe cat sleeps on the sofa.\"},{\"role\":\"assistant\",\"content\":\"Le chat dort sur le canapé.\"}],\"category\":\"translation\",\"seqit\":{\"input\":\"The cat sleeps on the sofa.\"}}\n"
    );
    // a3 as ShareGPT: the system prompt as the first turn, names human/gpt.
    let (_, text) = round_trip(
        &records[2..3],
        Schema::ShareGpt,
        Container::Jsonl,
        Default::default(),
    )
    .unwrap();
    assert!(
        text.starts_with("{\"id\":\"a3\",\"conversations\":[{\"from\":\"system\",\"value\":\"你是一个乐于助人的翻译助手。\"},{\"from\":\"human\",\"value\":\"把下面的句子翻译成英文。\\n\\n我喜欢学习新的语言。\"},{\"from\":\"gpt\""),
        "{text}"
    );
    // a4 as FlanCoT: earlier turns in `history`.
    let (_, text) = round_trip(
        &records[3..4],
        Schema::FlanCot,
        Container::Jsonl,
        Default::default(),
    )
    .unwrap();
    assert!(text.contains("\"history\":[[\"Hi!\",\"Hello! How can I help?\"],[\"Can you read emoji?\",\"Yes, ask away.\"]]"), "{text}");
    // a3 as alpaca_eval: no system field there, so it goes into `seqit`.
    let options = EncodeOptions {
        generator: Some("m".into()),
    };
    let (_, text) = round_trip(
        &records[2..3],
        Schema::AlpacaEval,
        Container::JsonArray,
        options,
    )
    .unwrap();
    assert!(text.starts_with("[\n{\"id\":\"a3\",\"instruction\":\"把下面的句子翻译成英文。\\n\\n我喜欢学习新的语言。\",\"output\":\"I like learning new languages.\",\"generator\":\"m\",\"seqit\":{\"input\":\"我喜欢学习新的语言。\",\"system\":\"你是一个乐于助人的翻译助手。\"}}\n]"), "{text}");
}

#[test]
fn prompt_lists_keep_prompts() {
    let (_, records) = read(&fixture("data/flan.jsonl"));
    let (back, text) = round_trip(
        &records,
        Schema::Prompts,
        Container::Jsonl,
        Default::default(),
    )
    .unwrap();
    assert!(
        text.starts_with("{\"id\":\"flan.1\",\"prompt\":\"Premise:"),
        "{text}"
    );
    for (a, b) in back.iter().zip(&records) {
        assert_eq!(a.prompt_text(), b.prompt_text());
        assert_eq!(a.system, b.system);
        assert_eq!(a.response(), None);
    }
    let (back, text) = round_trip(
        &records,
        Schema::Prompts,
        Container::Text,
        Default::default(),
    )
    .unwrap();
    assert_eq!(text.lines().count(), 3);
    assert_eq!(back[2].prompt_text(), records[2].prompt_text());
}

#[test]
fn formats_that_cannot_hold_a_record_say_why() {
    let (_, records) = read(&fixture("data/sharegpt.json"));
    let tool_call = &records[3];
    let err = round_trip(
        std::slice::from_ref(tool_call),
        Schema::Alpaca,
        Container::Jsonl,
        Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("record 0 (id `7`): cannot write it as alpaca: turn 1 has role `function_call`, but this format holds a system prompt and alternating user/assistant turns only (turn 1 would be `assistant`)"),
        "{err}"
    );
    let (_, records) = read(&fixture("data/alpaca.jsonl"));
    let err = round_trip(
        &records,
        Schema::AlpacaEval,
        Container::JsonArray,
        Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("it has no `generator`"), "{err}");
    let err = round_trip(
        &records[3..4],
        Schema::Prompts,
        Container::Jsonl,
        Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("it has 3 user turns; a prompts record holds one"),
        "{err}"
    );
    let err = round_trip(
        &records[4..5],
        Schema::Prompts,
        Container::Text,
        Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot write it as prompts: its prompt has a line break"),
        "{err}"
    );
    let mut developer = Record::prompt("hi");
    developer.messages.insert(
        0,
        ChatMessage::new(Role::Other("moderator".into()), "be nice"),
    );
    let err = round_trip(
        &[developer],
        Schema::ShareGpt,
        Container::Jsonl,
        Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("turn 0 has role `moderator`, which this format has no name for"),
        "{err}"
    );
}

#[test]
fn failed_writes_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    std::fs::write(&path, "previous good data\n").unwrap();
    let (_, records) = read(&fixture("data/sharegpt.json"));
    let err =
        seqit_data::write_all(&path, &WriteOptions::new(Schema::Alpaca), &records).unwrap_err();
    assert!(matches!(err, Error::Unwritable { index: 3, .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "previous good data\n"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
}

#[test]
fn records_with_odd_metadata_round_trip() {
    let mut record = Record::exchange("Q", Some("ctx"), Some("A"));
    record.id = Some(json!(12));
    record.system = Some("sys".into());
    // Keys that collide with format fields, the extra object's own name, nested values.
    record
        .metadata
        .insert("messages".into(), json!(["not", "turns"]));
    record
        .metadata
        .insert("instruction".into(), json!({"original": "q"}));
    record.metadata.insert("seqit".into(), json!({"round": 2}));
    record.metadata.insert("conversations".into(), json!(null));
    record.metadata.insert(
        "provenance".into(),
        json!({"teacher": "llama", "options": ["B", "D"]}),
    );
    for schema in [
        Schema::Alpaca,
        Schema::ShareGpt,
        Schema::Messages,
        Schema::FlanCot,
    ] {
        for container in [Container::Jsonl, Container::JsonArray] {
            let (back, text) = round_trip(
                std::slice::from_ref(&record),
                schema,
                container,
                Default::default(),
            )
            .unwrap();
            assert_eq!(back, vec![record.clone()], "{schema}: {text}");
        }
    }
}

#[test]
fn reads_stream_large_jsonl() {
    // 20k records through the streaming reader and writer.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jsonl");
    let records: Vec<Record> = (0..20_000)
        .map(|i| {
            let mut r = Record::exchange(
                &format!("Question {i}?"),
                None,
                Some(&format!("Answer {i}.")),
            );
            r.id = Some(json!(i));
            r
        })
        .collect();
    seqit_data::write_all(&path, &WriteOptions::new(Schema::Alpaca), &records).unwrap();
    let reader = seqit_data::Reader::open(&path, &ReadOptions::default()).unwrap();
    let mut n = 0;
    for (i, record) in reader.enumerate() {
        let record = record.unwrap();
        assert_eq!(record.id, Some(json!(i)));
        n += 1;
    }
    assert_eq!(n, 20_000);
}

#[test]
fn jsonl_in_a_json_file_and_crlf_and_bom() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lines.json");
    std::fs::write(
        &path,
        "\u{feff}{\"instruction\":\"a\",\"output\":\"b\"}\r\n\r\n{\"instruction\":\"c\",\"output\":\"d\"}\r\n",
    )
    .unwrap();
    let (format, records) = read(&path);
    assert_eq!(format.to_string(), "alpaca (JSON Lines)");
    assert_eq!(records[1].response(), Some("d"));
}

#[cfg(feature = "parquet")]
mod parquet {
    use super::*;

    #[test]
    fn every_fixture_through_parquet() {
        for name in [
            "alpaca.jsonl",
            "alpaca.json",
            "sharegpt.json",
            "messages.jsonl",
            "flan.jsonl",
            "alpaca_eval.json",
            "prompts.jsonl",
        ] {
            let (format, records) = read(&fixture(&format!("data/{name}")));
            let (back, _) = round_trip(
                &records,
                format.schema,
                Container::Parquet,
                Default::default(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(back, records, "{name}");
            // And into a chat format, whose turns get a list<struct> column.
            if format.schema.to_string() != "sharegpt" {
                let (back, _) = round_trip(
                    &records,
                    Schema::Messages,
                    Container::Parquet,
                    Default::default(),
                )
                .unwrap();
                assert_eq!(back, records, "{name} as messages");
            }
        }
    }

    #[test]
    fn parquet_auto_detects_and_reports_rows() {
        let (_, records) = read(&fixture("data/messages.jsonl"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.parquet");
        seqit_data::write_all(&path, &WriteOptions::new(Schema::Messages), &records).unwrap();
        let (format, back) = read(&path);
        assert_eq!(format.to_string(), "messages (Parquet)");
        assert_eq!(back, records);
        let bad = dir.path().join("bad.parquet");
        std::fs::write(&bad, b"PAR1 not really").unwrap();
        let err = read_all(&bad, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}: not a readable Parquet file", bad.display())),
            "{err}"
        );
    }
}

#[test]
fn seqeval_records_keep_their_chain_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("set.jsonl");
    let line = r#"{"id":"v-2-0","instruction":"First name a fruit. Then write it in capitals.","input":"","iteration":2,"modes":["choose_word","uppercase_word"],"sub_steps":["Name a fruit.","Write it in capitals."],"steps":[{"kind":"choose_word","options":["apple","pear"]},{"kind":"uppercase_word","ref":1}]}"#;
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let (format, records) = read(&path);
    assert_eq!(format.schema, Schema::SeqEval);
    assert_eq!(records[0].response(), None);
    assert_eq!(records[0].metadata["iteration"], 2);
    let (back, text) = round_trip(
        &records,
        Schema::SeqEval,
        Container::Jsonl,
        Default::default(),
    )
    .unwrap();
    assert_eq!(back, records);
    let written: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(written, serde_json::from_str::<Value>(line).unwrap());
}
