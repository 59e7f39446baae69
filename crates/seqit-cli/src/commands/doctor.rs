//! `seqit doctor`: the checks of `seqit_doctor` on this build and machine, as a table
//! or JSON. Any failed check makes the exit status 1.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use seqit_doctor::{BuildInfo, Status};
use serde_json::json;

use crate::printer::result;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON (for bug reports) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The directory runs will write to (default: the current one).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// The Python interpreter HumanEval's sandbox would use.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
}

pub fn run(args: DoctorArgs) -> Result<()> {
    let run_dir = match &args.run_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir()?,
    };
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: crate::GIT_COMMIT,
        features: features(),
        debug: cfg!(debug_assertions),
    };
    let checks = seqit_doctor::run_checks(&build, &args.python, &run_dir);
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if args.json {
        let report = json!({ "ok": failed == 0, "checks": checks });
        result(serde_json::to_string_pretty(&report)?);
    } else {
        for check in &checks {
            let status = match check.status {
                Status::Ok => "ok",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            result(format!("{status:<5} {:<9} {}", check.name, check.summary));
            if let Some(hint) = &check.hint {
                result(format!("{:<15} hint: {hint}", ""));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} check(s) failed (see the hints above)");
    }
    Ok(())
}

/// The features this binary was built with.
fn features() -> Vec<&'static str> {
    let mut features = Vec::new();
    if cfg!(feature = "https") {
        features.push("https");
    }
    if cfg!(feature = "cuda") {
        features.push("cuda");
    }
    if cfg!(feature = "parquet") {
        features.push("parquet");
    }
    features
}
