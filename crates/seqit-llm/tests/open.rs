//! `open_backend`: the same spec opens the local engine or an endpoint, and resolves the
//! served model name when none is given.

use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_engine::{Engine, EngineOptions, GenerationRequest};
use seqit_faultserver::{FaultConfig, FaultServer, ScriptRule};
use seqit_llm::{open_backend, BackendSpec, LlmRequest};

fn question() -> LlmRequest {
    LlmRequest::new(
        Prompt::Chat(vec![ChatMessage::user("What is the capital of France?")]),
        SamplingParams::greedy(12),
    )
}

#[tokio::test]
async fn remote_spec_asks_the_served_model_and_answers() {
    let server = FaultServer::start(FaultConfig {
        model: "served-teacher".into(),
        script: vec![ScriptRule {
            contains: "capital of France".into(),
            reply: "Paris.".into(),
        }],
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let spec = BackendSpec::remote(server.url(), None);
    let backend = open_backend(&spec).await.unwrap();
    assert_eq!(backend.model(), "served-teacher");
    let answer = backend.generate(&question()).await.unwrap();
    assert_eq!(answer.samples[0].text, "Paris.");
    let log = server.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].prompt, "What is the capital of France?");
    server.stop().await;
}

#[tokio::test]
async fn describe_never_shows_a_password_and_names_the_model() {
    let spec = BackendSpec::remote("http://user:secret@localhost:9/v1", Some("m".into()));
    let text = spec.describe();
    assert!(!text.contains("secret"), "{text}");
    assert!(text.starts_with("remote m at http://"), "{text}");
    assert_eq!(BackendSpec::local(None).describe(), "local smollm2-135m");
}

#[tokio::test]
async fn a_missing_key_variable_is_an_error_before_any_request() {
    let mut spec = BackendSpec::remote("http://127.0.0.1:9/v1", Some("m".into()));
    spec.api_key_env = "SEQIT_TEST_UNSET_KEY_VARIABLE".into();
    let error = open_backend(&spec)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("SEQIT_TEST_UNSET_KEY_VARIABLE"), "{error}");
}

/// The local spec answers with the engine's own greedy reply (the text itself is not
/// asserted: its first token is a near-tie; see seqit-engine's smollm2_golden).
#[tokio::test]
async fn local_spec_runs_the_default_model() {
    let Some(path) = seqit_testkit::require_model() else {
        return;
    };
    let mut spec = BackendSpec::local(None);
    spec.local_max_batch = 2;
    let backend = open_backend(&spec).await.unwrap();
    assert_eq!(backend.model(), "smollm2-135m");
    let answer = backend.generate(&question()).await.unwrap();
    let engine = Engine::load(&path, EngineOptions::default()).unwrap();
    let request = question();
    let want = engine
        .generate(
            &[GenerationRequest {
                prompt: request.prompt.clone(),
                params: request.params.clone(),
            }],
            &mut |_, _| {},
        )
        .unwrap()
        .remove(0);
    assert!(!want.text.trim().is_empty());
    assert_eq!(answer.samples[0].text, want.text);
}

/// Two local models in directories of the same name (the merged models of two training
/// runs) get different names, so they never share request-cache entries; the same
/// files keep their name.
#[tokio::test]
async fn local_models_with_the_same_file_name_are_told_apart() {
    use seqit_testkit::{TinyModel, TinyModelSpec};
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a/model"), dir.path().join("b/model"));
    let tiny = TinyModel::new(&TinyModelSpec::default()).unwrap();
    tiny.write_hf_dir(&a).unwrap();
    tiny.write_hf_dir(&b).unwrap();
    let name = |p: &std::path::Path| {
        let spec = BackendSpec::local(Some(p.display().to_string()));
        async move { open_backend(&spec).await.unwrap().model().to_string() }
    };
    let (name_a, name_b) = (name(&a).await, name(&b).await);
    assert!(name_a.starts_with("model@"), "{name_a}");
    assert_ne!(name_a, name_b);
    assert_eq!(name(&a).await, name_a);
}
