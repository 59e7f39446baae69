//! The local inference engine: a model, its tokenizer and chat template, and batched
//! generation with a KV cache.
//!
//! Requests are sorted by prompt length and run in batches of up to `max_batch`
//! sequences: prompts are left-padded and prefilled together, then decoded one token per
//! step for all rows at once. Finished rows are dropped from the batch (and its cache) so
//! that long generations do not pay for short ones.
//!
//! On the packed path, prompt prefixes are cached ([`PrefixCache`]): a row starts from
//! the keys and values of its longest cached prefix and computes only the rest, and a
//! prefix that several rows of a batch share is computed once before the batch.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use seqit_core::{
    Completion, Constraint, FinishReason, Prompt, SamplingParams, TokenLogprob, TopLogprob,
};
use seqit_model::gguf::GgufFile;
use seqit_model::{
    load_gguf, load_model, load_packed_gguf, KvBlock, KvCache, Llama, LoadOptions, ModelConfig,
    PackedDecoder, WeightStorage,
};

use crate::chat_template::{ChatTemplate, TemplateVariables};
use crate::constraint::{ConstraintCompiler, MatchStep, TokenMatcher};
use crate::prefix_cache::{PrefixCache, PrefixCacheStats, PREFIX_BLOCK_TOKENS};
use crate::sampler::Sampler;
use crate::tokenizer::{TextStream, Tokenizer};

/// Tokens that end a turn in common chat formats; those present in a vocabulary stop
/// generation in addition to the model's declared EOS ids.
const END_OF_TURN_TOKENS: [&str; 7] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "</s>",
    "<|end|>",
    "<end_of_turn>",
];

/// How [`Engine::load`] holds and runs a model; the [`Default`] suits the CPU.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How GGUF matrices are held in memory.
    pub weights: WeightStorage,
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Memory for the keys and values of cached prompt prefixes, in MiB (0 disables
    /// prefix caching). Used on the packed decoder path only.
    pub prefix_cache_mib: usize,
    /// Where the model runs. On a GPU the packed CPU decoder is not used, and
    /// [`WeightStorage::Fast`] means dense weights in `dtype` (cuBLAS matmuls suit batched
    /// decoding); [`WeightStorage::AsStored`] keeps GGUF blocks for candle's quantized
    /// matmul.
    pub device: Device,
    /// Dtype of dense weights and activations: f32 on the CPU (where bf16/f16 are
    /// computed through f32), bf16 on GPUs.
    pub dtype: DType,
    /// Extra variables for the model's chat template (`enable_thinking = false` for
    /// Qwen3); a model without a template refuses them.
    pub chat_template_variables: TemplateVariables,
}

/// Default prefix-cache budget in MiB (about 11,000 tokens of SmolLM2-135M).
pub const DEFAULT_PREFIX_CACHE_MIB: usize = 256;

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            weights: WeightStorage::Fast,
            max_batch: 16,
            prefix_cache_mib: DEFAULT_PREFIX_CACHE_MIB,
            device: Device::Cpu,
            dtype: DType::F32,
            chat_template_variables: TemplateVariables::new(),
        }
    }
}

/// One prompt and how to continue it.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// The conversation or text to continue.
    pub prompt: Prompt,
    /// How to decode the continuation.
    pub params: SamplingParams,
}

/// The weights an engine computes with.
enum Weights {
    /// The whole model: candle's kernels, and the packed decoder when it runs.
    Model(Box<Llama>),
    /// The packed decoder alone (see [`Engine::keep_packed_weights_only`]).
    Packed(Arc<PackedDecoder>),
}

/// Positions of KV cache reserved per row for generated tokens before the first
/// doubling: a request's `max_tokens` is a bound, not a forecast.
const KV_RESERVE_NEW_TOKENS: usize = 256;

/// A loaded model with its tokenizer, chat template and stop tokens, generating batches of
/// [`GenerationRequest`]s.
pub struct Engine {
    weights: Weights,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    stop_ids: HashSet<u32>,
    model_path: PathBuf,
    options: EngineOptions,
    prefix_cache: Option<PrefixCache>,
    /// Built on the first constrained request (see [`ConstraintCompiler`]).
    constraints: OnceLock<ConstraintCompiler>,
    /// Each token's bytes, built on the first request for log-probabilities.
    token_bytes: OnceLock<Vec<Vec<u8>>>,
}

