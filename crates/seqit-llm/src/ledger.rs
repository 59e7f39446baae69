//! The token and cost ledger: what each model was asked, answered and billed, what the
//! cache saved, and what a run will cost before it starts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::types::Usage;

/// Prices of one model in dollars (or any currency) per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Price per million prompt tokens (also read as `prompt` or `input_per_million`).
    #[serde(alias = "prompt", alias = "input_per_million")]
    pub input: f64,
    /// Price per million completion tokens (also read as `completion` or
    /// `output_per_million`).
    #[serde(alias = "completion", alias = "output_per_million")]
    pub output: f64,
}

/// Prices by model name; `"*"` prices any model not listed.
///
/// Read from TOML or JSON (chosen by the file extension), one table per model:
///
/// ```toml
/// ["gpt-4o-mini"]
/// input = 0.15    # per 1M prompt tokens
/// output = 0.60   # per 1M completion tokens
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable {
    /// Price per model name; the key `"*"` applies to every model not listed.
    pub models: HashMap<String, Price>,
}

impl PriceTable {
    /// Reads a price table from TOML, or JSON for a `.json` file; fails on unreadable files
    /// and on prices that are negative or not finite.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read price table `{}`", path.display()))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let table: PriceTable = if is_json {
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "`{}`: expected a JSON object {{\"MODEL\": {{\"input\": N, \"output\": N}}}}",
                    path.display()
                )
            })?
        } else {
            toml::from_str(&text).with_context(|| {
                format!("`{}`: expected TOML tables [\"MODEL\"] with `input` and `output` per 1M tokens", path.display())
            })?
        };
        for (model, price) in &table.models {
            if !(price.input.is_finite()
                && price.input >= 0.0
                && price.output.is_finite()
                && price.output >= 0.0)
            {
                anyhow::bail!(
                    "`{}`: model `{model}`: prices must be numbers >= 0",
                    path.display()
                );
            }
        }
        Ok(table)
    }

    /// The price of `model`, or the `"*"` price when it is not listed.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.models
            .get(model)
            .or_else(|| self.models.get("*"))
            .copied()
    }

    /// Cost of the given token counts for `model`, if it has a price.
    pub fn cost(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
        let price = self.price(model)?;
        Some((prompt_tokens as f64 * price.input + completion_tokens as f64 * price.output) / 1e6)
    }
}

/// Counts for one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelTally {
    /// Calls answered by the backend.
    pub requests: u64,
    /// HTTP attempts, retries included.
    pub attempts: u64,
    /// Prompt tokens the backend billed (or estimated, see `usage_estimated`).
    pub prompt_tokens: u64,
    /// Completion tokens the backend billed (or estimated, see `usage_estimated`).
    pub completion_tokens: u64,
    /// Calls whose server reported no usage (their tokens are estimates).
    pub usage_estimated: u64,
    /// Samples served from the cache.
    pub cached_samples: u64,
    /// Tokens those cached samples cost when first asked.
    pub cached_prompt_tokens: u64,
    /// Completion tokens those cached samples cost when first asked.
    pub cached_completion_tokens: u64,
    /// Requests that ended failed.
    pub failed: u64,
    /// Times a request was asked again because a reply broke its structured-output
    /// constraint (endpoints that do not enforce constraints).
    pub constraint_retries: u64,
}

/// Thread-safe counts per model, with optional prices.
#[derive(Debug, Default)]
pub struct Ledger {
    models: Mutex<BTreeMap<String, ModelTally>>,
    prices: Option<PriceTable>,
}

impl Ledger {
    /// An empty ledger; with `prices`, it can tell what each model cost.
    pub fn new(prices: Option<PriceTable>) -> Self {
        Self {
            models: Mutex::default(),
            prices,
        }
    }

    fn with<R>(&self, model: &str, f: impl FnOnce(&mut ModelTally) -> R) -> R {
        let mut models = self.models.lock().expect("ledger lock");
        if !models.contains_key(model) {
            models.insert(model.to_string(), ModelTally::default());
        }
        f(models.get_mut(model).expect("just inserted"))
    }

