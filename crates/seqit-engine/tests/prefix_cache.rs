//! Automatic prefix caching: requests that start with cached tokens reuse their keys and
//! values and must generate exactly what they generate without the cache (the packed
//! decoder computes each row independently of its batch and of its padding).

use std::path::Path;

use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_engine::{Engine, EngineOptions, GenerationRequest, PrefixCacheStats};
use seqit_model::{KvCache, WeightStorage};
use seqit_testkit::{raw_request, tiny_q8_gguf, TinyModel, TinyModelSpec};

fn engine(path: &Path, prefix_cache_mib: usize, max_batch: usize) -> Engine {
    let engine = Engine::load(
        path,
        EngineOptions {
            max_batch,
            prefix_cache_mib,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    assert!(engine.packed_decoder().is_some(), "the packed path runs");
    engine
}

fn tokens(engine: &Engine, requests: &[GenerationRequest]) -> Vec<Vec<u32>> {
    engine
        .generate(requests, &mut |_, _| {})
        .unwrap()
        .into_iter()
        .map(|c| c.token_ids)
        .collect()
}

/// A long shared prefix (about 500 byte-level tokens) as a classification prompt has.
fn shared_prefix() -> String {
    let mut text = String::from("You classify instructions. Examples follow.\n");
    for i in 0..12 {
        text.push_str(&format!(
            "#Instruction#: task number {i} asks for a list, then a summary.\nOption: {}\n",
            ["A", "B", "C", "D"][i % 4]
        ));
    }
    text
}

#[test]
fn the_same_prompt_twice_hits_the_cache_and_generates_the_same_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_q8_gguf(&dir.path().join("tiny-q8.gguf"), 2048);
    let cached = engine(&path, 16, 8);
    let request = [raw_request(
        &format!("{}Now: sort the words.", shared_prefix()),
        24,
    )];
    let first = tokens(&cached, &request);
    let after_first = cached.prefix_cache_stats();
    assert_eq!(after_first.hit_tokens, 0);
    assert!(after_first.blocks > 0 && after_first.bytes > 0);
    let second = tokens(&cached, &request);
    assert_eq!(first, second);
    let stats = cached.prefix_cache_stats();
    let prompt_len = cached.prompt_ids(&request[0].prompt).unwrap().len() as u64;
    assert_eq!(stats.lookups, 2);
    assert_eq!(stats.prompt_tokens, 2 * prompt_len);
    // Every whole block but the one holding the last prompt token.
    assert_eq!(stats.hit_tokens, (prompt_len - 1) / 16 * 16);
    let uncached = engine(&path, 0, 8);
    assert_eq!(tokens(&uncached, &request), first);
    assert_eq!(uncached.prefix_cache_stats(), PrefixCacheStats::default());
}

#[test]
fn prompts_sharing_a_prefix_generate_what_they_generate_without_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_q8_gguf(&dir.path().join("tiny-q8.gguf"), 2048);
    let prefix = shared_prefix();
    // Suffixes of many lengths put the shared prefix at every padding offset; a batch
    // of 3 makes later batches find what earlier ones cached.
    let suffixes = [
        "a",
        "sort these words by length",
        "x y",
        "translate the sentence into French, then count its words",
        "",
        "why?",
        "classify: write a poem about rain and explain it",
    ];
    let requests: Vec<GenerationRequest> = suffixes
        .iter()
        .enumerate()
        .map(|(i, s)| raw_request(&format!("{prefix}{s}"), 6 + 3 * i))
        .collect();
    let want = tokens(&engine(&path, 0, 3), &requests);
    for max_batch in [1, 3, 16] {
        let cached = engine(&path, 64, max_batch);
        assert_eq!(tokens(&cached, &requests), want, "batch {max_batch}");
        // Once more, now with everything cached.
        assert_eq!(tokens(&cached, &requests), want, "batch {max_batch}, again");
        let stats = cached.prefix_cache_stats();
        assert!(
            stats.hit_rate() > 0.5,
            "batch {max_batch}: hit rate {}",
            stats.hit_rate()
        );
        if max_batch == 16 {
            // One batch: the shared prefix was computed once, ahead of it.
            assert!(stats.shared_prefill_tokens > 0);
        }
    }
}