impl Engine {
    /// Loads a `.gguf` file or Hugging Face directory with its tokenizer and template.
    pub fn load(path: &Path, options: EngineOptions) -> Result<Self> {
        Self::open(path, options, false)
    }

    /// [`Self::load`] for inference only: the engine keeps the packed decoder alone when
    /// it runs the model ([`Self::keep_packed_weights_only`]), and a GGUF file is read
    /// straight into it, so peak memory stays near the packed weights' size. Adapters
    /// cannot be applied afterwards.
    pub fn load_for_inference(path: &Path, options: EngineOptions) -> Result<Self> {
        Ok(Self::open(path, options, true)?.keep_packed_weights_only())
    }

    fn open(path: &Path, options: EngineOptions, packed_only: bool) -> Result<Self> {
        let on_cpu = options.device.is_cpu();
        let load_options = LoadOptions {
            weights: match options.weights {
                WeightStorage::Fast if !on_cpu => WeightStorage::Dequantized,
                other => other,
            },
            dtype: options.dtype,
        };
        let cannot = || format!("cannot load model `{}`", path.display());
        let (weights, gguf) = if packed_only
            && on_cpu
            && path.is_file()
            && options.weights != WeightStorage::AsStored
        {
            let mut file = GgufFile::open(path).with_context(cannot)?;
            let weights = match load_packed_gguf(&mut file).with_context(cannot)? {
                Some(decoder) => Weights::Packed(Arc::new(decoder)),
                None => Weights::Model(Box::new(
                    load_gguf(&mut file, &Device::Cpu, load_options).with_context(cannot)?,
                )),
            };
            (weights, Some(file))
        } else {
            let loaded = load_model(path, &options.device, load_options).with_context(cannot)?;
            (Weights::Model(Box::new(loaded.llama)), loaded.gguf)
        };
        let (tokenizer, template_source) = match &gguf {
            Some(file) => (
                Tokenizer::from_gguf(file)?,
                file.string("tokenizer.chat_template").map(String::from),
            ),
            None => (
                Tokenizer::from_hf_dir(path)?,
                ChatTemplate::from_hf_dir(path)?,
            ),
        };
        let mut extra_eos = Vec::new();
        if gguf.is_none() {
            extra_eos = generation_config_eos(path)?;
        }
        drop(gguf);
        let variables = options.chat_template_variables.clone();
        if template_source.is_none() && !variables.is_empty() {
            bail!(
                "`{}` has no chat template to set variables of ({})",
                path.display(),
                variables.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let template = template_source
            .map(|src| {
                ChatTemplate::new(
                    &src,
                    tokenizer.bos_token.as_deref(),
                    tokenizer.eos_token.as_deref(),
                )?
                .with_variables(variables)
            })
            .transpose()
            .with_context(|| format!("the chat template of `{}`", path.display()))?;
        let mut engine = Self::assemble(weights, tokenizer, template)?;
        engine.stop_ids.extend(extra_eos);
        engine.model_path = path.to_path_buf();
        engine.options = options;
        engine.prefix_cache = prefix_cache_for(&engine.options);
        Ok(engine)
    }

    /// Assembles an engine from loaded parts (used by training to generate with the
    /// weights it is updating).
    pub fn from_parts(
        model: Llama,
        tokenizer: Tokenizer,
        template: Option<ChatTemplate>,
    ) -> Result<Self> {
        Self::assemble(Weights::Model(Box::new(model)), tokenizer, template)
    }

    fn assemble(
        weights: Weights,
        tokenizer: Tokenizer,
        template: Option<ChatTemplate>,
    ) -> Result<Self> {
        let config = match &weights {
            Weights::Model(model) => &model.config,
            Weights::Packed(decoder) => decoder.config(),
        };
        if tokenizer.vocab_size() > config.vocab_size {
            bail!(
                "the tokenizer has {} tokens but the model's embedding has only {} rows",
                tokenizer.vocab_size(),
                config.vocab_size
            );
        }
        let mut stop_ids: HashSet<u32> = config.eos_token_ids.iter().copied().collect();
        if let Some(eos) = tokenizer
            .eos_token
            .as_deref()
            .and_then(|t| tokenizer.token_to_id(t))
        {
            stop_ids.insert(eos);
        }
        for token in END_OF_TURN_TOKENS {
            if let Some(id) = tokenizer.token_to_id(token) {
                stop_ids.insert(id);
            }
        }
        Ok(Self {
            weights,
            tokenizer,
            template,
            stop_ids,
            model_path: PathBuf::new(),
            options: EngineOptions::default(),
            prefix_cache: prefix_cache_for(&EngineOptions::default()),
            constraints: OnceLock::new(),
            token_bytes: OnceLock::new(),
        })
    }

    /// Applies a LoRA adapter in PEFT's layout: merged into dense weights, kept beside
    /// quantized ones. Returns the number of adapted projections.
    pub fn apply_adapter(&mut self, dir: &Path) -> Result<usize> {
        // Cached keys and values belong to the old weights.
        if let Some(cache) = &self.prefix_cache {
            cache.clear();
        }
        let Weights::Model(model) = &mut self.weights else {
            bail!("this engine keeps only its packed weights: apply adapters before `keep_packed_weights_only`");
        };
        seqit_model::apply_peft_adapter(model, dir)
            .with_context(|| format!("cannot apply the adapter `{}`", dir.display()))
    }

    /// Frees candle's copies of the weights when the packed decoder serves every request
    /// (quantized weights, no adapter, not `WeightStorage::AsStored`): about half the
    /// memory of the default model. Afterwards [`Self::model`] is `None` and adapters
    /// cannot be applied; otherwise the engine is unchanged.
    pub fn keep_packed_weights_only(mut self) -> Self {
        let as_stored = self.options.weights == WeightStorage::AsStored;
        self.weights = match self.weights {
            Weights::Model(model) if !as_stored => match (*model).into_packed_decoder() {
                Ok(decoder) => Weights::Packed(decoder),
                Err(model) => Weights::Model(model),
            },
            other => other,
        };
        self
    }

    /// Counters of the prompt-prefix cache (all zero when it is disabled).
    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        self.prefix_cache
            .as_ref()
            .map(PrefixCache::stats)
            .unwrap_or_default()
    }

    /// Where the model runs (the packed decoder always runs on the CPU).
    pub fn device(&self) -> &Device {
        match &self.weights {
            Weights::Model(model) => model.device(),
            Weights::Packed(_) => &Device::Cpu,
        }
    }

    /// The model, unless the engine keeps only its packed weights.
    pub fn model(&self) -> Option<&Llama> {
        match &self.weights {
            Weights::Model(model) => Some(model),
            Weights::Packed(_) => None,
        }
    }

    /// The model's architecture and special token ids.
    pub fn config(&self) -> &ModelConfig {
        match &self.weights {
            Weights::Model(model) => &model.config,
            Weights::Packed(decoder) => decoder.config(),
        }
    }

    /// The packed decoder, when generation runs on it (the packed kernels, and the
    /// weights not held as stored for candle's reference kernels).
    pub fn packed_decoder(&self) -> Option<&PackedDecoder> {
        match &self.weights {
            Weights::Packed(decoder) => Some(decoder),
            Weights::Model(_) if self.options.weights == WeightStorage::AsStored => None,
            Weights::Model(model) => model.packed_decoder(),
        }
    }

    /// The tokenizer prompts are encoded and completions decoded with.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template, if the model has one (without it, only text prompts work).
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// The `.gguf` file or Hugging Face directory the engine was loaded from (empty for
    /// [`Engine::from_parts`]).
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Token ids that end a sequence: the model's EOS ids, the tokenizer's EOS token, and
    /// the common end-of-turn tokens its vocabulary has.
    pub fn stop_ids(&self) -> &HashSet<u32> {
        &self.stop_ids
    }

    /// Most sequences decoded together ([`EngineOptions::max_batch`]).
    pub fn max_batch(&self) -> usize {
        self.options.max_batch
    }

    /// Compiles `constraint` for this model's tokenizer, to check it before accepting a
    /// request. The error says what is wrong with it.
    pub fn check_constraint(&self, constraint: &Constraint) -> Result<()> {
        self.constraint_matcher(constraint).map(drop)
    }

    fn constraint_matcher(&self, constraint: &Constraint) -> Result<TokenMatcher> {
        let compiler = match self.constraints.get() {
            Some(compiler) => compiler,
            None => {
                let compiler = ConstraintCompiler::new(&self.tokenizer, &self.stop_ids)?;
                self.constraints.get_or_init(|| compiler)
            }
        };
        compiler.compile(constraint)
    }

    fn token_bytes(&self) -> Result<&[Vec<u8>]> {
        if let Some(bytes) = self.token_bytes.get() {
            return Ok(bytes);
        }
        let bytes = llguidance::token_bytes_from_tokenizer_json(self.tokenizer.to_json())
            .map_err(|e| anyhow::anyhow!("cannot read the tokens' bytes: {e}"))?;
        Ok(self.token_bytes.get_or_init(|| bytes))
    }

    /// The text a prompt is turned into before tokenization.
    pub fn render(&self, prompt: &Prompt) -> Result<String> {
        match prompt {
            Prompt::Text(text) => Ok(text.clone()),
            Prompt::Chat(messages) => {
                let template = self.template.as_ref().with_context(|| {
                    format!(
                        "model `{}` has no chat template; send a plain text prompt instead",
                        self.model_path.display()
                    )
                })?;
                template.render(messages, true)
            }
        }
    }

    /// The token ids of a prompt after its chat template, BOS included where the model
    /// expects one. Fails on an empty prompt.
    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let ids = self.tokenizer.encode_prompt(&self.render(prompt)?)?;
        if ids.is_empty() {
            bail!("the prompt is empty");
        }
        Ok(ids)
    }

