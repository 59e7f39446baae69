//! The settings of a run against an OpenAI-compatible endpoint, as `seqit generate`,
//! `augment` and `eval` take them from flags: one typed struct that clap parses and that
//! checks itself into a [`RemoteConfig`], so that no command repeats the checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use seqit_core::durable::parent_dir;
use serde::Serialize;

use super::{
    normalize_base_url, ApiKey, MultiSampleMode, RemoteConfig, DEFAULT_API_KEY_ENV,
    DEFAULT_MAX_RESPONSE_BYTES,
};
use crate::PriceTable;

/// Name of the default request cache, next to a run's output.
pub const DEFAULT_CACHE_FILE: &str = "seqit-cache.sqlite";

/// Sending the prompts to an OpenAI-compatible endpoint instead of the local model.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
#[command(next_help_heading = "Remote endpoint")]
pub struct RemoteSettings {
    /// API base of an OpenAI-compatible server (e.g. `http://localhost:8000/v1`); the
    /// model is then the name `--model` gives (asked from the server when omitted).
    #[arg(long, env = "SEQIT_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Environment variable holding the API key.
    #[arg(long, default_value = DEFAULT_API_KEY_ENV)]
    pub api_key_env: String,
    /// Request cache (SQLite); default `seqit-cache.sqlite` next to `--output`.
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Neither read nor write the request cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Requests-per-minute limit.
    #[arg(long)]
    pub rpm: Option<u64>,
    /// Tokens-per-minute limit (prompt estimated as characters / 4, plus `--max-tokens`).
    #[arg(long)]
    pub tpm: Option<u64>,
    /// Seconds one HTTP attempt may take.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Retries of a failed request before it is reported failed.
    #[arg(long, default_value_t = 8)]
    pub max_retries: u32,
    /// Seconds before the first retry (doubling per retry, at most 60, with jitter)
    /// when the server gives no `Retry-After`.
    #[arg(long, default_value_t = 0.5)]
    pub backoff: f64,
    /// Prices per model per 1M tokens (TOML or JSON) for the cost summary.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Print how many requests and tokens the run would use, then stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Samples per prompt (sample i uses seed + i when asked alone).
    #[arg(long = "n", default_value_t = 1)]
    #[serde(rename = "n")]
    pub samples: u32,
    /// Version of the prompt template, part of every cache key.
    #[arg(long, default_value = "")]
    pub prompt_version: String,
    /// How `--n` > 1 is sent: probe the server, always `n`, or one request per sample.
    #[arg(long, value_enum, default_value_t = MultiSampleMode::Auto)]
    pub n_mode: MultiSampleMode,
    /// `--share-cache-across-endpoints` and `--max-response-bytes` (the teacher and eval
    /// settings use them too).
    #[command(flatten)]
    #[serde(flatten)]
    pub endpoint_cache: EndpointCacheSettings,
}

/// How answers of an endpoint are cached and bounded.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct EndpointCacheSettings {
    /// Let endpoints that serve the same model name share cached answers (cache keys
    /// then leave out the endpoint's URL; by default they hold it, without credentials
    /// or query, so two servers never share answers).
    #[arg(long)]
    pub share_cache_across_endpoints: bool,
    /// Largest response body accepted from an endpoint, in bytes; a larger one fails
    /// its request (not retried) with an error saying so.
    #[arg(long, default_value_t = DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,
}

impl RemoteSettings {
    /// Refuses flags that only mean something with an endpoint when there is none.
    pub fn reject_without_endpoint(&self) -> Result<()> {
        let used: Vec<&str> = [
            (self.samples != 1, "--n"),
            (self.dry_run, "--dry-run"),
            (self.cache.is_some(), "--cache"),
            (self.rpm.is_some(), "--rpm"),
            (self.tpm.is_some(), "--tpm"),
            (self.prices.is_some(), "--prices"),
            (
                self.endpoint_cache.share_cache_across_endpoints,
                "--share-cache-across-endpoints",
            ),
            (
                self.endpoint_cache.max_response_bytes != DEFAULT_MAX_RESPONSE_BYTES,
                "--max-response-bytes",
            ),
        ]
        .into_iter()
        .filter_map(|(set, flag)| set.then_some(flag))
        .collect();
        if !used.is_empty() {
            bail!(
                "{} only apply to a remote endpoint\nhint: add `--endpoint URL`, or drop them to generate with the local model",
                used.join(", ")
            );
        }
        Ok(())
    }