    /// A call the backend answered after `attempts` HTTP attempts.
    pub fn record_answer(&self, model: &str, usage: Usage, attempts: u32) {
        self.with(model, |t| {
            t.requests += 1;
            t.attempts += u64::from(attempts);
            t.prompt_tokens += usage.prompt_tokens;
            t.completion_tokens += usage.completion_tokens;
            t.usage_estimated += u64::from(usage.estimated);
        });
    }

    /// Requests asked again because replies broke their constraint.
    pub fn record_constraint_retries(&self, model: &str, retries: u32) {
        if retries > 0 {
            self.with(model, |t| t.constraint_retries += u64::from(retries));
        }
    }

    /// A sample served from the cache, with the tokens it cost when first asked.
    pub fn record_cached(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) {
        self.with(model, |t| {
            t.cached_samples += 1;
            t.cached_prompt_tokens += prompt_tokens;
            t.cached_completion_tokens += completion_tokens;
        });
    }

    /// A request that ended failed after `attempts` HTTP attempts.
    pub fn record_failure(&self, model: &str, attempts: u32) {
        self.with(model, |t| {
            t.failed += 1;
            t.attempts += u64::from(attempts);
        });
    }

    /// A copy of the counts so far, by model name.
    pub fn tallies(&self) -> BTreeMap<String, ModelTally> {
        self.models.lock().expect("ledger lock").clone()
    }

    /// Spent cost of `model` so far, if it has a price.
    pub fn cost(&self, model: &str) -> Option<f64> {
        let tally = self.tallies().get(model).cloned().unwrap_or_default();
        self.prices
            .as_ref()?
            .cost(model, tally.prompt_tokens, tally.completion_tokens)
    }

    /// One line per model, e.g. ``model `m`: 10 requests (12 attempts), 0 failed;
    /// tokens 1,200 prompt + 340 completion; 5 samples from the cache (saved 800
    /// tokens); cost $0.0012``.
    pub fn summary(&self) -> String {
        let tallies = self.tallies();
        if tallies.is_empty() {
            return "ledger: no requests".to_string();
        }
        let mut lines = Vec::new();
        for (model, t) in &tallies {
            let mut line = format!(
                "model `{model}`: {} requests ({} attempts), {} failed; tokens {} prompt + {} completion",
                thousands(t.requests),
                thousands(t.attempts),
                thousands(t.failed),
                thousands(t.prompt_tokens),
                thousands(t.completion_tokens),
            );
            if t.usage_estimated > 0 {
                line.push_str(&format!(
                    " ({} answers without usage, estimated as characters / 4)",
                    thousands(t.usage_estimated)
                ));
            }
            if t.constraint_retries > 0 {
                line.push_str(&format!(
                    "; {} constraint retries",
                    thousands(t.constraint_retries)
                ));
            }
            if t.cached_samples > 0 {
                line.push_str(&format!(
                    "; {} samples from the cache (saved {} tokens)",
                    thousands(t.cached_samples),
                    thousands(t.cached_prompt_tokens + t.cached_completion_tokens)
                ));
            }
            if let Some(prices) = &self.prices {
                match prices.cost(model, t.prompt_tokens, t.completion_tokens) {
                    Some(cost) => {
                        line.push_str(&format!("; cost ${cost:.4}"));
                        if let Some(saved) =
                            prices.cost(model, t.cached_prompt_tokens, t.cached_completion_tokens)
                        {
                            if saved > 0.0 {
                                line.push_str(&format!(" (cache saved ${saved:.4})"));
                            }
                        }
                    }
                    None => line.push_str("; no price for this model"),
                }
            }
            lines.push(line);
        }
        lines.join("\n")
    }
}

/// What a run is expected to use, before it starts (`--dry-run`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Estimate {
    /// The model the run would ask.
    pub model: String,
    /// Samples to generate (records × samples per record).
    pub samples: u64,
    /// Samples already in the cache (not asked again).
    pub cached_samples: u64,
    /// Prompt tokens of the samples still to ask, estimated as characters / 4.
    pub prompt_tokens: u64,
    /// Upper bound: `max_tokens` per sample still to ask.
    pub max_completion_tokens: u64,
}