    /// Generates one completion per request, in request order. `on_text(i, delta)` is
    /// called as text of request `i` becomes final (never text that a stop string
    /// later removes).
    pub fn generate(
        &self,
        requests: &[GenerationRequest],
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<Completion>> {
        self.generate_cancellable(requests, on_text, &mut |_| false)
    }

    /// [`Engine::generate`], with a way to stop requests early: `cancelled(i)` is asked
    /// before the prefill and before every decode step for each request `i` still
    /// running. Once it answers `true`, request `i` ends at once with
    /// [`FinishReason::Cancelled`] and the text generated so far, and its row leaves
    /// the batch (the other rows go on unchanged).
    pub fn generate_cancellable(
        &self,
        requests: &[GenerationRequest],
        on_text: &mut dyn FnMut(usize, &str),
        cancelled: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Vec<Completion>> {
        let mut prompts = Vec::with_capacity(requests.len());
        let mut matchers: Vec<Option<TokenMatcher>> = Vec::with_capacity(requests.len());
        // Requests of a batch often share one constraint: compile it once, copy the rest.
        let mut compiled: HashMap<String, TokenMatcher> = HashMap::new();
        for (i, request) in requests.iter().enumerate() {
            request
                .params
                .validate()
                .map_err(|e| anyhow::anyhow!("request {i}: {e}"))?;
            let ids = self
                .prompt_ids(&request.prompt)
                .with_context(|| format!("request {i}"))?;
            let context = self.config().max_position_embeddings;
            if ids.len() >= context {
                bail!(
                    "request {i}: the prompt has {} tokens, the model's context window is {context}",
                    ids.len()
                );
            }
            prompts.push(ids);
            let matcher = match &request.params.constraint {
                None => None,
                Some(constraint) => {
                    let key = serde_json::to_string(constraint)?;
                    if !compiled.contains_key(&key) {
                        let fresh = self
                            .constraint_matcher(constraint)
                            .with_context(|| format!("request {i}"))?;
                        compiled.insert(key.clone(), fresh);
                    }
                    Some(compiled[&key].fork())
                }
            };
            matchers.push(matcher);
        }
        let token_bytes = if requests.iter().any(|r| r.params.logprobs.is_some()) {
            Some(self.token_bytes()?)
        } else {
            None
        };
        // Similar lengths together waste less compute on padding.
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| prompts[i].len());
        let mut results: Vec<Option<Completion>> = vec![None; requests.len()];
        for chunk in order.chunks(self.options.max_batch.max(1)) {
            let mut batch = Vec::with_capacity(chunk.len());
            for &i in chunk {
                if cancelled(i) {
                    // Never started: no prefill, no tokens.
                    results[i] = Some(Completion {
                        text: String::new(),
                        token_ids: Vec::new(),
                        prompt_tokens: prompts[i].len(),
                        finish_reason: FinishReason::Cancelled,
                        logprobs: requests[i].params.logprobs.map(|_| Vec::new()),
                        constraint_met: matchers[i].as_ref().map(|_| false),
                    });
                } else {
                    batch.push(Sequence::new(
                        i,
                        prompts[i].as_slice(),
                        &requests[i].params,
                        matchers[i].take(),
                        &self.tokenizer,
                        token_bytes,
                    ));
                }
            }
            if batch.is_empty() {
                continue;
            }
            for (i, completion) in self.generate_batch(batch, on_text, cancelled)? {
                results[i] = Some(completion);
            }
        }
        Ok(results
            .into_iter()
            .map(|c| c.expect("every request is generated"))
            .collect())
    }

    fn generate_batch(
        &self,
        mut rows: Vec<Sequence<'_>>,
        on_text: &mut dyn FnMut(usize, &str),
        cancelled: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Vec<(usize, Completion)>> {
        let context = self.config().max_position_embeddings;
        let vocab = self.config().vocab_size;
        let longest = rows.iter().map(|s| s.prompt.len()).max().unwrap_or(0);
        let most_new = rows.iter().map(|s| s.params.max_tokens).max().unwrap_or(0);
        let mut pads: Vec<usize> = rows.iter().map(|s| longest - s.prompt.len()).collect();
        let mut input = Vec::with_capacity(rows.len() * longest);
        for (seq, pad) in rows.iter().zip(&pads) {
            input.extend(std::iter::repeat_n(0u32, *pad).chain(seq.prompt.iter().copied()));
        }
        let decoder = self.packed_decoder();
        let forward = |tokens: &[u32], pads: &[usize], cache: &mut KvCache| -> Result<Vec<f32>> {
            match (decoder, self.model()) {
                (Some(decoder), _) => decoder.forward(tokens, pads.len(), pads, cache),
                (None, Some(model)) => model.forward_padded(tokens, pads.len(), pads, cache),
                (None, None) => unreachable!("an engine without its model keeps the decoder"),
            }
        };
        // `max_tokens` comes from clients (up to `usize::MAX`): the cache grows by
        // doubling past a first reserve.
        let capacity = longest
            .saturating_add(most_new.min(KV_RESERVE_NEW_TOKENS))
            .min(context);
        let mut cache = KvCache::with_capacity(self.config().num_hidden_layers, capacity);
        let mut logits = match self.prefix_cache.as_ref().filter(|_| decoder.is_some()) {
            Some(prefixes) => {
                let prompts: Vec<&[u32]> = rows.iter().map(|s| s.prompt).collect();
                self.prefill_with_prefixes(prefixes, &prompts, &input, &pads, &mut cache)?
            }
            None => forward(&input, &pads, &mut cache)?,
        };

        // `active[r]` is the index into `rows` of cache row `r`.
        let mut active: Vec<usize> = (0..rows.len()).collect();
        loop {
            let mut next = Vec::with_capacity(active.len());
            let mut cancelled_now = false;
            for (r, &row) in active.iter().enumerate() {
                let seq = &mut rows[row];
                if seq.finish.is_none() && cancelled(seq.index) {
                    seq.finish = Some(FinishReason::Cancelled);
                    cancelled_now = true;
                }
                let token = seq.choose(&logits[r * vocab..(r + 1) * vocab]);
                seq.push(token, &self.stop_ids, context, on_text)?;
                next.push(token);
            }
            let finished = active
                .iter()
                .filter(|&&row| rows[row].finish.is_some())
                .count();
            if finished == active.len() {
                break;
            }
            // Dropping rows copies the cache, so wait until it pays off; a cancelled row
            // (which may have had thousands of tokens to go) leaves at once.
            if finished > 0 && (cancelled_now || finished * 4 >= active.len()) {
                let keep: Vec<u32> = (0..active.len() as u32)
                    .filter(|&r| rows[active[r as usize]].finish.is_none())
                    .collect();
                cache.select_rows(&Tensor::new(keep.as_slice(), self.device())?)?;
                next = keep.iter().map(|&r| next[r as usize]).collect();
                pads = keep.iter().map(|&r| pads[r as usize]).collect();
                active = keep.iter().map(|&r| active[r as usize]).collect();
            }
            logits = forward(&next, &pads, &mut cache)?;
        }
        Ok(rows
            .into_iter()
            .map(|seq| seq.into_completion(on_text))
            .collect())
    }
}

impl Engine {
    /// The packed decoder, for the prefix cache (which only runs with it).
    fn decoder(&self) -> Result<&PackedDecoder> {
        self.packed_decoder()
            .context("prefix caching runs on the packed decoder")
    }

    /// The packed prefill of a left-padded batch (`input`, `pads`) whose rows start from
    /// their longest cached prefix; afterwards the prompts' full blocks are cached.
    fn prefill_with_prefixes(
        &self,
        prefixes: &PrefixCache,
        prompts: &[&[u32]],
        input: &[u32],
        pads: &[usize],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let block = prefixes.block_tokens();
        // Prefixes that rows of this batch share are computed once, first.
        let shared: Vec<&[u32]> =
            shared_prefixes(prefixes, prompts, |p| prefixes.usable_blocks(p.len()))
                .into_iter()
                .map(|(row, blocks)| &prompts[row][..blocks * block])
                .collect();
        self.ensure_cached(prefixes, shared)?;

        let hits: Vec<_> = prompts.iter().map(|p| prefixes.lookup(p)).collect();
        let starts = self.write_prefixes(cache, pads, &hits, input.len() / prompts.len())?;
        let logits = self
            .decoder()?
            .forward_from(input, prompts.len(), pads, &starts, cache)?;
        self.insert_prompts(prefixes, cache, prompts, pads)?;
        Ok(logits)
    }

    /// Writes each row's cached prefix blocks (`hits[b]`) into a fresh `cache` after its
    /// padding, with room for the `positions` of the prefill (the buffers must not grow
    /// before it: growing keeps only computed positions); returns the position each row
    /// is computed from.
    fn write_prefixes(
        &self,
        cache: &mut KvCache,
        pads: &[usize],
        hits: &[Vec<Arc<KvBlock>>],
        positions: usize,
    ) -> Result<Vec<usize>> {
        let mut starts = pads.to_vec();
        if hits.iter().all(Vec::is_empty) {
            return Ok(starts);
        }
        let cfg = self.config();
        cache.reserve_packed(pads.len(), cfg.num_key_value_heads, cfg.head_dim, positions)?;
        for (b, blocks) in hits.iter().enumerate() {
            for kv in blocks {
                cache.write_packed(b, starts[b], kv)?;
                starts[b] += kv.positions;
            }
        }
        Ok(starts)
    }

    /// Caches the full blocks of each prompt that are not cached yet, read from rows of
    /// `cache` after a prefill.
    fn insert_prompts(
        &self,
        prefixes: &PrefixCache,
        cache: &KvCache,
        prompts: &[&[u32]],
        pads: &[usize],
    ) -> Result<()> {
        let block = prefixes.block_tokens();
        for (b, prompt) in prompts.iter().enumerate() {
            let full = prompt.len() / block;
            let first = prefixes.cached_blocks(&prompt[..full * block]);
            if first == full {
                continue;
            }
            let blocks = (first..full)
                .map(|i| {
                    let from = pads[b] + i * block;
                    Ok(cache.read_packed(b, from, from + block)?)
                })
                .collect::<Result<Vec<_>>>()?;
            prefixes.insert(prompt, first, blocks);
        }
        Ok(())
    }

    /// Makes sure every target (a block-aligned token prefix) is cached, computing the
    /// missing ones in one packed pass, after the parts that several of them share.
    fn ensure_cached(&self, prefixes: &PrefixCache, targets: Vec<&[u32]>) -> Result<()> {
        let block = prefixes.block_tokens();
        // Distinct targets, longest first, not cached yet, and not a prefix of another.
        let mut targets = targets;
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        targets.dedup();
        let mut covered: HashSet<u64> = HashSet::new();
        let mut todo: Vec<&[u32]> = Vec::new();
        for target in targets {
            let keys = prefixes.block_keys(target);
            let Some(last) = keys.last() else { continue };
            if covered.contains(last) || prefixes.cached_blocks(target) == keys.len() {
                continue;
            }
            covered.extend(keys);
            todo.push(target);
        }
        if todo.is_empty() {
            return Ok(());
        }
        // What several targets share is computed first, once.
        let shared: Vec<&[u32]> = shared_prefixes(prefixes, &todo, |t| t.len() / block)
            .into_iter()
            .map(|(row, blocks)| &todo[row][..blocks * block])
            .collect();
        self.ensure_cached(prefixes, shared)?;

        let longest = todo.iter().map(|t| t.len()).max().unwrap_or(0);
        let pads: Vec<usize> = todo.iter().map(|t| longest - t.len()).collect();
        let mut input = Vec::with_capacity(todo.len() * longest);
        for (target, pad) in todo.iter().zip(&pads) {
            input.extend(std::iter::repeat_n(0u32, *pad).chain(target.iter().copied()));
        }
        let hits: Vec<_> = todo
            .iter()
            .map(|t| prefixes.cached_prefix(&t[..t.len() - block]))
            .collect();
        let mut cache = KvCache::with_capacity(self.config().num_hidden_layers, longest);
        let starts = self.write_prefixes(&mut cache, &pads, &hits, longest)?;
        self.decoder()?
            .forward_from(&input, todo.len(), &pads, &starts, &mut cache)?;
        let computed: usize = starts.iter().map(|s| longest - s).sum();
        prefixes.record_shared_prefill(computed);
        self.insert_prompts(prefixes, &cache, &todo, &pads)
    }
}

/// For the sequences of `seqs` that share leading blocks with another one (counting at
/// most `limit(seq)` blocks of each): `(index, blocks)` of the longest shared prefix of
/// each, one per distinct prefix.
fn shared_prefixes(
    prefixes: &PrefixCache,
    seqs: &[&[u32]],
    limit: impl Fn(&[u32]) -> usize,
) -> Vec<(usize, usize)> {
    let block = prefixes.block_tokens();
    let keys: Vec<Vec<u64>> = seqs
        .iter()
        .map(|s| prefixes.block_keys(&s[..limit(s).min(s.len() / block) * block]))
        .collect();
    let mut count: HashMap<u64, usize> = HashMap::new();
    for key in keys.iter().flatten() {
        *count.entry(*key).or_default() += 1;
    }
    let mut seen = HashSet::new();
    keys.iter()
        .enumerate()
        .filter_map(|(i, keys)| {
            let depth = keys.iter().rposition(|k| count[k] >= 2)? + 1;
            seen.insert(keys[depth - 1]).then_some((i, depth))
        })
        .collect()
}

/// The prefix cache `options` ask for, if any.
fn prefix_cache_for(options: &EngineOptions) -> Option<PrefixCache> {
    (options.prefix_cache_mib > 0)
        .then(|| PrefixCache::new(options.prefix_cache_mib << 20, PREFIX_BLOCK_TOKENS))
}

/// Decoding state of one sequence.
struct Sequence<'t> {
    index: usize,
    prompt: &'t [u32],
    params: SamplingParams,
    sampler: Sampler,
    /// The structured-output constraint, if the request has one.
    matcher: Option<TokenMatcher>,
    /// Each token's bytes, when the request asked for log-probabilities.
    token_bytes: Option<&'t [Vec<u8>]>,
    logprobs: Vec<TokenLogprob>,
    stream: TextStream<'t>,
    ids: Vec<u32>,
    text: String,
    /// Bytes of `text` already handed to the caller.
    emitted: usize,
    finish: Option<FinishReason>,
    /// Set when the constraint could not be followed (no token allowed, or an
    /// internal error of the matcher): the sequence ends unfinished.
    constraint_failed: bool,
}

impl<'t> Sequence<'t> {
    fn new(
        index: usize,
        prompt: &'t [u32],
        params: &SamplingParams,
        matcher: Option<TokenMatcher>,
        tokenizer: &'t Tokenizer,
        token_bytes: Option<&'t [Vec<u8>]>,
    ) -> Self {
        Self {
            index,
            prompt,
            params: params.clone(),
            sampler: Sampler::new(params),
            matcher,
            token_bytes: token_bytes.filter(|_| params.logprobs.is_some()),
            logprobs: Vec::new(),
            stream: tokenizer.decode_stream(),
            ids: Vec::new(),
            text: String::new(),
            emitted: 0,
            finish: None,
            constraint_failed: false,
        }
    }

