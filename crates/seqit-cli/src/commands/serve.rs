//! `seqit serve`: the local model behind an OpenAI-compatible HTTP API until Ctrl-C or
//! SIGTERM (`seqit_serve::serve_until_signal`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use seqit_serve::ServerConfig;

use crate::cli::ServeArgs;
use crate::printer::{warn, Printer};

pub fn run(args: ServeArgs) -> Result<()> {
    let model_name = match &args.served_model_name {
        Some(name) => name.clone(),
        None => seqit_serve::default_served_name(args.model.model.as_deref()),
    };
    if args.api_key.is_some() && api_key_in_argv(std::env::args_os()) {
        warn("the API key given with `--api-key` is visible to other users in `ps` and stays in shell history\nhint: set SEQIT_API_KEY instead");
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
    // Bind before loading the model, so that a busy port fails at once.
    let listener = std::net::TcpListener::bind((args.host.as_str(), args.port))
        .with_context(|| format!("cannot listen on `{}:{}`", args.host, args.port))?;
    let printer = Arc::new(Printer::new());
    seqit_serve::check_exposure(&config, listener.local_addr()?, printer.as_ref());
    let engine = Arc::new(super::load_engine(&args.model)?);
    seqit_serve::serve_until_signal(engine, config, listener, printer)
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
}
