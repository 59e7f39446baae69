//! The batching scheduler: jobs queued together share one engine call, and a job that
//! makes the batch fail does not take the others down with it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use seqit_engine::scheduler::{Event, Scheduler, SubmitError};
use seqit_engine::{Engine, EngineOptions, GenerationRequest};
use seqit_testkit::{greedy_exactly, user_prompt};

fn request(text: &str) -> GenerationRequest {
    GenerationRequest {
        prompt: user_prompt(text),
        params: greedy_exactly(6),
    }
}

/// The job's last event.
fn outcome(mut events: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Event {
    loop {
        match events.blocking_recv().expect("the job ends with an event") {
            Event::Text { .. } => {}
            last => return last,
        }
    }
}

#[test]
fn a_failing_job_is_isolated_from_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = seqit_testkit::tiny_q8_gguf(&dir.path().join("tiny.gguf"), 64);
    let engine = Arc::new(Engine::load(&gguf, EngineOptions::default()).unwrap());
    let alone = engine
        .generate(&[request("count the stars")], &mut |_, _| {})
        .unwrap();

    // A one-second window: both jobs join the same batch.
    let scheduler = Scheduler::start(Arc::clone(&engine), 8, Duration::from_secs(1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let good = scheduler
        .submit(vec![request("count the stars")], false, deadline)
        .unwrap();
    let too_long = "word ".repeat(200);
    let bad = scheduler
        .submit(vec![request(&too_long)], false, deadline)
        .unwrap();

    match outcome(good) {
        Event::Finished(completions) => {
            assert_eq!(completions.len(), 1);
            assert_eq!(completions[0].token_ids, alone[0].token_ids);
        }
        other => panic!("the good job must finish, got {other:?}"),
    }
    match outcome(bad) {
        Event::Failed(message) => assert!(message.contains("context window"), "{message}"),
        other => panic!("the bad job must fail, got {other:?}"),
    }
    assert_eq!(scheduler.counters().requests.load(Ordering::Relaxed), 1);
    assert_eq!(scheduler.counters().failures.load(Ordering::Relaxed), 1);
}

#[test]
fn a_full_queue_refuses_and_frees_its_places() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = seqit_testkit::tiny_q8_gguf(&dir.path().join("tiny.gguf"), 64);
    let engine = Arc::new(Engine::load(&gguf, EngineOptions::default()).unwrap());
    let scheduler = Scheduler::start(engine, 2, Duration::ZERO).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let first = scheduler
        .submit(vec![request("a"), request("b")], false, deadline)
        .unwrap();
    let refused = scheduler
        .submit(vec![request("c")], false, deadline)
        .unwrap_err();
    assert_eq!(
        refused,
        SubmitError::Overloaded {
            queued: 2,
            limit: 2
        }
    );
    assert!(matches!(outcome(first), Event::Finished(c) if c.len() == 2));
    // The places are given back before the answer is sent.
    let again = scheduler
        .submit(vec![request("c")], false, deadline)
        .unwrap();
    assert!(matches!(outcome(again), Event::Finished(c) if c.len() == 1));
}