impl Estimate {
    /// The `--dry-run` report: samples, cached samples, tokens and, with `prices`, the cost
    /// range (prompts only up to every sample using `max_tokens`).
    pub fn render(&self, prices: Option<&PriceTable>) -> String {
        let todo = self.samples - self.cached_samples;
        let mut text = format!(
            "dry run for model `{}`: {} samples, {} already in the cache, {} to ask\n\
             prompt tokens: ~{} (estimated as characters / 4, not with the model's tokenizer)\n\
             completion tokens: at most {} (max_tokens per sample)",
            self.model,
            thousands(self.samples),
            thousands(self.cached_samples),
            thousands(todo),
            thousands(self.prompt_tokens),
            thousands(self.max_completion_tokens),
        );
        if let Some(prices) = prices {
            let prompt_only = prices.cost(&self.model, self.prompt_tokens, 0);
            let full = prices.cost(&self.model, self.prompt_tokens, self.max_completion_tokens);
            match (prompt_only, full) {
                (Some(low), Some(high)) => text.push_str(&format!(
                    "\ncost: ${low:.4} for prompts, at most ${high:.4} in all"
                )),
                _ => text.push_str(&format!(
                    "\ncost: the price table has no entry for `{}`",
                    self.model
                )),
            }
        }
        text
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && matches!((digits.len() - i) % 3, 0) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_tables_in_toml_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("prices.toml");
        std::fs::write(&toml_path, "[\"gpt-4o-mini\"]\ninput = 0.15\noutput = 0.6\n[\"*\"]\nprompt = 1.0\ncompletion = 2.0\n").unwrap();
        let table = PriceTable::load(&toml_path).unwrap();
        assert_eq!(
            table.price("gpt-4o-mini"),
            Some(Price {
                input: 0.15,
                output: 0.6
            })
        );
        assert_eq!(table.cost("other", 1_000_000, 500_000), Some(2.0));
        let json_path = dir.path().join("prices.json");
        std::fs::write(&json_path, r#"{"m": {"input": 1, "output": 3}}"#).unwrap();
        let table = PriceTable::load(&json_path).unwrap();
        assert_eq!(table.cost("m", 2_000_000, 1_000_000), Some(5.0));
        assert_eq!(table.cost("x", 1, 1), None);
        std::fs::write(&json_path, r#"{"m": {"input": -1, "output": 3}}"#).unwrap();
        assert!(PriceTable::load(&json_path)
            .unwrap_err()
            .to_string()
            .contains("`m`"));
        std::fs::write(&json_path, r#"{"m": 3}"#).unwrap();
        assert!(PriceTable::load(&json_path).is_err());
    }

    #[test]
    fn summary_counts_tokens_cache_and_cost() {
        let mut models = HashMap::new();
        models.insert(
            "m".to_string(),
            Price {
                input: 1.0,
                output: 2.0,
            },
        );
        let ledger = Ledger::new(Some(PriceTable { models }));
        ledger.record_answer(
            "m",
            Usage {
                prompt_tokens: 1_000_000,
                completion_tokens: 500_000,
                estimated: false,
            },
            3,
        );
        ledger.record_answer(
            "m",
            Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                estimated: true,
            },
            1,
        );
        ledger.record_cached("m", 100, 50);
        ledger.record_failure("m", 4);
        let t = &ledger.tallies()["m"];
        assert_eq!(
            (t.requests, t.attempts, t.failed, t.cached_samples),
            (2, 8, 1, 1)
        );
        let summary = ledger.summary();
        assert!(
            summary.contains("2 requests (8 attempts), 1 failed"),
            "{summary}"
        );
        assert!(
            summary.contains("1,000,010 prompt + 500,005 completion"),
            "{summary}"
        );
        assert!(summary.contains("1 answers without usage"), "{summary}");
        assert!(summary.contains("saved 150 tokens"), "{summary}");
        assert!(summary.contains("cost $2.0000"), "{summary}");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }
}
