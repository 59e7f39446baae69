//! Malformed dataset files through the real binary: `seqit data convert` fails with one
//! precise error (file, line or record, field, what was expected), exit status 1 and no
//! output file left behind; `seqit data validate` lists the same problem.

use std::path::Path;
use std::process::Output;

use seqit_testkit::cli::Seqit;

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

struct Case {
    file: &'static str,
    contents: &'static [u8],
    /// Extra flags for both commands.
    args: &'static [&'static str],
    /// Fragments the error must contain, in order.
    expect: &'static [&'static str],
}

const fn case(
    file: &'static str,
    contents: &'static [u8],
    expect: &'static [&'static str],
) -> Case {
    Case {
        file,
        contents,
        args: &[],
        expect,
    }
}

const CASES: &[Case] = &[
    case(
        "bad_json.jsonl",
        b"{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":\"c\",\"output\":\"d\"}\n{\"instruction\":\"e\",\"output\": }\n",
        &["bad_json.jsonl:3: invalid JSON at column 30: expected value"],
    ),
    case(
        "instruction_number.jsonl",
        b"{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":17,\"output\":\"x\"}\n",
        &["instruction_number.jsonl:2: field `instruction`: expected a string, found number"],
    ),
    case(
        "missing_output.jsonl",
        b"{\"instruction\":\"a\"}\n",
        &["missing_output.jsonl:1: field `output`: missing; expected a string"],
    ),
    case(
        "output_null.jsonl",
        b"{\"instruction\":\"a\",\"output\":null}\n",
        &["output_null.jsonl:1: field `output`: expected a string, found null"],
    ),
    case(
        "input_array.jsonl",
        b"{\"instruction\":\"a\",\"input\":[\"x\"],\"output\":\"b\"}\n",
        &["input_array.jsonl:1: field `input`: expected a string, found array"],
    ),
    case(
        "two_problems.jsonl",
        b"{\"instruction\":5,\"output\":null}\n",
        &["two_problems.jsonl:1: field `instruction`: expected a string, found number (and 1 more problem in this record)"],
    ),
    case("empty.jsonl", b"", &["empty.jsonl: the file is empty"]),
    case("blank_lines.jsonl", b"\n  \n\t\n", &["blank_lines.jsonl: the file is empty"]),
    case("empty_array.json", b"[ ]\n", &["empty_array.json: the file holds no records"]),
    case(
        "bad_utf8.jsonl",
        b"{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":\"caf\xe9\",\"output\":\"x\"}\n",
        &["bad_utf8.jsonl:2: not valid UTF-8 text (byte 0xe9 at column 20)", "hint: convert the file to UTF-8"],
    ),
    case(
        "latin1.json",
        b"[\n{\"instruction\":\"ok\",\"output\":\"x\"},\n{\"instruction\":\"na\xefve\",\"output\":\"y\"}\n]\n",
        &["latin1.json:3: not valid UTF-8 text (byte 0xef at column 19)"],
    ),
    Case {
        file: "long_line.jsonl",
        contents: b"{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"output\":\"b\"}\n",
        args: &["--max-line-bytes", "100"],
        expect: &["long_line.jsonl:2: the line is longer than the limit of 100 bytes"],
    },
    case(
        "trailing_garbage.json",
        b"[{\"instruction\":\"a\",\"output\":\"b\"}]\nxyz\n",
        &["trailing_garbage.json:2: trailing characters after the JSON array (column 1)"],
    ),
    case(
        "trailing_chars.jsonl",
        b"{\"instruction\":\"a\",\"output\":\"b\"} extra\n",
        &["trailing_chars.jsonl:1: invalid JSON at column 34: trailing characters"],
    ),
    case(
        "top_object.json",
        b"{\n  \"data\": [{\"instruction\": \"a\", \"output\": \"b\"}]\n}\n",
        &["top_object.json: expected a JSON array of records at the top level, found an object"],
    ),
    case(
        "top_string.json",
        b"\"hello\"\n",
        &["top_string.json: expected a JSON array of records at the top level, found a string"],
    ),
    case(
        "top_number.json",
        b"42\n",
        &["top_number.json: expected a JSON array of records at the top level, found a number"],
    ),
    case(
        "strings.json",
        b"[\"a\", \"b\"]\n",
        &["strings.json:1: record 0: expected a JSON object, found string"],
    ),
    case(
        "unknown_fields.jsonl",
        b"{\"text\":\"hello\"}\n",
        &[
            "unknown_fields.jsonl:1: cannot tell the dataset format from this first record (its fields: `text`)",
            "hint: pass --format with one of alpaca, sharegpt, messages, flan, alpaca-eval, prompts",
        ],
    ),
    case(
        "sharegpt_bad_from.json",
        b"[\n{\"conversations\":[{\"from\":\"human\",\"value\":\"hi\"},{\"from\":\"gpt\",\"value\":\"hello\"}]},\n{\"conversations\":[{\"from\":\"human\",\"value\":\"hi\"},{\"from\":\"gpt\",\"value\":\"yo\"},{\"from\":\"bot\",\"value\":\"?\"}]}\n]\n",
        &["sharegpt_bad_from.json:3: record 1: field `conversations[2].from`: expected one of `human`, `gpt`, `system`", "found `bot`"],
    ),
    case(
        "sharegpt_value_number.jsonl",
        b"{\"conversations\":[{\"from\":\"human\",\"value\":42}]}\n",
        &["sharegpt_value_number.jsonl:1: field `conversations[0].value`: expected a string, found number"],
    ),
    case(
        "sharegpt_not_list.jsonl",
        b"{\"conversations\":\"hi\"}\n",
        &["sharegpt_not_list.jsonl:1: field `conversations`: expected a list of turns, found string"],
    ),
    case(
        "sharegpt_turn_array.jsonl",
        b"{\"conversations\":[{\"from\":\"human\",\"value\":\"a\"},[\"gpt\",\"b\"]]}\n",
        &["sharegpt_turn_array.jsonl:1: field `conversations[1]`: expected an object with `from` and `value`, found array"],
    ),
    case(
        "sharegpt_two_systems.jsonl",
        b"{\"system\":\"a\",\"conversations\":[{\"from\":\"system\",\"value\":\"b\"},{\"from\":\"human\",\"value\":\"c\"}]}\n",
        &["sharegpt_two_systems.jsonl:1: field `system`: conflicts with the conversation's leading system turn"],
    ),
    case(
        "messages_no_content.jsonl",
        b"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\"}]}\n",
        &["messages_no_content.jsonl:1: field `messages[1].content`: missing; expected a string"],
    ),
    case(
        "messages_parts.jsonl",
        b"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}]}]}\n",
        &["messages_parts.jsonl:1: field `messages[0].content`: expected a string (content parts are not supported), found array"],
    ),
    case(
        "messages_bad_role.jsonl",
        b"{\"messages\":[{\"role\":\"bot\",\"content\":\"a\"}]}\n",
        &["messages_bad_role.jsonl:1: field `messages[0].role`: expected one of `system`, `user`, `assistant`", "found `bot`"],
    ),
    case(
        "messages_role_number.jsonl",
        b"{\"messages\":[{\"role\":1,\"content\":\"a\"}]}\n",
        &["messages_role_number.jsonl:1: field `messages[0].role`: expected a string, found number"],
    ),
    Case {
        file: "messages_missing.jsonl",
        contents: b"{\"prompt\":\"x\"}\n",
        args: &["--format", "messages"],
        expect: &["messages_missing.jsonl:1: field `messages`: missing; expected a list of {role, content} turns"],
    },
    case(
        "flan_no_response.jsonl",
        b"{\"question\":\"q\"}\n",
        &["flan_no_response.jsonl:1: field `response`: missing; expected a string"],
    ),
    case(
        "flan_system_object.jsonl",
        b"{\"question\":\"q\",\"response\":\"r\",\"system_prompt\":{\"x\":1}}\n",
        &["flan_system_object.jsonl:1: field `system_prompt`: expected a string, found object"],
    ),
    Case {
        file: "eval_no_generator.json",
        contents: b"[{\"instruction\":\"a\",\"output\":\"b\"}]\n",
        args: &["--format", "alpaca-eval"],
        expect: &["eval_no_generator.json:1: record 0: field `generator`: missing; expected a string"],
    },
    case(
        "id_object.jsonl",
        b"{\"id\":{\"a\":1},\"instruction\":\"a\",\"output\":\"b\"}\n",
        &["id_object.jsonl:1: field `id`: expected a string or a number, found object"],
    ),
    case(
        "history_triple.jsonl",
        b"{\"instruction\":\"a\",\"output\":\"b\",\"history\":[[\"q\",\"a\",\"x\"]]}\n",
        &["history_triple.jsonl:1: field `history[0]`: expected a pair [instruction, response] of strings, found a list of 3 item(s)"],
    ),
    case(
        "truncated.json",
        b"[{\"instruction\":\"a\",\"output\":\"b\"},",
        &["truncated.json:1: the file ends inside the JSON array: expected a record or `]` (column 35)"],
    ),
    case(
        "trailing_comma.json",
        b"[{\"instruction\":\"a\",\"output\":\"b\"},]",
        &["trailing_comma.json:1: trailing comma after record 0 (column 35)"],
    ),
    case(
        "missing_comma.json",
        b"[\n{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":\"c\",\"output\":\"d\"}\n]\n",
        &["missing_comma.json:3: expected `,` or `]` after record 0, found `{` (column 1)"],
    ),
    case(
        "record_syntax.json",
        b"[\n{\"instruction\":\"a\",\"output\":\"b\"},\n{\"instruction\":\"c\" \"output\":\"d\"}\n]\n",
        &["record_syntax.json:3: record 1: invalid JSON at column 20: expected `,` or `}`"],
    ),
    case(
        "array_in_jsonl.jsonl",
        b"[\n{\"instruction\":\"a\",\"output\":\"b\"}\n]\n",
        &["array_in_jsonl.jsonl:1: invalid JSON at column 1: EOF while parsing a list", "hint: this line starts a JSON array"],
    ),
    case(
        "system_conflict.jsonl",
        b"{\"instruction\":\"a\",\"output\":\"b\",\"system\":\"x\",\"system_prompt\":\"y\"}\n",
        &["system_conflict.jsonl:1: field `system_prompt`: conflicts with `system`; give one system prompt"],
    ),
    case(
        "not_object_line.jsonl",
        b"{\"instruction\":\"a\",\"output\":\"b\"}\n\"just text\"\n",
        &["not_object_line.jsonl:2: expected a JSON object, found string"],
    ),
    case(
        "bad_utf8.txt",
        b"hello\nw\xffrld\n",
        &["bad_utf8.txt:2: not valid UTF-8 text (byte 0xff at column 2)"],
    ),
    case(
        "data.csv",
        b"instruction,output\na,b\n",
        &["cannot tell how `data.csv` stores records from its name", "hint: name it .json, .jsonl, .txt or .parquet"],
    ),
    case(
        "seqit_number.jsonl",
        b"{\"instruction\":\"a\",\"output\":\"b\",\"seqit\":5}\n",
        &["seqit_number.jsonl:1: field `seqit`: expected an object, found number"],
    ),
    Case {
        file: "wrong_format.jsonl",
        contents: b"{\"instruction\":\"a\",\"output\":\"b\"}\n",
        args: &["--format", "sharegpt"],
        expect: &["wrong_format.jsonl:1: field `conversations`: missing; expected a list of {from, value} turns"],
    },
    Case {
        file: "format_for_txt.txt",
        contents: b"hello\n",
        args: &["--format", "alpaca"],
        expect: &["`format_for_txt.txt` is a text file, which holds a prompt list; `--format alpaca` does not apply"],
    },
    case(
        "prompt_number.jsonl",
        b"{\"prompt\":\"ok\"}\n{\"prompt\":3.5}\n",
        &["prompt_number.jsonl:2: field `prompt`: expected a string, found number"],
    ),
];

