//! `seqit-faultserver`: the fault-injecting OpenAI-protocol server as a process, for
//! benchmarks and manual tests. Prints `listening on <API base>` once ready and runs
//! until interrupted.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use seqit_faultserver::{
    FaultConfig, FaultRates, FaultServer, MultiSample, RetryAfterStyle, ScriptRule,
};

#[derive(Debug, Parser)]
#[command(
    name = "seqit-faultserver",
    about = "OpenAI-protocol test server with injected faults"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Model name listed by /v1/models.
    #[arg(long, default_value = "fault-model")]
    model: String,
    /// Fixed latency of every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Most requests served at once (capacity = this / latency).
    #[arg(long)]
    max_concurrency: Option<usize>,
    /// Total fault rate, spread evenly over the seven kinds (overridden per kind below).
    #[arg(long, default_value_t = 0.0)]
    faults: f64,
    #[arg(long)]
    rate_429: Option<f64>,
    #[arg(long)]
    rate_500: Option<f64>,
    #[arg(long)]
    rate_503: Option<f64>,
    #[arg(long)]
    rate_hang: Option<f64>,
    #[arg(long)]
    rate_truncate: Option<f64>,
    #[arg(long)]
    rate_malformed: Option<f64>,
    #[arg(long)]
    rate_empty: Option<f64>,
    /// Seconds in `Retry-After` of 429 answers.
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// Send `Retry-After` as an HTTP date instead of seconds.
    #[arg(long)]
    retry_after_date: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = NArg::Honour)]
    n: NArg,
    /// Vary answer shapes (missing usage, content parts, odd finish reasons).
    #[arg(long)]
    variations: bool,
    /// JSON file of `[{"contains": "...", "reply": "..."}]` scripted replies.
    #[arg(long)]
    script: Option<PathBuf>,
    /// Require this bearer key.
    #[arg(long, env = "SEQIT_FAULTSERVER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Append every request's log entry to this JSONL file.
    #[arg(long)]
    log: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum NArg {
    Honour,
    Ignore,
    Reject,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut faults = FaultRates::uniform(args.faults);
    for (rate, slot) in [
        (args.rate_429, &mut faults.rate_limit),
        (args.rate_500, &mut faults.server_error),
        (args.rate_503, &mut faults.unavailable),
        (args.rate_hang, &mut faults.hang),
        (args.rate_truncate, &mut faults.truncate),
        (args.rate_malformed, &mut faults.malformed),
        (args.rate_empty, &mut faults.empty_choices),
    ] {
        if let Some(rate) = rate {
            *slot = rate;
        }
    }
    let script: Vec<ScriptRule> = match &args.script {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "`{}`: expected [{{\"contains\": ..., \"reply\": ...}}]: {e}",
                    path.display()
                )
            })?
        }
        None => Vec::new(),
    };
    let config = FaultConfig {
        model: args.model,
        latency: Duration::from_millis(args.latency_ms),
        faults,
        seed: args.seed,
        retry_after: if args.retry_after_date {
            RetryAfterStyle::HttpDate(args.retry_after)
        } else {
            RetryAfterStyle::Seconds(args.retry_after)
        },
        multi_sample: match args.n {
            NArg::Honour => MultiSample::Honour,
            NArg::Ignore => MultiSample::Ignore,
            NArg::Reject => MultiSample::Reject,
        },
        variations: args.variations,
        max_concurrency: args.max_concurrency,
        script,
        api_key: args.api_key,
        log_file: args.log,
        ..FaultConfig::default()
    };
    let addr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(|e| anyhow::anyhow!("bad --host/--port: {e}"))?;
    let server = FaultServer::bind(config, addr).await?;
    println!("listening on {}", server.url());
    use std::io::Write;
    std::io::stdout().flush()?;
    tokio::signal::ctrl_c().await?;
    let stats = server.stats();
    eprintln!("{}", serde_json::to_string(&stats)?);
    server.stop().await;
    Ok(())
}
