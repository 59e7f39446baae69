//! `generate_file` against a fake backend: replies in input order, duplicate prompts
//! asked once, resume from a torn journal, failed records listed and retried alone,
//! cached answers written without the backend; dry-run estimates and Batch API exports
//! count the same samples.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use seqit_core::progress::Progress;
use seqit_core::{FinishReason, Prompt, SamplingParams};
use seqit_llm::{
    export_batch, generate_file, Cache, Client, GenerateFile, Llm, LlmError, LlmRequest,
    LlmResponse, RequestSettings, Sample, Usage,
};

/// Answers `"<last message> #<index>"`; refuses the prompts in `refuse`.
#[derive(Default)]
struct Echo {
    refuse: Mutex<HashSet<String>>,
    calls: AtomicUsize,
}

impl Llm for Echo {
    fn model(&self) -> &str {
        "echo"
    }

    fn generate<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let text = match &request.prompt {
                Prompt::Text(text) => text.clone(),
                Prompt::Chat(messages) => messages.last().unwrap().content.clone(),
            };
            if self.refuse.lock().unwrap().contains(&text) {
                return Err(LlmError::Invalid(format!("refused `{text}`")));
            }
            Ok(LlmResponse {
                samples: request
                    .sample_indices()
                    .map(|i| Sample {
                        prompt_tokens: Some(3),
                        completion_tokens: Some(2),
                        ..Sample::new(i, format!("{text} #{i}"), FinishReason::Stop)
                    })
                    .collect(),
                usage: Usage::default(),
                attempts: 1,
                constraint_retries: 0,
            })
        })
    }
}

/// Records what a job reports.
#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<String>>,
    advanced: AtomicUsize,
}

impl Progress for Recorder {
    fn start(&self, stage: &str, total: u64, done: u64) {
        let line = format!("start {stage} {total} {done}");
        self.lines.lock().unwrap().push(line);
    }
    fn advance(&self, n: u64) {
        self.advanced.fetch_add(n as usize, Ordering::SeqCst);
    }
    fn finish(&self) {}
    fn note(&self, message: &str) {
        self.lines.lock().unwrap().push(message.to_string());
    }
    fn warn(&self, message: &str) {
        self.lines
            .lock()
            .unwrap()
            .push(format!("warning: {message}"));
    }
}

fn settings(samples: u32) -> RequestSettings {
    RequestSettings {
        system: None,
        raw: false,
        params: SamplingParams::greedy(8),
        samples,
        prompt_version: String::new(),
    }
}

fn job(dir: &Path, input: &str) -> GenerateFile {
    let path = dir.join("in.jsonl");
    std::fs::write(&path, input).unwrap();
    GenerateFile {
        input: path,
        output: dir.join("out.jsonl"),
        requests: settings(1),
        concurrency: 4,
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn replies_keep_input_order_and_duplicate_prompts_are_asked_once() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(
        dir.path(),
        "{\"id\": \"a\", \"prompt\": \"one\"}\n\n{\"prompt\": \"two\"}\n{\"id\": 9, \"prompt\": \"one\"}\n",
    );
    let echo = Arc::new(Echo::default());
    let records = job.read_records().unwrap();
    let progress = Recorder::default();
    let report = generate_file(&Client::new(echo.clone()), &job, &records, &progress)
        .await
        .unwrap();
    assert_eq!(echo.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        read(&job.output),
        "{\"id\":\"a\",\"output\":\"one #0\",\"finish_reason\":\"stop\",\"prompt_tokens\":3,\"completion_tokens\":2}\n\
         {\"id\":1,\"output\":\"two #0\",\"finish_reason\":\"stop\",\"prompt_tokens\":3,\"completion_tokens\":2}\n\
         {\"id\":9,\"output\":\"one #0\",\"finish_reason\":\"stop\",\"prompt_tokens\":3,\"completion_tokens\":2}\n"
    );
    assert_eq!(
        (
            report.records,
            report.resumed,
            report.prompt_tokens,
            report.completion_tokens
        ),
        (3, 0, 9, 6)
    );
    assert!(!job.partial_path().exists());
    assert_eq!(*progress.lines.lock().unwrap(), ["start generate 3 0"]);
    assert_eq!(progress.advanced.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_torn_journal_resumes_and_kept_lines_are_copied_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(
        dir.path(),
        "{\"id\": 1, \"prompt\": \"x\"}\n{\"id\": 2, \"prompt\": \"y\"}\n{\"id\": 3, \"prompt\": \"z\"}\n",
    );
    let kept = "{\"id\":2,\"output\":\"KEPT\",\"prompt_tokens\":5,\"completion_tokens\":1}";
    std::fs::write(job.partial_path(), format!("{kept}\n{{\"id\":3,\"out")).unwrap();
    let echo = Arc::new(Echo::default());
    let progress = Recorder::default();
    let records = job.read_records().unwrap();
    let report = generate_file(&Client::new(echo.clone()), &job, &records, &progress)
        .await
        .unwrap();
    assert_eq!(echo.calls.load(Ordering::SeqCst), 2, "x and z");
    let output = read(&job.output);
    assert_eq!(output.lines().nth(1), Some(kept));
    assert!(output.lines().nth(2).unwrap().contains("\"z #0\""));
    assert_eq!((report.resumed, report.prompt_tokens), (1, 11));
    assert_eq!(
        *progress.lines.lock().unwrap(),
        [
            "resuming: 1 of 3 records already generated",
            "start generate 3 1"
        ]
    );
}

#[tokio::test]
async fn failed_records_are_listed_and_only_they_are_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(
        dir.path(),
        "{\"id\": \"a\", \"prompt\": \"fine\"}\n{\"id\": \"b\", \"prompt\": \"bad\"}\n{\"id\": \"c\", \"prompt\": \"also fine\"}\n",
    );
    let echo = Arc::new(Echo::default());
    echo.refuse.lock().unwrap().insert("bad".into());
    let client = Client::new(echo.clone());
    let records = job.read_records().unwrap();
    let progress = Recorder::default();
    let error = generate_file(&client, &job, &records, &progress)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "1 of 3 records failed after every retry (first: record \"b\": refused `bad`)"
        ),
        "{error}"
    );
    assert!(error.contains("the 2 answered are kept in"), "{error}");
    assert_eq!(
        read(&job.errors_path()),
        "{\"id\":\"b\",\"error\":\"refused `bad`\",\"kind\":\"invalid\"}\n"
    );
    assert!(!job.output.exists());
    assert_eq!(progress.advanced.load(Ordering::SeqCst), 3);

    echo.refuse.lock().unwrap().clear();
    let report = generate_file(&client, &job, &records, &Recorder::default())
        .await
        .unwrap();
    assert_eq!(echo.calls.load(Ordering::SeqCst), 4);
    assert_eq!(report.resumed, 2);
    assert_eq!(read(&job.output).lines().count(), 3);
    assert!(!job.errors_path().exists());
}