    /// The next token from this row's logits: masked by the constraint, then sampled;
    /// its log-probability is recorded when asked for.
    fn choose(&mut self, logits: &[f32]) -> u32 {
        if self.finish.is_some() {
            // The row waits to leave the batch; what it is fed does not matter.
            return 0;
        }
        let token = match self.matcher.as_mut() {
            None => self.sampler.sample(logits),
            Some(matcher) => {
                let mut masked = logits.to_vec();
                let allowed = matcher.mask(&mut masked).is_ok()
                    && masked.iter().any(|l| *l > f32::NEG_INFINITY);
                if !allowed {
                    self.constraint_failed = true;
                    self.finish = Some(FinishReason::Stop);
                    return 0;
                }
                self.sampler.sample(&masked)
            }
        };
        if let (Some(top), Some(bytes)) = (self.params.logprobs, self.token_bytes) {
            self.logprobs.push(token_logprob(logits, token, top, bytes));
        }
        token
    }

    fn push(
        &mut self,
        token: u32,
        stop_ids: &HashSet<u32>,
        context: usize,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<()> {
        if self.finish.is_some() {
            return Ok(());
        }
        self.ids.push(token);
        // Under a constraint, a stop token is only allowed where the text may end.
        if stop_ids.contains(&token) && (!self.params.ignore_eos || self.matcher.is_some()) {
            // The stop token is not part of the text; neither is its log-probability.
            if self.token_bytes.is_some() {
                self.logprobs.pop();
            }
            self.finish = Some(FinishReason::Stop);
            return Ok(());
        }
        if let Some(matcher) = self.matcher.as_mut() {
            match matcher.advance(token) {
                Ok(MatchStep::Complete) => self.finish = Some(FinishReason::Stop),
                Ok(MatchStep::Continue) => {}
                Err(_) => {
                    self.constraint_failed = true;
                    self.finish = Some(FinishReason::Stop);
                }
            }
        }
        if let Some(piece) = self.stream.step(token)? {
            self.text.push_str(&piece);
        }
        if let Some(cut) = self.find_stop() {
            self.text.truncate(cut);
            self.finish = Some(FinishReason::Stop);
        } else if self.finish.is_none()
            && (self.ids.len() >= self.params.max_tokens
                || self.prompt.len() + self.ids.len() >= context)
        {
            self.finish = Some(FinishReason::Length);
        }
        // Hold back a tail that could still become the start of a stop string.
        let hold = if self.finish.is_some() {
            0
        } else {
            self.params
                .stop
                .iter()
                .map(|s| s.len().saturating_sub(1))
                .max()
                .unwrap_or(0)
        };
        let mut end = self.text.len().saturating_sub(hold).max(self.emitted);
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        if end > self.emitted {
            on_text(self.index, &self.text[self.emitted..end]);
            self.emitted = end;
        }
        Ok(())
    }

    /// Byte offset of the earliest stop string in the text, if any.
    fn find_stop(&self) -> Option<usize> {
        // Only the recent tail can contain a new match.
        let longest = self.params.stop.iter().map(|s| s.len()).max()?;
        let mut from = self
            .emitted
            .min(self.text.len().saturating_sub(longest.saturating_add(8)));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        self.params
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|p| from + p))
            .min()
    }