fn check_clean_failure(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert!(stderr.starts_with("error: "), "{what}: {stderr}");
    for noise in ["panicked", "stack backtrace", " at /"] {
        assert!(!stderr.contains(noise), "{what}: `{noise}` in: {stderr}");
    }
    stderr
}

fn contains_in_order(text: &str, fragments: &[&str]) -> bool {
    let mut rest = text;
    for fragment in fragments {
        match rest.find(fragment) {
            Some(i) => rest = &rest[i + fragment.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn malformed_files_give_precise_errors_and_no_output() {
    assert!(CASES.len() >= 30, "{} cases", CASES.len());
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(case.file), case.contents).unwrap();
        let mut args = vec![
            "data",
            "convert",
            case.file,
            "out.jsonl",
            "--to",
            "messages",
        ];
        args.extend(case.args);
        let out = SEQIT.output_in(dir.path(), &args);
        let stderr = check_clean_failure(&out, case.file);
        assert!(
            contains_in_order(&stderr, case.expect),
            "{}: expected {:?} in:\n{stderr}",
            case.file,
            case.expect
        );
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            vec![case.file.to_string()],
            "{}: files left: {left:?}",
            case.file
        );

        // `validate` reports the same problem on stdout.
        let mut args = vec!["data", "validate", case.file];
        args.extend(case.args);
        let out = SEQIT.output_in(dir.path(), &args);
        let stderr = check_clean_failure(&out, case.file);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stderr.contains(&format!("`{}`: ", case.file)), "{stderr}");
        let first_line = case.expect[0].split(" (and 1 more problem").next().unwrap();
        assert!(
            stdout.contains(first_line),
            "{}: validate printed:\n{stdout}",
            case.file
        );
    }
}