#[test]
fn nested_shared_prefixes_in_one_batch_are_computed_once_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_q8_gguf(&dir.path().join("tiny-q8.gguf"), 2048);
    let p = shared_prefix();
    let q = "Second part: the examples below are about cooking and recipes, read them.\n";
    let r = "Second part: the examples below are about travel and trains, read them too.\n";
    let texts = [
        format!("{p}{q}first question here"),
        format!("{p}{q}second question, longer than the first one"),
        format!("{p}{r}third"),
        format!("{p}{r}fourth question"),
        format!("{p}only the common part"),
        "an unrelated prompt with nothing in common".to_string(),
    ];
    let requests: Vec<GenerationRequest> = texts.iter().map(|t| raw_request(t, 10)).collect();
    let want = tokens(&engine(&path, 0, 16), &requests);
    let cached = engine(&path, 64, 16);
    assert_eq!(tokens(&cached, &requests), want);
    let stats = cached.prefix_cache_stats();
    let common = cached.prompt_ids(&Prompt::Text(p.clone())).unwrap().len() as u64;
    // Computed ahead: the common prefix once, then each second part once.
    assert!(stats.shared_prefill_tokens >= common / 16 * 16);
    assert!(
        stats.shared_prefill_tokens < 2 * common,
        "the common prefix was computed more than once: {stats:?}"
    );
    assert!(stats.hit_tokens >= 5 * (common / 16 * 16), "{stats:?}");
}

#[test]
fn a_small_budget_evicts_and_still_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_q8_gguf(&dir.path().join("tiny-q8.gguf"), 2048);
    // 1 MiB holds 4096 tokens of this model (256 bytes each); these prompts need more.
    let requests: Vec<GenerationRequest> = (0..12)
        .map(|i| {
            let words: String = (0..120)
                .map(|w| format!("w{} ", (w * 7 + i) % 97))
                .collect();
            raw_request(&format!("prompt {i}: {words}"), 4)
        })
        .collect();
    let want = tokens(&engine(&path, 0, 4), &requests);
    let cached = engine(&path, 1, 4);
    assert_eq!(tokens(&cached, &requests), want);
    assert_eq!(tokens(&cached, &requests), want);
    let stats = cached.prefix_cache_stats();
    assert!(stats.evictions > 0, "{stats:?}");
    assert!(stats.bytes <= stats.capacity_bytes);
    assert_eq!(stats.capacity_bytes, 1 << 20);
}

#[test]
fn cached_keys_and_values_give_bit_identical_logits_at_any_padding() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_q8_gguf(&dir.path().join("tiny-q8.gguf"), 2048);
    let engine = engine(&path, 0, 1);
    let model = engine.model().unwrap();
    let layers = model.config.num_hidden_layers;
    let (kv_heads, head_dim) = (model.config.num_key_value_heads, model.config.head_dim);
    let prompt: Vec<u32> = (0..45).map(|i| (i * 37 % 250) as u32 + 3).collect();
    let other: Vec<u32> = (0..38).map(|i| (i * 11 % 200) as u32 + 5).collect();

    // The prompt alone.
    let mut alone = KvCache::new(layers);
    let want = model
        .packed_decoder()
        .unwrap()
        .forward(&prompt, 1, &[0], &mut alone)
        .unwrap();

    // The prompt as row 1 of a batch, 7 positions into its row.
    let mut batch = KvCache::new(layers);
    let width = prompt.len() + 7;
    let mut input = vec![0u32; width - other.len()];
    input.extend(&other);
    input.extend(std::iter::repeat_n(0, 7));
    input.extend(&prompt);
    let pads = [width - other.len(), 7];
    model
        .packed_decoder()
        .unwrap()
        .forward(&input, 2, &pads, &mut batch)
        .unwrap();
    let block = batch.read_packed(1, 7, 7 + 32).unwrap();
    assert_eq!(
        block,
        alone.read_packed(0, 0, 32).unwrap(),
        "a prefix's keys and values do not depend on its place"
    );

    // The cached 32 positions written 3 positions into a fresh row, the rest computed.
    for pad in [0, 3, 16] {
        let mut reused = KvCache::with_capacity(layers, pad + prompt.len() + 4);
        reused
            .reserve_packed(1, kv_heads, head_dim, pad + prompt.len())
            .unwrap();
        reused.write_packed(0, pad, &block).unwrap();
        let mut input = vec![0u32; pad];
        input.extend(&prompt);
        let got = model
            .packed_decoder()
            .expect("packed decoder")
            .forward_from(&input, 1, &[pad], &[pad + 32], &mut reused)
            .unwrap();
        let same = got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "pad {pad}: logits differ from the uncached prefill");
    }
}