    fn into_completion(mut self, on_text: &mut dyn FnMut(usize, &str)) -> (usize, Completion) {
        if self.text.len() > self.emitted {
            on_text(self.index, &self.text[self.emitted..]);
        }
        let constraint_met = match self.matcher.as_mut() {
            Some(matcher) => Some(!self.constraint_failed && matcher.is_accepting()),
            None => None,
        };
        let logprobs = self.params.logprobs.map(|_| self.logprobs);
        (
            self.index,
            Completion {
                text: self.text,
                token_ids: self.ids,
                prompt_tokens: self.prompt.len(),
                finish_reason: self.finish.unwrap_or(FinishReason::Length),
                logprobs,
                constraint_met,
            },
        )
    }
}

/// `token`'s log-probability under `logits` (a log-softmax in f64) and the `top` most
/// likely tokens, best first.
fn token_logprob(logits: &[f32], token: u32, top: usize, bytes: &[Vec<u8>]) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_total = max
        + logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    let logprob = |id: u32| (logits[id as usize] as f64 - log_total) as f32;
    let text = |id: u32| -> (String, Vec<u8>) {
        let mut raw = bytes.get(id as usize).cloned().unwrap_or_default();
        // Special tokens are stored with llguidance's 0xFF marker.
        if raw.first() == Some(&0xFF) {
            raw.remove(0);
        }
        (String::from_utf8_lossy(&raw).into_owned(), raw)
    };
    let mut best: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit_desc = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    if top > 0 && top < best.len() {
        best.select_nth_unstable_by(top - 1, by_logit_desc);
    }
    best.truncate(top);
    best.sort_unstable_by(by_logit_desc);
    let (token_text, token_bytes) = text(token);
    TokenLogprob {
        token: token_text,
        bytes: token_bytes,
        logprob: logprob(token),
        top: best
            .into_iter()
            .map(|id| {
                let (token, bytes) = text(id);
                TopLogprob {
                    token,
                    bytes,
                    logprob: logprob(id),
                }
            })
            .collect(),
    }
}

/// EOS ids declared in a Hugging Face directory's `generation_config.json`.
fn generation_config_eos(dir: &Path) -> Result<Vec<u32>> {
    let path = dir.join("generation_config.json");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path)?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not valid JSON", path.display()))?;
    Ok(match json.get("eos_token_id") {
        Some(serde_json::Value::Array(ids)) => ids
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        Some(v) => v.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        None => Vec::new(),
    })
}
