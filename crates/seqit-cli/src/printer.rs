//! The one printer of the binary: progress, notes, warnings and results.
//!
//! Results (tables, metrics, the path of what was written) go to stdout; everything else
//! goes to stderr. On a terminal a stage is an indicatif bar; when stderr is a file or a
//! pipe (CI logs, `seqit run`'s stage logs) it is one line every few seconds with the
//! rate and the ETA, so logs stay readable. `--quiet` keeps results and warnings only;
//! `--verbose` adds detail lines.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use seqit_core::progress::Progress;

/// How much the binary says, set once from `--quiet` / `--verbose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet = 0,
    Normal = 1,
    Verbose = 2,
}

static VERBOSITY: AtomicU8 = AtomicU8::new(Verbosity::Normal as u8);

/// Sets the verbosity for the whole process (called once, by `main`).
pub fn set_verbosity(verbosity: Verbosity) {
    VERBOSITY.store(verbosity as u8, Ordering::Relaxed);
}

fn verbosity() -> Verbosity {
    match VERBOSITY.load(Ordering::Relaxed) {
        0 => Verbosity::Quiet,
        1 => Verbosity::Normal,
        _ => Verbosity::Verbose,
    }
}

/// A result line on stdout (always printed: it is what the command was asked for).
pub fn result(line: impl AsRef<str>) {
    println!("{}", line.as_ref());
}

/// A status line on stderr, dropped under `--quiet`.
pub fn note(line: impl AsRef<str>) {
    if verbosity() >= Verbosity::Normal {
        eprintln!("{}", line.as_ref());
    }
}

/// A detail line on stderr, shown only under `--verbose`.
pub fn detail(line: impl AsRef<str>) {
    if verbosity() >= Verbosity::Verbose {
        eprintln!("{}", line.as_ref());
    }
}

/// A warning on stderr, always shown.
pub fn warn(line: impl AsRef<str>) {
    eprintln!("warning: {}", line.as_ref());
}

/// How often a log line is written when stderr is not a terminal.
const LOG_LINE_EVERY: Duration = Duration::from_secs(2);

/// Counts generated tokens so that progress can show a token rate.
pub type TokenCounter = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Stage progress for library jobs ([`Progress`]): a bar on a terminal, a log line every
/// [`LOG_LINE_EVERY`] otherwise, nothing under `--quiet`.
pub struct Printer {
    bar: Option<ProgressBar>,
    tokens: Option<TokenCounter>,
    stage: Mutex<Stage>,
}

struct Stage {
    name: String,
    total: u64,
    done: u64,
    resumed: u64,
    tokens_at_start: u64,
    started: Instant,
    last_line: Option<Instant>,
}

impl Default for Printer {
    fn default() -> Self {
        Self::new()
    }
}

impl Printer {
    pub fn new() -> Self {
        let show_bar = verbosity() >= Verbosity::Normal && std::io::stderr().is_terminal();
        let bar = show_bar.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} items, {per_sec}, {msg}ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Self {
            bar,
            tokens: None,
            stage: Mutex::new(Stage {
                name: String::new(),
                total: 0,
                done: 0,
                resumed: 0,
                tokens_at_start: 0,
                started: Instant::now(),
                last_line: None,
            }),
        }
    }

    /// Shows generated tokens per second beside the item rate.
    pub fn with_tokens(mut self, tokens: TokenCounter) -> Self {
        self.tokens = Some(tokens);
        self
    }

    fn token_rate(&self, stage: &Stage) -> Option<f64> {
        let tokens = self.tokens.as_ref()?() - stage.tokens_at_start;
        Some(tokens as f64 / stage.started.elapsed().as_secs_f64().max(1e-3))
    }

    fn log_line(&self, stage: &Stage) -> String {
        let elapsed = stage.started.elapsed().as_secs_f64().max(1e-3);
        let rate = (stage.done - stage.resumed) as f64 / elapsed;
        let mut line = format!(
            "{}: {}/{} items, {rate:.2} items/s",
            stage.name, stage.done, stage.total
        );
        if let Some(tokens) = self.token_rate(stage) {
            line.push_str(&format!(", {tokens:.0} tok/s"));
        }
        if stage.done < stage.total && rate > 0.0 {
            let eta = (stage.total - stage.done) as f64 / rate;
            line.push_str(&format!(", ETA {eta:.0} s"));
        } else {
            line.push_str(&format!(", {elapsed:.0} s"));
        }
        line
    }
}

impl Progress for Printer {
    fn start(&self, stage: &str, total: u64, done: u64) {
        let mut state = self.stage.lock().expect("printer lock");
        *state = Stage {
            name: stage.to_string(),
            total,
            done,
            resumed: done,
            tokens_at_start: self.tokens.as_ref().map_or(0, |count| count()),
            started: Instant::now(),
            last_line: None,
        };
        match &self.bar {
            Some(bar) => {
                bar.set_prefix(stage.to_string());
                bar.set_length(total);
                bar.set_position(done);
                bar.reset_eta();
                bar.reset_elapsed();
            }
            None => note(format!("{stage}: {total} items, {done} already done")),
        }
    }

    fn advance(&self, n: u64) {
        let mut state = self.stage.lock().expect("printer lock");
        state.done += n;
        match &self.bar {
            Some(bar) => {
                bar.inc(n);
                if let Some(tokens) = self.token_rate(&state) {
                    bar.set_message(format!("{tokens:.0} tok/s, "));
                }
            }
            None => {
                let due = state
                    .last_line
                    .is_none_or(|last| last.elapsed() >= LOG_LINE_EVERY);
                if due || state.done == state.total {
                    state.last_line = Some(Instant::now());
                    note(self.log_line(&state));
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) if !bar.is_finished() && bar.length().unwrap_or(0) > 0 => {
                bar.suspend(|| note(message))
            }
            _ => note(message),
        }
    }

    fn warn(&self, message: &str) {
        match &self.bar {
            Some(bar) if !bar.is_finished() && bar.length().unwrap_or(0) > 0 => {
                bar.suspend(|| warn(message))
            }
            _ => warn(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line_has_rate_and_eta_until_the_end() {
        let printer = Printer::new();
        let mut stage = Stage {
            name: "eval".into(),
            total: 10,
            done: 4,
            resumed: 2,
            tokens_at_start: 0,
            started: Instant::now() - Duration::from_secs(4),
            last_line: None,
        };
        let line = printer.log_line(&stage);
        assert!(line.starts_with("eval: 4/10 items, 0.50 items/s"), "{line}");
        assert!(line.ends_with("ETA 12 s"), "{line}");
        stage.done = 10;
        assert!(printer.log_line(&stage).ends_with(" 4 s"));
    }
}
