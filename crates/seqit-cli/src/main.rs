//! The `seqit` binary: parses the command line and dispatches to one module per
//! subcommand. Errors print as one line plus their causes, never as a panic.

mod allocator;
mod cli;
mod commands;
mod printer;

use std::process::ExitCode;

use clap::Parser;

/// The commit the binary was built from (see `build.rs`).
pub(crate) const GIT_COMMIT: &str = env!("SEQIT_GIT_COMMIT");
/// `seqit --version`: the package version and the commit.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SEQIT_GIT_COMMIT"),
    ")"
);

fn main() -> ExitCode {
    configure_process();
    let cli = cli::Cli::parse();
    printer::set_verbosity(match (cli.quiet, cli.verbose) {
        (true, _) => printer::Verbosity::Quiet,
        (_, true) => printer::Verbosity::Verbose,
        _ => printer::Verbosity::Normal,
    });
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", render_error(&err));
            ExitCode::FAILURE
        }
    }
}

/// Process-wide settings, made before any thread starts.
fn configure_process() {
    // Errors are reported as messages; a captured library backtrace (candle attaches
    // one when RUST_BACKTRACE is set) would bury them.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    // candle asks for its thread count on every matmul and, without this variable,
    // answers by parsing /proc/cpuinfo each time.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// `error: <message>` followed by `  caused by: ...` lines and any `hint:` lines that a
/// message carries on its own lines.
fn render_error(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for (depth, cause) in err.chain().enumerate() {
        let text = cause.to_string();
        let (message, hints) = match text.split_once("\nhint: ") {
            Some((m, h)) => (m.to_string(), Some(h.to_string())),
            None => (text, None),
        };
        if depth == 0 {
            out.push_str(&format!("error: {message}"));
        } else {
            out.push_str(&format!("\n  caused by: {message}"));
        }
        if let Some(h) = hints {
            out.push_str(&format!("\nhint: {h}"));
        }
    }
    out
}
