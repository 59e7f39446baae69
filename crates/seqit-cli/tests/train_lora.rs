//! `seqit train` in LoRA mode as a real process: settings from a config file and flags,
//! validation loss, the PEFT adapter that `seqit generate --adapter` applies, the merged
//! export, and `seqit data show`.

use std::path::Path;

use seqit_testkit::cli::Seqit;
use seqit_testkit::tiny_hf_dir;

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

fn data(path: &Path, n: usize) -> String {
    let items: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"instruction": format!("item {i}: repeat the word"), "output": format!("word {i}")}))
        .collect();
    std::fs::write(path, serde_json::to_string(&items).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

/// A fresh directory with a tiny model (`base/`) and `n` training items (`train.json`),
/// the paths as arguments.
fn model_and_data(n: usize) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_hf_dir(&dir.path().join("base")).display().to_string();
    let train = data(&dir.path().join("train.json"), n);
    (dir, model, train)
}

#[test]
fn lora_run_from_config_exports_an_adapter_that_generate_applies() {
    let (dir, model, train) = model_and_data(4);
    let eval = data(&dir.path().join("eval.json"), 2);
    let run = dir.path().join("run");
    let config = dir.path().join("train.toml");
    // The file says 2 epochs; the flag below wins.
    std::fs::write(
        &config,
        format!(
            "model = {model:?}\ndata = {train:?}\ntemplate = \"chatml\"\nlora-rank = 8\nlora-alpha = 16\nlora-targets = \"q,k,v,o,gate,up,down\"\nlr = 1e-2\nepochs = 2\nbatch-size = 2\nwarmup-ratio = 0.0\nschedule = \"constant\"\nseed = 3\n"
        ),
    )
    .unwrap();
    let out = SEQIT.output([
        "train",
        "--config",
        config.to_str().unwrap(),
        "--output",
        run.to_str().unwrap(),
        "--epochs",
        "100",
        "--eval-data",
        &eval,
        "--eval-every",
        "50",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("LoRA r=8 alpha=16"), "{stderr}");

    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(metrics.len(), 200, "100 epochs of 2 updates (the flag won)");
    let evaluated: Vec<u64> = metrics
        .iter()
        .filter(|m| m["eval_loss"].is_number())
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(evaluated, vec![50, 100, 150, 200]);
    let first = metrics[0]["loss"].as_f64().unwrap();
    let last = metrics[199]["loss"].as_f64().unwrap();
    assert!(last < first / 2.0, "loss {first} -> {last}");

    let adapter = run.join("adapter");
    let peft: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(peft["r"], 8);
    assert_eq!(peft["lora_alpha"], 16.0);
    assert_eq!(peft["peft_type"], "LORA");
    assert_eq!(peft["target_modules"].as_array().unwrap().len(), 7);
    assert!(adapter.join("adapter_model.safetensors").exists());

    // Base + adapter and the merged export answer alike, with what was taught.
    let ask = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--prompt",
            "item 2: repeat the word",
            "--max-tokens",
            "8",
        ];
        args.extend_from_slice(extra);
        SEQIT.ok(&args).trim().to_string()
    };
    let with_adapter = ask(&["--model", &model, "--adapter", adapter.to_str().unwrap()]);
    let merged = ask(&["--model", run.join("model").to_str().unwrap()]);
    let base = ask(&["--model", &model]);
    assert_eq!(with_adapter, merged);
    assert_ne!(with_adapter, base, "the adapter changes the model");
}

/// The real default model (SmolLM2-135M-Instruct, converted to an f32 Hugging Face
/// directory) with the paper's LoRA recipe (lr 2e-4, linear decay): four epochs over the
/// 16 sequential instructions of examples/data/sit-demo.jsonl lower the training loss by
/// a clear margin. Deterministic: seeded shuffling and dropout, one machine.
#[test]
fn lora_on_smollm2_learns_the_demo_sit_set() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("smollm2");
    SEQIT.ok(["model", "convert", "--output", model.to_str().unwrap()]);
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/data/sit-demo.jsonl"
    );
    let run = dir.path().join("run");
    SEQIT.ok([
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data,
        "--output",
        run.to_str().unwrap(),
        "--epochs",
        "4",
        "--batch-size",
        "4",
        "--max-len",
        "256",
        "--seed",
        "1",
    ]);
    let losses: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(losses.len(), 16, "4 epochs of 4 updates");
    let mean = |epoch: &[f64]| epoch.iter().sum::<f64>() / epoch.len() as f64;
    let (first, last) = (mean(&losses[..4]), mean(&losses[12..]));
    assert!(
        first > 1.0,
        "the base model does not know the set yet: {first}"
    );
    assert!(
        last < 0.8 * first,
        "epoch-mean loss {first:.3} -> {last:.3}"
    );
}

