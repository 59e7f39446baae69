//! The downloaded assets (`scripts/setup --assets-only`) and the one rule for tests that
//! need them: when an asset is missing the test prints `skipped: <why>` to stderr and
//! returns, unless `SEQIT_REQUIRE_ASSETS=1` (CI's `scripts/test` sets it), where it fails.
//!
//! ```ignore
//! let Some(model) = seqit_testkit::require_model() else {
//!     return;
//! };
//! ```

use std::io::Write;
use std::path::PathBuf;

/// Set to `1`, a missing asset fails the test that needs it instead of skipping it.
pub const REQUIRE_ASSETS_ENV: &str = "SEQIT_REQUIRE_ASSETS";

/// The assets directory as seqit itself finds it, or `None` when the assets are not installed.
pub fn assets_dir() -> Option<PathBuf> {
    seqit_engine::assets_dir().ok()
}

/// The packaged default model (the SmolLM2 GGUF), or `None` once [`assets_missing`] said why.
pub fn require_model() -> Option<PathBuf> {
    match seqit_engine::resolve_model(None) {
        Ok(path) => Some(path),
        Err(_) => assets_missing("the default model (SmolLM2) is not installed"),
    }
}

/// `relative` inside the assets directory, or `None` once [`assets_missing`] said why.
pub fn require_asset(relative: &str) -> Option<PathBuf> {
    match assets_dir().map(|dir| dir.join(relative)) {
        Some(path) if path.exists() => Some(path),
        _ => assets_missing(&format!("the asset `{relative}` is not installed")),
    }
}

/// A test's assets are missing: panics under `SEQIT_REQUIRE_ASSETS=1`, else prints
/// `skipped: <test>: <why>` to stderr (past the test harness's capture, so that every
/// run shows it) and returns `None`.
pub fn assets_missing<T>(why: &str) -> Option<T> {
    let hint = "run `scripts/setup --assets-only`";
    if std::env::var_os(REQUIRE_ASSETS_ENV).is_some_and(|v| v == "1") {
        panic!("{why} and {REQUIRE_ASSETS_ENV}=1 requires it\nhint: {hint}");
    }
    let test = std::thread::current()
        .name()
        .map(|name| format!("{name}: "))
        .unwrap_or_default();
    let line =
        format!("skipped: {test}{why} ({hint}; {REQUIRE_ASSETS_ENV}=1 makes this a failure)\n");
    // Not `eprintln!`: the harness would hold that back unless the test failed.
    let _ = std::io::stderr().write_all(line.as_bytes());
    None
}