#[test]
fn missing_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = SEQIT.output_in(
        dir.path(),
        [
            "data",
            "convert",
            "nope.jsonl",
            "out.jsonl",
            "--to",
            "alpaca",
        ],
    );
    let stderr = check_clean_failure(&out, "missing");
    assert!(
        stderr.contains("error: cannot read `nope.jsonl`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("caused by: No such file or directory"),
        "{stderr}"
    );
    assert!(!dir.path().join("out.jsonl").exists());
}

#[test]
fn parquet_needs_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.parquet"), b"PAR1").unwrap();
    let out = SEQIT.output_in(dir.path(), ["data", "validate", "data.parquet"]);
    let stderr = check_clean_failure(&out, "parquet");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if cfg!(feature = "parquet") {
        assert!(
            stdout.contains("data.parquet: not a readable Parquet file"),
            "{stdout}"
        );
    } else {
        assert!(
            stdout.contains(
                "`data.parquet` is a Parquet file, and this build of seqit has no Parquet support"
            ),
            "{stdout}"
        );
        assert!(
            stderr.contains("\nhint: build with `--features parquet`"),
            "{stderr}"
        );
    }
}

/// A line over the default 64 MiB cap is refused without reading it whole.
#[test]
fn huge_line_over_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.jsonl");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        f.write_all(b"{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":\"")
            .unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..65 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\",\"output\":\"b\"}\n{\"instruction\":\"c\",\"output\":\"d\"}\n")
            .unwrap();
    }
    let out = SEQIT.output_in(
        dir.path(),
        [
            "data",
            "convert",
            "huge.jsonl",
            "out.json",
            "--to",
            "alpaca",
        ],
    );
    let stderr = check_clean_failure(&out, "huge");
    assert!(
        stderr
            .contains("huge.jsonl:2: the line is longer than the limit of 64 MiB (67108864 bytes)"),
        "{stderr}"
    );
    assert!(!dir.path().join("out.json").exists());
    // validate goes on past it to the next line.
    let out = SEQIT.output_in(dir.path(), ["data", "validate", "huge.jsonl"]);
    check_clean_failure(&out, "huge validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    std::fs::remove_file(&path).unwrap();
}