#[tokio::test]
async fn cached_answers_are_written_without_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = job(
        dir.path(),
        "{\"prompt\": \"p\"}\n{\"prompt\": \"q\"}\n{\"prompt\": \"p\", \"id\": \"again\"}\n",
    );
    job.requests.samples = 2;
    job.requests.params.temperature = 0.7;
    let cache = Arc::new(Cache::open(&dir.path().join("cache.sqlite")).unwrap());
    let records = job.read_records().unwrap();
    let echo = Arc::new(Echo::default());
    let client = Client::new(echo.clone()).with_cache(cache.clone());

    // Before the run: 4 distinct samples (the third record repeats the first), none
    // cached; the Batch API export writes the same 4.
    let dry = job.estimate(&records, "echo", None, Some(&cache)).unwrap();
    assert_eq!((dry.estimate.samples, dry.estimate.cached_samples), (4, 0));
    assert_eq!(dry.estimate.max_completion_tokens, 4 * 8);
    let batch = dir.path().join("batch.jsonl");
    let exported =
        export_batch(&job.requests, &records, "echo", None, Some(&cache), &batch).unwrap();
    assert_eq!(
        (exported.requests, exported.duplicates, exported.cached),
        (4, 2, 0)
    );
    assert_eq!(read(&batch).lines().count(), 4);
    assert!(read(&batch).contains("\"custom_id\":\"0/1/"));

    generate_file(&client, &job, &records, &Recorder::default())
        .await
        .unwrap();
    let first = read(&job.output);
    assert!(first.starts_with(
        "{\"id\":0,\"outputs\":[\"p #0\",\"p #1\"],\"finish_reasons\":[\"stop\",\"stop\"],\"prompt_tokens\":3,\"completion_tokens\":4}\n"
    ));
    let calls = echo.calls.load(Ordering::SeqCst);

    std::fs::remove_file(&job.output).unwrap();
    let fresh = Client::new(echo.clone()).with_cache(cache.clone());
    generate_file(&fresh, &job, &records, &Recorder::default())
        .await
        .unwrap();
    assert_eq!(echo.calls.load(Ordering::SeqCst), calls, "nothing asked");
    assert_eq!(read(&job.output), first);
    let dry = job.estimate(&records, "echo", None, Some(&cache)).unwrap();
    assert_eq!((dry.estimate.samples, dry.estimate.cached_samples), (4, 4));
    let exported =
        export_batch(&job.requests, &records, "echo", None, Some(&cache), &batch).unwrap();
    assert_eq!((exported.requests, exported.cached), (0, 4));
}

#[test]
fn input_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    for (content, expected) in [
        ("{\"prompt\": \"ok\"}\n{oops\n", "in.jsonl:2: invalid JSON"),
        (
            "{\"prompt\": 5}\n",
            "in.jsonl:1: field `prompt`: expected a string",
        ),
        (
            "{\"id\": 1, \"prompt\": \"a\"}\n{\"id\": 1, \"prompt\": \"b\"}\n",
            "in.jsonl:2: field `id`: 1 appears twice",
        ),
        (
            "{\"prompt\": \"a\", \"messages\": []}\n",
            "in.jsonl:1: give either `prompt` or `messages`",
        ),
    ] {
        std::fs::write(&path, content).unwrap();
        let error = format!("{:#}", settings(1).read_input(&path).unwrap_err());
        assert!(error.contains(expected), "{error}");
    }
    // A system message goes before prompts and before conversations without one.
    std::fs::write(
        &path,
        "{\"prompt\": \"hi\"}\n{\"messages\": [{\"role\": \"system\", \"content\": \"own\"}, {\"role\": \"user\", \"content\": \"x\"}]}\n",
    )
    .unwrap();
    let with_system = RequestSettings {
        system: Some("sys".into()),
        ..settings(1)
    };
    let records = with_system.read_input(&path).unwrap();
    let systems: Vec<&str> = records
        .iter()
        .map(|r| match &r.prompt {
            Prompt::Chat(messages) => messages[0].content.as_str(),
            Prompt::Text(_) => unreachable!(),
        })
        .collect();
    assert_eq!(systems, ["sys", "own"]);
    let raw = RequestSettings {
        raw: true,
        ..settings(1)
    };
    assert_eq!(raw.prompt("hi"), Prompt::Text("hi".into()));
}
