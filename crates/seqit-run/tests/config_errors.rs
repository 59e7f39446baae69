//! Config problems are reported with the file, the line and the key path, all at once,
//! before any work starts.

use std::path::Path;

use seqit_run::{load, ConfigError};

const GOOD: &str = r#"[run]
output = "run"

[models.smol]
model = "smollm2-135m"

[data]
seed = "seed.jsonl"

[augment]
teacher = "smol"
iterations = 2

[[train]]
name = "it"
data = "it"
base = "smol"

[[train]]
name = "sit"
data = "sit"
base = "smol"
"#;

fn errors(config: &str) -> (tempfile::TempDir, Vec<ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seed.jsonl"),
        "{\"instruction\": \"hi\", \"output\": \"hello\"}\n",
    )
    .unwrap();
    let path = dir.path().join("exp.toml");
    std::fs::write(&path, config).unwrap();
    let errors = match load(&path, None) {
        Ok(_) => vec![],
        Err(e) => e.0,
    };
    (dir, errors)
}

fn one(config: &str) -> ConfigError {
    let (_dir, mut errors) = errors(config);
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.remove(0)
}

#[test]
fn the_good_config_loads_with_paths_next_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seed.jsonl"), "{}\n").unwrap();
    let path = dir.path().join("exp.toml");
    std::fs::write(&path, GOOD).unwrap();
    let exp = load(&path, None).unwrap();
    assert_eq!(exp.run_dir, dir.path().join("run"));
    assert_eq!(
        exp.config.data.seed.as_deref(),
        Some(dir.path().join("seed.jsonl").as_path())
    );
    assert_eq!(exp.config.train.len(), 2);
    assert_eq!(exp.config.augment.as_ref().unwrap().iterations, 2);
}

#[test]
fn unknown_key_names_its_path_and_line() {
    let config = GOOD.replace("iterations = 2", "iterations = 2\nitterations = 3");
    let e = one(&config);
    assert_eq!(e.key, "augment.itterations");
    assert_eq!(e.line, Some(13));
    assert!(
        e.message.contains("unknown field `itterations`"),
        "{}",
        e.message
    );
    let text = e.to_string();
    assert!(
        text.contains("exp.toml:13: `augment.itterations`: unknown field"),
        "{text}"
    );
}

#[test]
fn unknown_key_in_an_array_of_tables() {
    let config = GOOD.replace("name = \"sit\"", "name = \"sit\"\nlora_rnak = 8");
    let e = one(&config);
    assert_eq!(e.key, "train[1].lora_rnak");
    assert_eq!(e.line, Some(21));
}

#[test]
fn wrong_type_names_its_path_and_line() {
    let config = GOOD.replace("iterations = 2", "iterations = \"two\"");
    let e = one(&config);
    assert_eq!(e.key, "augment.iterations");
    assert_eq!(e.line, Some(12));
    assert!(e.message.contains("invalid type"), "{}", e.message);

    let config = GOOD.replace("data = \"sit\"", "data = \"both\"");
    let e = one(&config);
    assert_eq!(e.key, "train[1].data");
    assert_eq!(e.line, Some(21));
    assert!(
        e.message.contains("unknown variant `both`"),
        "{}",
        e.message
    );
}

#[test]
fn missing_file_names_its_key_and_line() {
    let config = GOOD.replace("seed = \"seed.jsonl\"", "seed = \"nowhere.jsonl\"");
    let e = one(&config);
    assert_eq!(e.key, "data.seed");
    assert_eq!(e.line, Some(8));
    assert!(
        e.message.contains("nowhere.jsonl` does not exist"),
        "{}",
        e.message
    );
}

#[test]
fn undefined_model_names_its_key_line_and_the_defined_ones() {
    let config = GOOD.replace(
        "base = \"smol\"\n\n[[train]]",
        "base = \"llama\"\n\n[[train]]",
    );
    let e = one(&config);
    assert_eq!(e.key, "train[0].base");
    assert_eq!(e.line, Some(17));
    assert!(
        e.message.contains("model `llama` is not defined"),
        "{}",
        e.message
    );
    assert!(e.message.contains("defined: smol"), "{}", e.message);
}

#[test]
fn eval_of_an_unknown_model_and_every_problem_at_once() {
    let config = format!(
        "{GOOD}\n[[eval]]\nbenchmark = \"gsm8k\"\nmodels = [\"it\", \"ghost\"]\ndata = \"gsm8k.jsonl\"\n"
    )
    .replace("teacher = \"smol\"", "teacher = \"big\"");
    let (_dir, errors) = errors(&config);
    let keys: Vec<(&str, Option<usize>)> =
        errors.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        keys,
        [
            ("eval[0].data", Some(27)),
            ("augment.teacher", Some(11)),
            ("eval[0].models[1]", Some(26))
        ],
        "{errors:?}"
    );
}

