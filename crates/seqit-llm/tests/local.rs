//! The local backend: concurrent calls are batched and answer what the engine answers
//! directly; samples are seeded by index; the cache works in front of it too.

use std::sync::Arc;

use futures::future::join_all;
use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_engine::{Engine, EngineOptions, GenerationRequest};
use seqit_llm::{Cache, Client, Llm, LlmRequest, LocalBackend};
use seqit_testkit::{greedy_exactly, TinyModel, TinyModelSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_match_direct_generation() {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(&dir.path().join("m"))
        .unwrap();
    let engine = Arc::new(
        Engine::load(
            &hf,
            EngineOptions {
                max_batch: 4,
                ..EngineOptions::default()
            },
        )
        .unwrap(),
    );
    let prompts = [
        "a",
        "the cat sat",
        "hello there",
        "xy",
        "in an inn",
        "one more",
        "and the last",
    ];
    let direct: Vec<String> = engine
        .generate(
            &prompts
                .iter()
                .map(|p| GenerationRequest {
                    prompt: Prompt::Chat(vec![ChatMessage::user(*p)]),
                    params: greedy_exactly(6),
                })
                .collect::<Vec<_>>(),
            &mut |_, _| {},
        )
        .unwrap()
        .into_iter()
        .map(|c| c.text)
        .collect();

    let backend = LocalBackend::new(engine.clone(), "tiny");
    assert_eq!(backend.model(), "tiny");
    let requests: Vec<LlmRequest> = prompts
        .iter()
        .map(|p| LlmRequest::new(Prompt::Chat(vec![ChatMessage::user(*p)]), greedy_exactly(6)))
        .collect();
    let answers = join_all(requests.iter().map(|r| backend.generate(r))).await;
    for (answer, want) in answers.into_iter().zip(&direct) {
        let answer = answer.unwrap();
        assert_eq!(&answer.samples[0].text, want);
        assert_eq!(answer.samples[0].completion_tokens, Some(6));
        assert!(answer.usage.prompt_tokens > 0);
    }

    // Stochastic samples: sample i uses seed + i, so asking for sample 2 alone gives
    // what the third of three samples was.
    let mut stochastic =
        LlmRequest::new(Prompt::Text("the".into()), greedy_exactly(8)).with_samples(3);
    stochastic.params.temperature = 1.0;
    stochastic.params.seed = 5;
    let three = backend.generate(&stochastic).await.unwrap();
    assert_eq!(
        three.samples.iter().map(|s| s.index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let alone = backend
        .generate(&stochastic.for_samples(2, 1))
        .await
        .unwrap();
    assert_eq!(alone.samples[0].text, three.samples[2].text);

    // Invalid parameters fail that request only.
    let bad = LlmRequest::new(
        Prompt::Text("x".into()),
        SamplingParams {
            max_tokens: 0,
            ..greedy_exactly(1)
        },
    );
    assert!(backend.generate(&bad).await.is_err());

    // Behind the cache: the second ask is served without generating.
    let cache = Arc::new(Cache::open(&dir.path().join("cache.sqlite")).unwrap());
    let client = Client::new(Arc::new(backend)).with_cache(cache);
    let first = client.generate(&requests[0]).await.unwrap();
    let second = client.generate(&requests[0]).await.unwrap();
    assert_eq!(first.samples[0].text, second.samples[0].text);
    assert!(second.samples[0].cached);
    assert_eq!(client.ledger().tallies()["tiny"].requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(&dir.path().join("m"))
        .unwrap();
    let engine = Arc::new(Engine::load(&hf, EngineOptions::default()).unwrap());
    let backend = LocalBackend::new(engine, "tiny");
    let request = LlmRequest::new(
        Prompt::Chat(vec![
            ChatMessage::user("What shape?").with_image("data:image/png;base64,AAAA")
        ]),
        greedy_exactly(4),
    );
    let err = backend.generate(&request).await.unwrap_err().to_string();
    assert!(
        err.contains("`tiny` reads text only") && err.contains("hint: send it to a vision model"),
        "{err}"
    );
}