    /// The client's settings for `model` (empty: to be asked from the server), every
    /// value checked; `seed` seeds the backoff jitter.
    pub fn config(&self, model: Option<String>, seed: u64) -> Result<RemoteConfig> {
        let Some(endpoint) = self.endpoint.as_deref() else {
            bail!("no endpoint: pass `--endpoint URL`");
        };
        let api_key = ApiKey::from_env(&self.api_key_env);
        if api_key.is_none() && self.api_key_env != DEFAULT_API_KEY_ENV {
            bail!(
                "environment variable `{}` (named by --api-key-env) is not set\nhint: export it, or drop --api-key-env to use {DEFAULT_API_KEY_ENV}",
                self.api_key_env
            );
        }
        if self.concurrency == 0 {
            bail!("`--concurrency` must be at least 1");
        }
        if self.samples == 0 {
            bail!("`--n` must be at least 1");
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            bail!(
                "`--timeout` must be a number of seconds > 0, got {}",
                self.timeout
            );
        }
        if !(self.backoff.is_finite() && self.backoff >= 0.0) {
            bail!(
                "`--backoff` must be a number of seconds >= 0, got {}",
                self.backoff
            );
        }
        if self.rpm == Some(0) || self.tpm == Some(0) {
            bail!("`--rpm` and `--tpm` must be at least 1");
        }
        let mut config =
            RemoteConfig::new(normalize_base_url(endpoint)?, model.unwrap_or_default());
        config.api_key = api_key;
        config.concurrency = self.concurrency;
        config.requests_per_minute = self.rpm;
        config.tokens_per_minute = self.tpm;
        config.timeout = Duration::from_secs_f64(self.timeout);
        config.max_retries = self.max_retries;
        config.backoff.base = Duration::from_secs_f64(self.backoff);
        config.multi_sample = self.n_mode;
        config.seed = seed;
        config.max_response_bytes = self.endpoint_cache.max_response_bytes;
        Ok(config)
    }

    /// The request cache: `--cache`, else `seqit-cache.sqlite` next to `output` (a run
    /// without an output file has none), never with `--no-cache`.
    pub fn cache_path(&self, output: Option<&Path>) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache
            .clone()
            .or_else(|| output.map(|o| parent_dir(o).join(DEFAULT_CACHE_FILE)))
    }

    /// The price table of `--prices`, if given.
    pub fn price_table(&self) -> Result<Option<PriceTable>> {
        self.prices.as_deref().map(PriceTable::load).transpose()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        remote: RemoteSettings,
    }

    fn parse(args: &[&str]) -> RemoteSettings {
        Command::try_parse_from(std::iter::once("generate").chain(args.iter().copied()))
            .unwrap()
            .remote
    }

    #[test]
    fn flags_become_a_checked_config() {
        let remote = parse(&[
            "--endpoint",
            "http://127.0.0.1:9/v1/",
            "--concurrency",
            "3",
            "--rpm",
            "60",
            "--n-mode",
            "fan-out",
            "--timeout",
            "2.5",
        ]);
        let config = remote.config(Some("m".into()), 7).unwrap();
        assert_eq!(
            (config.base_url.as_str(), config.model.as_str()),
            ("http://127.0.0.1:9/v1", "m")
        );
        assert_eq!(config.concurrency, 3);
        assert_eq!(config.requests_per_minute, Some(60));
        assert_eq!(config.multi_sample, MultiSampleMode::FanOut);
        assert_eq!(config.timeout, Duration::from_millis(2500));
        assert_eq!(config.seed, 7);
        for (flags, message) in [
            (&["--concurrency", "0"][..], "--concurrency"),
            (&["--timeout", "0"][..], "--timeout"),
            (&["--backoff=-1"][..], "--backoff"),
            (&["--tpm", "0"][..], "--tpm"),
        ] {
            let mut args = vec!["--endpoint", "http://127.0.0.1:9/v1"];
            args.extend(flags);
            let err = parse(&args).config(None, 0).unwrap_err().to_string();
            assert!(err.contains(message), "{flags:?}: {err}");
        }
    }

    #[test]
    fn remote_only_flags_need_an_endpoint() {
        assert!(parse(&[]).reject_without_endpoint().is_ok());
        let err = parse(&["--n", "2", "--rpm", "5"])
            .reject_without_endpoint()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--n, --rpm only apply"), "{err}");
    }

    #[test]
    fn the_cache_sits_next_to_the_output_unless_told_otherwise() {
        let output = Path::new("runs/a/out.jsonl");
        assert_eq!(
            parse(&[]).cache_path(Some(output)),
            Some(PathBuf::from("runs/a/seqit-cache.sqlite"))
        );
        assert_eq!(parse(&[]).cache_path(None), None);
        assert_eq!(parse(&["--no-cache"]).cache_path(Some(output)), None);
        assert_eq!(
            parse(&["--cache", "c.sqlite"]).cache_path(Some(output)),
            Some(PathBuf::from("c.sqlite"))
        );
    }
}