/// Options a benchmark's command does not take are refused with their key and line.
#[test]
fn options_a_benchmark_does_not_take() {
    let config = format!(
        "{GOOD}\n[[eval]]\nbenchmark = \"gsm8k\"\nmodels = [\"it\"]\njudge = \"smol\"\ntemperature = 0.8\nexemplars = \".\"\n"
    );
    let (_dir, errors) = errors(&config);
    let found: Vec<(&str, Option<usize>, &str)> = errors
        .iter()
        .map(|e| (e.key.as_str(), e.line, e.message.as_str()))
        .collect();
    assert!(
        found.contains(&("eval[0].judge", Some(27), "`gsm8k` does not take `judge`")),
        "{errors:?}"
    );
    assert!(
        found.contains(&(
            "eval[0].temperature",
            Some(28),
            "`gsm8k` does not take `temperature`"
        )),
        "{errors:?}"
    );
    assert!(
        found.contains(&(
            "eval[0].exemplars",
            Some(29),
            "`gsm8k` does not take `exemplars`"
        )),
        "{errors:?}"
    );
}

#[test]
fn syntax_error_has_a_line() {
    let e = one("[run]\noutput = \n");
    assert_eq!(e.line, Some(2));
    assert_eq!(e.key, "");
}

#[test]
fn missing_required_section() {
    let e = one("[run]\noutput = \"x\"\n");
    assert!(e.message.contains("missing field `data`"), "{}", e.message);
}

#[test]
fn display_shows_file_line_and_key() {
    let e = ConfigError {
        file: Path::new("exp.toml").to_path_buf(),
        line: Some(3),
        key: "train[0].base".into(),
        message: "model `x` is not defined".into(),
    };
    assert_eq!(
        e.to_string(),
        "exp.toml:3: `train[0].base`: model `x` is not defined"
    );
}

/// Launched trainers and served models: what the runner cannot do is refused with its
/// key and line.
#[test]
fn launch_and_serve_mistakes() {
    // A launch command without a recipe to run, with a placeholder that does not exist.
    let config = GOOD.replacen(
        "base = \"smol\"\n",
        "base = \"smol\"\nlaunch = \"torchrun train.py {recipes}\"\n",
        1,
    );
    let (_dir, found) = errors(&config);
    let got: Vec<(&str, Option<usize>)> = found.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [("train[0].launch", Some(18)), ("train[0].launch", Some(18))],
        "{found:?}"
    );
    assert!(
        found[0].message.contains("give `handoff` too"),
        "{}",
        found[0].message
    );
    assert!(
        found[1].message.contains("unknown placeholder {recipes}"),
        "{}",
        found[1].message
    );

    // A served model with an endpoint, and one whose command loads nothing named.
    let config = GOOD.replace(
        "[models.smol]\nmodel = \"smollm2-135m\"\n",
        "[models.smol]\nmodel = \"smollm2-135m\"\n\n[models.big]\nmodel = \"big\"\nendpoint = \"http://localhost:8000/v1\"\nserve = \"vllm serve {checkpoint} --port {port}\"\n",
    );
    let (_dir, found) = errors(&config);
    let keys: Vec<&str> = found.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["models.big.endpoint", "models.big.checkpoint"],
        "{found:?}"
    );

    // A trained run's served model takes its checkpoint from the run.
    let config = GOOD
        .replace(
            "[models.smol]\nmodel = \"smollm2-135m\"\n",
            "[models.smol]\nmodel = \"smollm2-135m\"\n\n[models.served]\nmodel = \"it-model\"\ncheckpoint = \"elsewhere\"\nserve = \"vllm serve {checkpoint} --port {port}\"\n",
        )
        .replacen("base = \"smol\"\n", "base = \"smol\"\nserve_as = \"served\"\n", 1);
    let e = one(&config);
    assert_eq!(e.key, "models.served.checkpoint");
    assert!(e.message.contains("drop `checkpoint`"), "{}", e.message);
}

/// `preset = "paper"` fills in the paper's recipe and refuses settings that differ from
/// it, each with its key.
#[test]
fn the_paper_preset_refuses_what_differs_from_the_paper() {
    let config = GOOD.replacen(
        "base = \"smol\"\n",
        "base = \"smol\"\npreset = \"paper\"\nlr = 1e-4\nmax_len = 512\nbatch_size = 3\n",
        1,
    );
    let (_dir, found) = errors(&config);
    let keys: Vec<&str> = found.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "train[0].method",
            "train[0].lr",
            "train[0].max_len",
            "train[0].batch_size"
        ],
        "{found:?}"
    );
    assert!(
        found[1]
            .message
            .contains("trains with lr = 0.00002, not 0.0001"),
        "{}",
        found[1].message
    );
    // Full fine-tuning with the paper's values given or left out loads.
    let config = GOOD.replacen(
        "base = \"smol\"\n",
        "base = \"smol\"\npreset = \"paper\"\nmethod = \"full\"\nbatch_size = 8\n",
        1,
    );
    let (_dir, found) = errors(&config);
    assert!(found.is_empty(), "{found:?}");
}
