use clap::Args;
use serde::{Deserialize, Serialize};

use crate::Constraint;

/// Most alternatives a request may ask for per position (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Decoding settings for one generation request.
///
/// `temperature == 0` means greedy decoding; `top_k == 0` and `top_p >= 1` disable those
/// filters. The seed makes stochastic sampling reproducible per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Most new tokens to generate (at least 1).
    pub max_tokens: usize,
    /// Softmax temperature, finite and `>= 0`; 0 means greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probabilities add up to
    /// this, in (0, 1]; 1 disables the filter.
    pub top_p: f64,
    /// Keep only the `top_k` most likely tokens; 0 disables the filter.
    pub top_k: usize,
    /// Seed of the sampler's random numbers, so that stochastic sampling is reproducible
    /// per request.
    pub seed: u64,
    /// Generation stops before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens until `max_tokens` (benchmarks use
    /// it to generate an exact number of tokens).
    pub ignore_eos: bool,
    /// The shape the text must have (structured outputs); `None` leaves it free.
    /// Left out of the serialized form when absent, so cache keys of unconstrained
    /// requests do not change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
    /// Report each generated token's log-probability and this many alternatives
    /// (0 = the chosen token only); `None` reports nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy(512)
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_tokens` new tokens, with no stop strings, constraint
    /// or log-probabilities (also the [`Default`], with 512 tokens).
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            stop: Vec::new(),
            ignore_eos: false,
            constraint: None,
            logprobs: None,
        }
    }

    /// Whether these settings always pick the most likely token (`temperature <= 0` or
    /// `top_k == 1`), so no random numbers are needed.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }

    /// Checks ranges, returning a message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!(
                "`temperature` must be a finite number >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("`top_p` must be in (0, 1], got {}", self.top_p));
        }
        if self.max_tokens == 0 {
            return Err("`max_tokens` must be at least 1".into());
        }
        if let Some(top) = self.logprobs {
            if top > MAX_TOP_LOGPROBS {
                return Err(format!(
                    "`top_logprobs` must be at most {MAX_TOP_LOGPROBS}, got {top}"
                ));
            }
        }
        if let Some(constraint) = &self.constraint {
            constraint.validate_shape()?;
        }
        Ok(())
    }
}

/// How tokens are drawn, as flags: the same group for every job whose defaults are
/// greedy decoding (`seqit generate`, `seqit eval vqa`). Each job adds its own
/// `--max-tokens`, whose default differs.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SamplingSettings {
    /// Softmax temperature; 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling: the probability mass kept; 1 disables the filter.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Keep only the k most likely tokens; 0 disables the filter.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seed of sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        crate::flags::clap_defaults()
    }
}

impl SamplingSettings {
    /// These settings for at most `max_tokens` new tokens (no stop strings, constraint
    /// or log-probabilities), checked.
    pub fn params(&self, max_tokens: usize) -> Result<SamplingParams, String> {
        let params = SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            ..SamplingParams::greedy(max_tokens)
        };
        params.validate()?;
        Ok(params)
    }
}
