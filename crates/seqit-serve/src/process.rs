//! `seqit serve` as a process: the checks before the model loads, the name a model is
//! served under, and serving until Ctrl-C or SIGTERM (a second signal stops at once
//! instead of finishing the requests in flight).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use seqit_core::progress::Progress;
use seqit_core::DEFAULT_MODEL_NAME;
use seqit_engine::Engine;

use crate::ServerConfig;

/// Exit status after a second Ctrl-C/SIGTERM (128 + SIGINT).
const FORCED_EXIT_STATUS: i32 = 130;

/// The name a model is served under when none is given: the default model's short
/// name, else the file or directory name of `spec`.
pub fn default_served_name(spec: Option<&str>) -> String {
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

/// Raises the open-file limit (each connection holds a file descriptor) and warns
/// about what would expose or starve the server at `address`; run it before the model
/// loads, so that the operator sees it at once.
pub fn check_exposure(config: &ServerConfig, address: SocketAddr, progress: &dyn Progress) {
    match crate::raise_open_files_limit() {
        Ok(files) if (files as usize) < config.max_connections => progress.warn(&format!(
            "the open-file limit is {files}, so fewer than {} connections fit\nhint: raise the hard limit (`ulimit -Hn`)",
            config.max_connections
        )),
        Ok(_) => {}
        Err(err) => progress.warn(&format!("cannot raise the open-file limit: {err}")),
    }
    if !is_loopback(&address.ip()) && config.api_key.is_none() {
        progress.warn(&format!(
            "serving on non-loopback address {address} without an API key\nhint: pass `--api-key` (or set SEQIT_API_KEY)"
        ));
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

/// Serves `engine` on the bound `listener` until Ctrl-C or SIGTERM, on a runtime of its
/// own; the first signal finishes the requests in flight, a second exits at once.
pub fn serve_until_signal(
    engine: Arc<Engine>,
    config: ServerConfig,
    listener: std::net::TcpListener,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("seqit-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        progress.note(&format!(
            "listening on http://{address} (model {})",
            config.model_name
        ));
        crate::serve_with_shutdown(engine, config, listener, shutdown_signal(progress)).await
    })?;
    // Generation still running for a client that left must not keep the process alive.
    runtime.shutdown_background();
    Ok(())
}

/// Completes on the first Ctrl-C or SIGTERM; a second one exits immediately.
async fn shutdown_signal(progress: Arc<dyn Progress>) {
    termination().await;
    progress.note("shutting down: finishing requests in flight (press Ctrl-C again to stop now)");
    tokio::spawn(async move {
        termination().await;
        progress.note("stopped");
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

    #[test]
    fn loopback_addresses() {
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["0.0.0.0", "10.0.0.1", "::"] {
            assert!(!is_loopback(&ip.parse().unwrap()), "{ip}");
        }
    }
}