/// Writes `total` bytes of `lines` (repeated) after `head`, then `tail`.
fn write_repeated(path: &Path, head: &[u8], lines: &[&[u8]], tail: &[u8], total: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(head).unwrap();
    let block: Vec<u8> = lines.concat().repeat(1000);
    let mut written = head.len();
    while written < total {
        f.write_all(&block).unwrap();
        written += block.len();
    }
    f.write_all(tail).unwrap();
}

/// Runs `seqit data validate FILE` (stdout piped), checks that the first problem is on
/// stdout while the process is still working, and returns stdout, stderr and the
/// child's peak RSS in KiB (its own `ru_maxrss` from `wait4`).
fn validate_measured(dir: &Path, file: &str) -> (String, String, i64) {
    use std::io::{BufRead, Read};
    let mut child = SEQIT
        .command()
        .args(["data", "validate", file])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    stdout.read_line(&mut text).unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first problem should be printed long before the end: {text}"
    );
    stdout.read_to_string(&mut text).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 1,
        "status {status}: {stderr}"
    );
    (text, stderr, usage.ru_maxrss)
}

/// `validate` streams: 100 MB of short bad records (millions of problems) are checked
/// in bounded memory, the first 1000 problems listed as found and the rest counted.
#[test]
fn validate_streams_a_100_mb_bad_file_in_bounded_memory() {
    const MB: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let lines: [&[u8]; 5] = [
        b"{\"instruction\": \"summarise the paragraph below in one line\", \"output\": }\n",
        b"{\"instruction\": 17, \"output\": \"a number is not an instruction\"}\n",
        b"{\"id\": 1, \"instruction\": \"the id repeats the first one\", \"output\": \"b\"}\n",
        b"{\"instruction\": \"   \", \"output\": \"the instruction is only blanks\"}\n",
        b"not json at all, just a line of text in a JSON Lines file\n",
    ];
    let head = b"{\"id\": 1, \"instruction\": \"a\", \"output\": \"b\"}\n";
    write_repeated(&dir.path().join("bad.jsonl"), head, &lines, b"", 100 * MB);
    let (stdout, stderr, rss_kib) = validate_measured(dir.path(), "bad.jsonl");
    let problems = stdout.lines().count();
    assert_eq!(problems, 1000, "{stderr}");
    assert!(stdout.starts_with("bad.jsonl:2: invalid JSON at column 72: expected value\nbad.jsonl:3: field `instruction`: expected a string, found number\nbad.jsonl:4: field `id`: 1 repeats the id of bad.jsonl:1\n"), "{stdout}");
    let lines_in_file = 1 + (100 * MB).div_ceil(lines.concat().len() * 1000) * 5000;
    assert!(
        stderr.contains(&format!(
            "`bad.jsonl`: {} problems found (1000 listed, {} more counted only; raise --max-problems to list them)",
            lines_in_file - 1,
            lines_in_file - 1001
        )),
        "{stderr}"
    );
    eprintln!("validate, 100 MB JSONL: peak RSS {} MiB", rss_kib / 1024);
    assert!(rss_kib < 100 * 1024, "peak RSS {rss_kib} KiB");

    // A JSON array is streamed too (records with problems that do not stop reading):
    // reading it whole, as before, would take more memory than the file's 50 MB.
    let records: [&[u8]; 3] = [
        b",\n{\"instruction\": 17, \"output\": \"a number is not an instruction\"}",
        b",\n{\"id\": 1, \"instruction\": \"the id repeats the first one\", \"output\": \"b\"}",
        b",\n{\"instruction\": \"   \", \"output\": \"the instruction is only blanks\"}",
    ];
    let head = b"[{\"id\": 1, \"instruction\": \"a\", \"output\": \"b\"}";
    write_repeated(
        &dir.path().join("bad.json"),
        head,
        &records,
        b"\n]\n",
        50 * MB,
    );
    let (stdout, stderr, rss_kib) = validate_measured(dir.path(), "bad.json");
    assert_eq!(stdout.lines().count(), 1000, "{stderr}");
    assert!(
        stdout.starts_with("bad.json:2: record 1: field `instruction`: expected a string, found number\nbad.json:3: record 2: field `id`: 1 repeats the id of bad.json:1: record 0\n"),
        "{stdout}"
    );
    assert!(stderr.contains("problems found (1000 listed"), "{stderr}");
    eprintln!(
        "validate, 50 MB JSON array: peak RSS {} MiB",
        rss_kib / 1024
    );
    assert!(rss_kib < 50 * 1024, "peak RSS {rss_kib} KiB");
}

#[test]
fn max_problems_lists_that_many_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("few.jsonl"),
        "x\ny\nz\n{\"prompt\": \"\"}\n",
    )
    .unwrap();
    for (max, listed) in [("2", 2), ("0", 0), ("10", 4)] {
        let out = SEQIT.output_in(
            dir.path(),
            ["data", "validate", "few.jsonl", "--max-problems", max],
        );
        let stderr = check_clean_failure(&out, "few");
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), listed);
        let note = if listed < 4 {
            format!(
                " ({listed} listed, {} more counted only; raise --max-problems to list them)",
                4 - listed
            )
        } else {
            String::new()
        };
        assert!(
            stderr.contains(&format!("`few.jsonl`: 4 problems found{note}")),
            "{stderr}"
        );
    }
}
