//! `seqit doctor`'s probes: what a build is and what it finds on this machine, the
//! first things to know when seqit is slow or fails: the CPU's kernel path, threads and
//! memory, the assets and the default model's checksum, TLS roots, CUDA, the HumanEval
//! sandbox's isolation (probed with seqit's own program, never model code) and whether
//! the run directory is writable. Each problem comes with a hint; the binary renders
//! the checks as a table or JSON.

#![deny(missing_docs)]

use std::io::Read;
use std::path::Path;

use seqit_model::packed::{decoder_isa, Isa, ISA_VARIABLE};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Ok,
    /// Works, with a limitation worth knowing.
    Warn,
    /// Something seqit needs is missing or broken.
    Fail,
}

/// One finding.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it went.
    pub status: Status,
    /// One line on what was found.
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// What to do about a problem.
    pub hint: Option<String>,
    /// Everything found, for bug reports.
    pub details: Value,
}

impl Check {
    fn new(name: &'static str, status: Status, summary: String, details: Value) -> Self {
        Self {
            name,
            status,
            summary,
            hint: None,
            details,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// What the binary was built as; the binary knows its own features and commit.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    /// The package version.
    pub version: &'static str,
    /// The commit it was built from.
    pub commit: &'static str,
    /// The cargo features it was built with (`https`, `cuda`, `parquet`).
    pub features: Vec<&'static str>,
    /// Whether it is a debug build.
    pub debug: bool,
}

impl BuildInfo {
    fn has(&self, feature: &str) -> bool {
        self.features.contains(&feature)
    }
}

/// Every check, in the order a table shows them: the build, the CPU's kernel path,
/// threads and memory, the assets, TLS, CUDA, the sandbox (with `python`) and whether
/// `run_dir` is writable.
pub fn run_checks(build_info: &BuildInfo, python: &Path, run_dir: &Path) -> Vec<Check> {
    vec![
        build(build_info),
        cpu(),
        threads_and_memory(),
        assets(),
        tls(build_info),
        cuda(build_info),
        sandbox(python),
        writable(run_dir),
    ]
}

fn build(info: &BuildInfo) -> Check {
    let features = &info.features;
    let profile = if info.debug { "debug" } else { "release" };
    let summary = format!(
        "seqit {} ({}), {profile} build for {}-{}, features: {}",
        info.version,
        info.commit,
        std::env::consts::ARCH,
        std::env::consts::OS,
        if features.is_empty() {
            "none".to_string()
        } else {
            features.join(", ")
        }
    );
    let check = Check::new(
        "build",
        if info.debug { Status::Warn } else { Status::Ok },
        summary,
        json!({
            "version": info.version,
            "commit": info.commit,
            "profile": profile,
            "arch": std::env::consts::ARCH,
            "os": std::env::consts::OS,
            "features": features,
        }),
    );
    if info.debug {
        check.hint("a debug build is many times slower: `cargo build --release`")
    } else {
        check
    }
}

/// The CPU's name, from `/proc/cpuinfo` or `sysctl`.
fn cpu_model() -> Option<String> {
    if let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") {
        return text
            .lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string());
    }
    let out = std::process::Command::new("sysctl")
        .args(["-n", "machdep.cpu.brand_string"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The instruction-set extensions the kernels care about, as this CPU reports them.
fn cpu_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($feature:tt),*) => {
                $(if is_x86_feature_detected!($feature) {
                    found.push($feature);
                })*
            };
        }
        detect!(
            "avx2",
            "fma",
            "f16c",
            "avxvnni",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        found.push("neon");
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            found.push("dotprod");
        }
    }
    found
}