#[test]
fn bad_settings_are_reported_precisely() {
    let (dir, model, train) = model_and_data(2);
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "epochs = 1\nlora-rnak = 4\n").unwrap();
    let out = SEQIT.output([
        "train",
        "--config",
        config.to_str().unwrap(),
        "--model",
        &model,
        "--data",
        &train,
        "--output",
        dir.path().join("o").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("bad.toml") && err.contains("lora-rnak") && err.contains("line 2"),
        "{err}"
    );

    let out = SEQIT.output([
        "train",
        "--model",
        &model,
        "--data",
        &train,
        "--output",
        dir.path().join("o").to_str().unwrap(),
        "--lora-targets",
        "q,x",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown LoRA target `x`"), "{err}");

    // The config file bypasses clap's value lists: seqit checks the values itself.
    let config = dir.path().join("fp8.toml");
    std::fs::write(&config, "dtype = \"fp8\"\n").unwrap();
    let out = SEQIT.output([
        "train",
        "--model",
        &model,
        "--data",
        &train,
        "--output",
        dir.path().join("o").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dtype `fp8`: expected f32, bf16 or f16"),
        "{err}"
    );
}

#[test]
fn data_show_marks_the_trained_tokens() {
    let (_dir, model, train) = model_and_data(3);
    let shown = SEQIT.ok([
        "data",
        "show",
        &train,
        "--model",
        &model,
        "--template",
        "chatml",
        "--index",
        "2",
    ]);
    // Trained tokens, concatenated, are the answer and its end-of-turn marker.
    let (tokens, summary) = shown.trim_end().rsplit_once('\n').unwrap();
    let mut trained = String::new();
    let mut rest = tokens;
    while let Some(start) = rest.find('[') {
        let end = start + rest[start..].find(']').unwrap();
        let (text, id) = rest[start + 1..end].rsplit_once('|').unwrap();
        assert!(id.parse::<u32>().is_ok(), "{shown}");
        trained.push_str(text);
        rest = &rest[end + 1..];
    }
    assert_eq!(trained, "word 2<|im_end|>", "{shown}");
    assert!(
        shown.contains("(user|") || shown.contains("(<|im_start|>|"),
        "{shown}"
    );
    assert!(summary.contains("trained ([trained], (masked)"), "{shown}");
    let colored = SEQIT.ok([
        "data",
        "show",
        &train,
        "--model",
        &model,
        "--template",
        "chatml",
        "--color",
        "always",
    ]);
    assert!(colored.contains("\x1b[1;32m"), "{colored}");

    let out = SEQIT.output(["data", "show", &train, "--model", &model, "--index", "7"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--index 7 is out of range: the file has 3 records"),
        "{err}"
    );
}

/// `data show --chat-template-var` renders the example as `train` with the same flag will:
/// the closed reasoning block of a Qwen3-style switch appears, masked.
#[test]
fn data_show_renders_with_the_template_variables() {
    let (dir, model, train) = model_and_data(1);
    let template = dir.path().join("switch.jinja");
    std::fs::write(
        &template,
        "{% set closed = enable_thinking is defined and enable_thinking is false %}\
         {% for m in messages %}<|im_start|>{{ m['role'] }}\n\
         {% if m['role'] == 'assistant' and closed %}<think></think>{% endif %}\
         {{ m['content'] }}<|im_end|>\n{% endfor %}\
         {% if add_generation_prompt %}<|im_start|>assistant\n{% if closed %}<think></think>{% endif %}{% endif %}",
    )
    .unwrap();
    let template = template.to_str().unwrap();
    let show = |extra: &[&str]| {
        let mut args = vec!["data", "show", &train, "--model", &model];
        args.extend(["--template", template, "--color", "never"]);
        args.extend(extra);
        SEQIT.ok(args)
    };
    let plain = show(&[]);
    let closed = show(&["--chat-template-var", "enable_thinking=false"]);
    assert!(!plain.contains("think"), "{plain}");
    // Masked tokens are shown in parentheses: the block is prompt, not answer.
    let masked: String = closed
        .split('(')
        .skip(1)
        .filter_map(|piece| piece.split_once(')').map(|(inside, _)| inside))
        .filter_map(|inside| inside.rsplit_once('|').map(|(text, _)| text))
        .collect();
    assert!(masked.contains("<think></think>"), "{closed}");
}
