//! `seqit serve`: the local model behind an OpenAI-compatible HTTP API until Ctrl-C or
//! SIGTERM (a second signal stops at once instead of finishing requests in flight).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use seqit_core::DEFAULT_MODEL_NAME;
use seqit_serve::ServerConfig;

use crate::cli::ServeArgs;

/// Exit status after a second Ctrl-C/SIGTERM (128 + SIGINT).
const FORCED_EXIT_STATUS: i32 = 130;

pub fn run(args: ServeArgs) -> Result<()> {
    let model_name = match &args.served_model_name {
        Some(name) => name.clone(),
        None => default_served_name(args.model.model.as_deref()),
    };
    if args.api_key.is_some() && api_key_in_argv(std::env::args_os()) {
        eprintln!(
            "warning: the API key given with `--api-key` is visible to other users in `ps` and stays in shell history\nhint: set SEQIT_API_KEY instead"
        );
    }
    let mut config = ServerConfig::new(&model_name);
    config.api_key = args.api_key.clone();
    config.max_body_bytes = args.max_body_bytes;
    config.max_tokens_limit = args.max_tokens_limit;
    config.request_timeout = seconds("--request-timeout", args.request_timeout)?;
    config.header_timeout = seconds("--header-timeout", args.header_timeout)?;
    config.idle_timeout = seconds("--idle-timeout", args.idle_timeout)?;
    config.max_connections = args.max_connections;
    // Bad settings fail before the model loads.
    config.validate()?;
    // Each connection holds a file descriptor.
    match seqit_serve::raise_open_files_limit() {
        Ok(files) if (files as usize) < config.max_connections => eprintln!(
            "warning: the open-file limit is {files}, so fewer than {} connections fit\nhint: raise the hard limit (`ulimit -Hn`)",
            config.max_connections
        ),
        Ok(_) => {}
        Err(err) => eprintln!("warning: cannot raise the open-file limit: {err}"),
    }

    // Bind before loading the model, so that a busy port fails at once.
    let listener = std::net::TcpListener::bind((args.host.as_str(), args.port))
        .with_context(|| format!("cannot listen on `{}:{}`", args.host, args.port))?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    if !is_loopback(&address.ip()) && config.api_key.is_none() {
        eprintln!(
            "warning: serving on non-loopback address {address} without an API key\nhint: pass `--api-key` (or set SEQIT_API_KEY)"
        );
    }

    let engine = Arc::new(super::load_engine(&args.model)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("seqit-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        eprintln!("listening on http://{address} (model {model_name})");
        seqit_serve::serve_with_shutdown(engine, config, listener, shutdown_signal()).await
    })?;
    // Generation still running for a client that left must not keep the process alive.
    runtime.shutdown_background();
    Ok(())
}

/// A duration option given in seconds.
fn seconds(flag: &str, value: f64) -> Result<Duration> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => bail!("`{flag}` must be a number of seconds > 0, got {value}"),
    }
}

/// Whether the command line itself carries `--api-key` (rather than SEQIT_API_KEY).
fn api_key_in_argv(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.skip(1).any(|arg| {
        let arg = arg.to_string_lossy();
        arg == "--api-key" || arg.starts_with("--api-key=")
    })
}

/// The name a model is served under without `--served-model-name`: the default model's
/// short name, else the file or directory name.
fn default_served_name(spec: Option<&str>) -> String {
    match spec {
        None | Some(DEFAULT_MODEL_NAME) => DEFAULT_MODEL_NAME.to_string(),
        Some(path) => {
            let trimmed = path.trim_end_matches(['/', '\\']);
            Path::new(trimmed)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| trimmed.to_string())
        }
    }
}

fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Completes on the first Ctrl-C or SIGTERM; a second one exits immediately.
async fn shutdown_signal() {
    termination().await;
    eprintln!("shutting down: finishing requests in flight (press Ctrl-C again to stop now)");
    tokio::spawn(async {
        termination().await;
        eprintln!("stopped");
        std::process::exit(FORCED_EXIT_STATUS);
    });
}

async fn termination() {
    let ctrl_c = async {
        // If the handler cannot be installed, wait for SIGTERM alone.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => ctrl_c.await,
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_key_on_the_command_line_is_noticed() {
        let argv = |args: &[&str]| args.iter().map(Into::into).collect::<Vec<_>>().into_iter();
        assert!(api_key_in_argv(argv(&["seqit", "serve", "--api-key", "k"])));
        assert!(api_key_in_argv(argv(&["seqit", "serve", "--api-key=k"])));
        assert!(!api_key_in_argv(argv(&["seqit", "serve", "--port", "1"])));
        assert!(!api_key_in_argv(argv(&["--api-key"])));
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(seconds("--x", 1.5).unwrap(), Duration::from_millis(1500));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(seconds("--x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn served_names() {
        assert_eq!(default_served_name(None), "smollm2-135m");
        assert_eq!(default_served_name(Some("smollm2-135m")), "smollm2-135m");
        assert_eq!(
            default_served_name(Some("/models/llama.gguf")),
            "llama.gguf"
        );
        assert_eq!(
            default_served_name(Some("/models/Qwen2-0.5B/")),
            "Qwen2-0.5B"
        );
    }
}