#[test]
fn the_candle_path_does_not_cache() {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(dir.path())
        .unwrap();
    // Dense weights as stored run on candle's kernels (`Fast` would quantize them).
    let options = EngineOptions {
        weights: WeightStorage::AsStored,
        ..EngineOptions::default()
    };
    let engine = Engine::load(&hf, options).unwrap();
    assert!(engine.packed_decoder().is_none());
    let request = [raw_request("the same prompt twice", 4)];
    assert_eq!(tokens(&engine, &request), tokens(&engine, &request));
    assert_eq!(engine.prefix_cache_stats().lookups, 0);
}

/// The Seq-Instruct classification examples: a long prefix shared by every item.
const CLASSIFY_EXAMPLES: &str =
    include_str!("../../../prompts/seq-instruct/v2/classify_examples.toml");

fn classify(instruction: &str, max_tokens: usize) -> GenerationRequest {
    let system = "You are an assistant that classifies instructions. You read an instruction \
                  (and its input, if any) and decide which single edit would turn it into a \
                  good sequential instruction. Think step by step, then finish with one line \
                  of the form \"Option: X\". Follow the format of the examples exactly.";
    let user = format!(
        "Decide which edit fits the instruction below best.\n\n\
         Option A: decompose. The instruction already hides two or more steps; rewrite it \
         as two explicit tasks to be done in order.\n\
         Option B: add a prefix task. Add a useful task to be done first whose result helps \
         with the original task.\n\
         Option C: add a suffix task. Add a useful task to be done after the original one.\n\
         Option D: keep it. The instruction is already sufficient as it is.\n\n\
         Reason step by step and end with \"Option: \" followed by one letter, as in these \
         examples.\n\n{CLASSIFY_EXAMPLES}\n\n\
         Now the instruction to classify.\n\n#Instruction#: {instruction}\n#Reasoning#:"
    );
    GenerationRequest {
        prompt: Prompt::Chat(vec![ChatMessage::system(system), ChatMessage::user(user)]),
        params: SamplingParams::greedy(max_tokens),
    }
}

#[test]
fn the_default_model_reuses_a_long_classification_prefix_exactly() {
    let Some(path) = seqit_testkit::require_model() else {
        return;
    };
    let load = |mib| {
        Engine::load(
            &path,
            EngineOptions {
                prefix_cache_mib: mib,
                ..EngineOptions::default()
            },
        )
        .unwrap()
    };
    let (cached, uncached) = (load(64), load(0));
    assert!(cached.packed_decoder().is_some());
    let first = classify("Write a haiku about the sea, then explain its imagery.", 12);
    let second = classify("List three prime numbers.", 12);
    let prefix_len = cached.prompt_ids(&first.prompt).unwrap().len();
    assert!(prefix_len > 700, "the prompt has {prefix_len} tokens");

    let once = tokens(&cached, std::slice::from_ref(&first));
    let twice = tokens(&cached, std::slice::from_ref(&first));
    assert_eq!(once, twice);
    let stats = cached.prefix_cache_stats();
    assert!(stats.hit_tokens > 600, "{stats:?}");

    let both = [first.clone(), second.clone()];
    assert_eq!(tokens(&cached, &both), tokens(&uncached, &both));
    assert_eq!(once, tokens(&uncached, &[first]));
}
