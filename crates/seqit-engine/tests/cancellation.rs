//! Stopping requests early (`Engine::generate_cancellable`) and client-sized numbers: a
//! cancelled request ends at once with `FinishReason::Cancelled` and the text it had,
//! leaves the batch, and changes nothing for the others; `max_tokens = usize::MAX`
//! (which a server may receive from a client) runs to the context window without
//! overflowing.

use seqit_core::FinishReason;
use seqit_engine::{Engine, EngineOptions};
use seqit_testkit::{raw_request, tiny_q8_gguf};

#[test]
fn a_cancelled_request_stops_within_one_step_and_the_others_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::load(
        &tiny_q8_gguf(&dir.path().join("tiny-q8.gguf"), 512),
        EngineOptions::default(),
    )
    .unwrap();
    let requests = [
        raw_request("the cat sat on", 40),
        raw_request("hello there, how are you", 40),
        raw_request("xy", 40),
    ];
    let reference = engine.generate(&requests, &mut |_, _| {}).unwrap();

    // Request 1 is cancelled when asked for the 7th time: once before the prefill, then
    // before each decode step, so after its 5th token.
    const KEPT: usize = 5;
    let mut asked = [0usize; 3];
    let mut streamed = [String::new(), String::new(), String::new()];
    let got = engine
        .generate_cancellable(
            &requests,
            &mut |i, delta| streamed[i].push_str(delta),
            &mut |i| {
                asked[i] += 1;
                i == 1 && asked[i] > KEPT + 1
            },
        )
        .unwrap();
    assert_eq!(got[1].finish_reason, FinishReason::Cancelled);
    assert_eq!(got[1].token_ids, reference[1].token_ids[..KEPT]);
    assert_eq!(got[1].prompt_tokens, reference[1].prompt_tokens);
    assert_eq!(streamed[1], got[1].text, "its text so far is handed over");
    assert_eq!(asked[1], KEPT + 2, "a cancelled request is not asked again");
    for i in [0, 2] {
        assert_eq!(got[i], reference[i], "request {i} is unchanged");
        assert_eq!(streamed[i], got[i].text);
        // Before the prefill, then before each of its 40 tokens is sampled.
        assert_eq!(asked[i], 1 + 40);
    }
}

#[test]
fn a_request_cancelled_before_its_prefill_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::load(
        &tiny_q8_gguf(&dir.path().join("tiny-q8.gguf"), 512),
        EngineOptions::default(),
    )
    .unwrap();
    let requests = [raw_request("the cat sat on", 8), raw_request("xy", 8)];
    let reference = engine.generate(&requests, &mut |_, _| {}).unwrap();
    let got = engine
        .generate_cancellable(&requests, &mut |_, _| {}, &mut |i| i == 0)
        .unwrap();
    assert_eq!(got[0].finish_reason, FinishReason::Cancelled);
    assert!(got[0].token_ids.is_empty() && got[0].text.is_empty());
    assert_eq!(got[0].prompt_tokens, reference[0].prompt_tokens);
    assert_eq!(got[1], reference[1]);
}

#[test]
fn max_tokens_of_usize_max_runs_to_the_context_window() {
    const CONTEXT: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::load(
        &tiny_q8_gguf(&dir.path().join("tiny-q8.gguf"), CONTEXT),
        EngineOptions::default(),
    )
    .unwrap();
    // Alone, and batched with a short request (the batch sizes its cache from the
    // longest prompt plus the largest `max_tokens`).
    for requests in [
        vec![raw_request("the cat sat on", usize::MAX)],
        vec![
            raw_request("the cat sat on", usize::MAX),
            raw_request("xy", 3),
        ],
    ] {
        let got = engine.generate(&requests, &mut |_, _| {}).unwrap();
        assert_eq!(got[0].finish_reason, FinishReason::Length);
        assert_eq!(got[0].prompt_tokens + got[0].token_ids.len(), CONTEXT);
        if let Some(short) = got.get(1) {
            assert_eq!(short.token_ids.len(), 3);
        }
    }
}