fn cpu() -> Check {
    let model = cpu_model().unwrap_or_else(|| "unknown CPU".into());
    let features = cpu_features();
    let supported: Vec<&str> = Isa::supported_all().iter().map(|i| i.name()).collect();
    let forced = std::env::var(ISA_VARIABLE).ok().filter(|v| !v.is_empty());
    let details = json!({
        "model": model,
        "features": features,
        "kernel_paths_supported": supported,
        "forced_by": forced.as_ref().map(|v| format!("{ISA_VARIABLE}={v}")),
    });
    match decoder_isa() {
        Err(message) => Check::new("cpu", Status::Fail, format!("{model}: {message}"), details)
            .hint(format!(
                "unset {ISA_VARIABLE}, or set it to one of: {}",
                supported.join(", ")
            )),
        Ok(isa) => {
            let path = match isa {
                Some(isa) => format!("packed {} kernels", isa.name()),
                None => "candle's kernels (no packed kernels for this CPU)".to_string(),
            };
            let forced_note = forced
                .map(|v| format!(", forced by {ISA_VARIABLE}={v}"))
                .unwrap_or_default();
            let summary = format!(
                "{model}; kernel path: {path}{forced_note}; extensions: {}",
                if features.is_empty() {
                    "none".to_string()
                } else {
                    features.join(" ")
                }
            );
            let mut details = details;
            details["kernel_path"] = json!(isa.map(Isa::name));
            let best = Isa::best();
            match isa {
                Some(isa) if isa != best => Check::new("cpu", Status::Warn, summary, details)
                    .hint(format!(
                        "{ISA_VARIABLE} forces a slower path than this CPU's best ({}); unset it for full speed (the numbers are the same)",
                        best.name()
                    )),
                None | Some(Isa::Scalar) => Check::new("cpu", Status::Warn, summary, details)
                    .hint("no fast kernels for this CPU: the packed kernels need AVX2+FMA (x86) or NEON with dot products (ARM)"),
                Some(_) => Check::new("cpu", Status::Ok, summary, details),
            }
        }
    }
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
fn memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

fn threads_and_memory() -> Check {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rayon = std::env::var("RAYON_NUM_THREADS").ok();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let details = json!({
        "threads": threads,
        "rayon_threads": rayon,
        "memory_total_bytes": memory().map(|m| m.0),
        "memory_available_bytes": memory().map(|m| m.1),
    });
    let memory_text = match memory() {
        Some((total, available)) => {
            format!(
                "{:.1} GiB memory, {:.1} GiB available",
                gib(total),
                gib(available)
            )
        }
        None => "memory unknown".to_string(),
    };
    let summary = format!("{threads} threads; {memory_text}");
    // The default model needs about 1 GiB to serve, training a LoRA on it about 3.
    match memory() {
        Some((_, available)) if available < 2 << 30 => {
            Check::new("machine", Status::Warn, summary, details)
                .hint("less than 2 GiB available: training the default model may run out of memory")
        }
        _ => Check::new("machine", Status::Ok, summary, details),
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn assets() -> Check {
    let wanted: Vec<String> = seqit_engine::asset_packages()
        .iter()
        .map(|p| p.to_string())
        .collect();
    let dir = match seqit_engine::assets_dir() {
        Ok(dir) => dir,
        Err(error) => {
            let text = format!("{error:#}");
            let (message, hint) = text.split_once("\nhint: ").unwrap_or((&text, ""));
            return Check::new(
                "assets",
                Status::Fail,
                message.to_string(),
                json!({"wanted": wanted, "user_dir": seqit_engine::user_assets_dir()}),
            )
            .hint(if hint.is_empty() {
                "run `seqit setup`"
            } else {
                hint
            });
        }
    };
    let installed = seqit_engine::installed_packages(&dir);
    let model = dir.join(seqit_engine::DEFAULT_MODEL_FILE);
    let checksum = sha256_file(&model).ok();
    let details = json!({
        "dir": dir,
        "installed": installed,
        "wanted": wanted,
        "default_model": model,
        "default_model_sha256": checksum,
    });
    let summary = format!("`{}`", dir.display());
    if checksum.as_deref() != Some(seqit_engine::DEFAULT_MODEL_SHA256) {
        return Check::new(
            "assets",
            Status::Fail,
            format!(
                "{summary}: the default model's checksum is {} (expected {})",
                checksum.as_deref().unwrap_or("unreadable"),
                seqit_engine::DEFAULT_MODEL_SHA256
            ),
            details,
        )
        .hint("reinstall the assets: delete the directory and run `seqit setup`");
    }
    let summary = format!(
        "{summary}; default model {} (sha256 ok)",
        seqit_engine::DEFAULT_MODEL_FILE
    );
    match installed {
        Some(have) if have == wanted => Check::new(
            "assets",
            Status::Ok,
            format!("{summary}; {}", have.join(" ")),
            details,
        ),
        _ => Check::new(
            "assets",
            Status::Warn,
            format!("{summary}; the installed packages are not the ones this seqit wants"),
            details,
        )
        .hint("run `seqit setup` to install this version's assets"),
    }
}

fn tls(build: &BuildInfo) -> Check {
    let roots = seqit_llm::tls_roots();
    let details = serde_json::to_value(roots).unwrap_or(Value::Null);
    if !build.has("https") {
        return Check::new(
            "tls",
            Status::Warn,
            "built without TLS: only http:// endpoints".into(),
            details,
        )
        .hint("build with the default features for https:// endpoints");
    }
    let summary = format!("{} certificates from {}", roots.certificates, roots.source);
    if roots.certificates == 0 {
        return Check::new("tls", Status::Fail, summary, details).hint(
            "no usable certificate: check SSL_CERT_FILE / SSL_CERT_DIR, or unset them to use the system's store",
        );
    }
    let check = Check::new("tls", Status::Ok, summary, details);
    if roots.errors.is_empty() {
        check
    } else {
        Check {
            status: Status::Warn,
            ..check
        }
        .hint(format!(
            "{} certificate(s) could not be read: {}",
            roots.errors.len(),
            roots.errors.join("; ")
        ))
    }
}

fn cuda(build: &BuildInfo) -> Check {
    if !build.has("cuda") {
        return Check::new(
            "cuda",
            Status::Ok,
            "not in this build (CPU only; build with `--features cuda` for GPUs)".into(),
            json!({"built": false}),
        );
    }
    match seqit_model::parse_device("cuda:0") {
        Ok(device) => Check::new(
            "cuda",
            Status::Ok,
            format!("built with cuda; device 0 opened ({device:?})"),
            json!({"built": true, "device0": true}),
        ),
        Err(error) => Check::new(
            "cuda",
            Status::Warn,
            format!("built with cuda, but no device opens: {error:#}"),
            json!({"built": true, "device0": false}),
        )
        .hint("check the NVIDIA driver (`nvidia-smi`); CPU runs still work"),
    }
}

fn sandbox(python: &Path) -> Check {
    use seqit_sandbox::{Sandbox, SandboxConfig};
    let config = SandboxConfig {
        python: python.to_path_buf(),
        ..SandboxConfig::default()
    };
    match Sandbox::new(config) {
        Ok(sandbox) => {
            let summary = format!(
                "HumanEval programs would run with {} (Python {} at `{}`)",
                sandbox.summary(),
                sandbox.python_version(),
                sandbox.python().display()
            );
            let check = Check::new("sandbox", Status::Ok, summary, sandbox.describe());
            match sandbox.warnings().first() {
                Some(warning) => Check {
                    status: Status::Warn,
                    ..check
                }
                .hint(warning.clone()),
                None => check,
            }
        }
        Err(error) => {
            let text = error.to_string();
            let (message, hint) = text.split_once("\nhint: ").unwrap_or((&text, ""));
            // Only HumanEval needs it: a warning, not a failure.
            Check::new(
                "sandbox",
                Status::Warn,
                format!("no sandbox for HumanEval: {message}"),
                json!({"error": text}),
            )
            .hint(if hint.is_empty() {
                "HumanEval refuses to run untrusted code without isolation; everything else works"
            } else {
                hint
            })
        }
    }
}

fn writable(dir: &Path) -> Check {
    let details = json!({"dir": dir});
    let probe = tempfile::Builder::new()
        .prefix(".seqit-doctor.")
        .tempfile_in(dir);
    match probe {
        Ok(_) => Check::new(
            "run dir",
            Status::Ok,
            format!("`{}` is writable", dir.display()),
            details,
        ),
        Err(error) => Check::new(
            "run dir",
            Status::Fail,
            format!("cannot write in `{}`: {error}", dir.display()),
            details,
        )
        .hint("run from a writable directory, or give `--run-dir`"),
    }
}
