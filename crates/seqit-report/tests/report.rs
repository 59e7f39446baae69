//! Reports from a run directory laid out as the stages write it (file names and
//! formats of `seqit augment`, `seqit train`, `seqit eval seqeval|humaneval`), checked
//! by value, and the HTML page rendered in headless Chromium.

use std::path::Path;
use std::process::Command;

use serde_json::json;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn jsonl(items: &[serde_json::Value]) -> String {
    items.iter().map(|v| v.to_string() + "\n").collect()
}

fn summary(mean: f64, lo: f64, hi: f64, n: u64) -> serde_json::Value {
    json!({"n": n, "mean": mean, "ci95": [lo, hi]})
}

fn seqeval_metrics(
    following: [f64; 4],
    quality: [f64; 4],
    overall: (f64, f64),
) -> serde_json::Value {
    let depth = |d: usize| {
        json!({
            "items": 3,
            "following_rate": summary(following[d], following[d] - 0.1, (following[d] + 0.1).min(1.0), 3),
            "chain_following_rate": summary(following[d], 0.0, 1.0, 3),
            "step_attempt_rate": {"steps": 6, "mean": following[d]},
            "quality": summary(quality[d], quality[d] - 0.5, quality[d] + 0.5, 3),
            "win_rate": {"n": 0, "mean": null, "ci95": null},
            "parse_failures": {"following": 0, "quality": 0},
        })
    };
    json!({
        "benchmark": "seqeval",
        "scores": {
            "overall": {
                "items": 12,
                "following_rate": summary(overall.0, overall.0 - 0.2, overall.0 + 0.2, 12),
                "quality": summary(overall.1, overall.1 - 0.4, overall.1 + 0.4, 12),
                "win_rate": {"n": 0, "mean": null, "ci95": null},
            },
            "by_depth": {"1": depth(0), "2": depth(1), "3": depth(2), "4": depth(3)},
        },
        "settings": {"model": "x", "max_tokens": 64},
    })
}

/// A finished quickstart-like run: augmentation, two trainings, SeqEval and HumanEval.
fn fixture_run(run: &Path) {
    write(
        &run.join("augment/sit.jsonl.stats.json"),
        &json!({
            "items": 4, "iterations": 2, "paper_reference": "Alpaca (52k)",
            "per_iteration": [
                {"iteration": 1, "classified": 4, "counts": {"A": 1, "B": 2, "C": 1, "D": 0},
                 "shares": {"A": 25.0, "B": 50.0, "C": 25.0, "D": 0.0},
                 "paper_shares": {"A": 7.0, "B": 51.0, "C": 25.0, "D": 17.0},
                 "unparsed_classifications": 0, "failed_rewrites": 1},
                {"iteration": 2, "classified": 4, "counts": {"A": 0, "B": 0, "C": 1, "D": 3},
                 "shares": {"A": 0.0, "B": 0.0, "C": 25.0, "D": 75.0},
                 "paper_shares": {"A": 30.0, "B": 4.0, "C": 3.0, "D": 63.0},
                 "unparsed_classifications": 1, "failed_rewrites": 0}
            ],
            "rewritten_items": 3, "failed_splits": 0,
            "teachers": {"smollm2-135m": {"requests": 20, "prompt_tokens": 9000, "completion_tokens": 800}},
            "cost": null
        })
        .to_string(),
    );
    let alpaca = |instruction: &str, output: &str| json!({"instruction": instruction, "input": "", "output": output});
    write(
        &run.join("augment/it.jsonl"),
        &jsonl(&[
            alpaca("Name a fruit.", "Apple."),
            alpaca("Add 2 and 3.", "5"),
        ]),
    );
    write(
        &run.join("augment/sit.jsonl"),
        &jsonl(&[
            alpaca(
                "First list three colours, then name a fruit of one of those colours.",
                "Red, green, yellow. A red fruit: apple.",
            ),
            alpaca(
                "Add 2 and 3, then double the result.",
                "2 + 3 = 5; doubled, 10.",
            ),
        ]),
    );
    for (name, data, losses) in [
        ("it", "it", [2.5, 2.0, 1.6]),
        ("sit", "sit", [2.6, 1.9, 1.2]),
    ] {
        let dir = run.join(format!("train-{name}"));
        let lines: Vec<_> = losses
            .iter()
            .enumerate()
            .map(|(i, l)| json!({"step": i + 1, "epoch": 0, "loss": l, "lr": 1e-4, "grad_norm": 1.0, "tokens": 100, "trained_tokens": 40, "tokens_per_second": 50.0}))
            .collect();
        write(&dir.join("metrics.jsonl"), &jsonl(&lines));
        write(&dir.join("manifest.json"), &json!({"stage": format!("train-{name}"), "config": {"train": {"name": name, "data": data}}}).to_string());
    }
    for (model, following, quality, overall) in [
        (
            "it",
            [0.8, 0.5, 0.3, 0.2],
            [3.5, 3.0, 2.5, 2.0],
            (0.45, 2.75),
        ),
        (
            "sit",
            [0.9, 0.7, 0.6, 0.5],
            [3.8, 3.4, 3.1, 2.9],
            (0.675, 3.3),
        ),
    ] {
        let dir = run.join(format!("eval-seqeval-{model}"));
        write(
            &dir.join("metrics.json"),
            &seqeval_metrics(following, quality, overall).to_string(),
        );
        write(
            &dir.join("manifest.json"),
            &json!({"config": {"eval": {"benchmark": "seqeval"}, "target": model}}).to_string(),
        );
        write(
            &dir.join("items.jsonl"),
            &jsonl(&[json!({
                "id": "p1", "depth": 2,
                "prompt": format!("Summarise <the> text, then translate it ({model})"),
                "output": "A summary. Une traduction.",
                "sub_steps": ["Summarise the text", "Translate the summary"],
                "following": {"steps": [true, model == "sit"], "all_steps": model == "sit", "chain": model == "sit", "judge_raw": "Step 1: yes"},
                "quality": {"rating": 4.0, "judge_raw": "Rating: 4"},
                "pairwise": null
            })]),
        );
    }
    // Program-checked chains: chain and step pass rates by depth, pass rates by kind.
    for (model, chain, capitals) in [
        ("it", [0.4, 0.2, 0.1, 0.0], 0.5),
        ("sit", [0.5, 0.3, 0.2, 0.1], 0.75),
    ] {
        let depth = |d: usize| {
            json!({"items": 50, "verifiable": {
                "items": 50,
                "chain_pass_rate": summary(chain[d], 0.0, chain[d] + 0.1, 50),
                "step_pass_rate": summary(chain[d] + 0.2, chain[d], chain[d] + 0.3, 50),
            }})
        };
        let dir = run.join(format!("eval-verifiable-{model}"));
        write(
            &dir.join("metrics.json"),
            &json!({"benchmark": "seqeval", "scores": {
                "overall": {"items": 200, "verifiable": {"chain_pass_rate": summary(0.175, 0.1, 0.25, 200), "first_failed_step": {"1": 100}}},
                "by_depth": {"1": depth(0), "2": depth(1), "3": depth(2), "4": depth(3)},
                "verifiable_by_kind": {
                    "all_capitals": {"group": "format", "steps": 4, "pass_rate": capitals, "done_rate": capitals},
                    "sum": {"group": "computation", "steps": 10, "pass_rate": 0.1, "done_rate": 0.2},
                    "count_words": {"group": "dependent", "steps": 10, "pass_rate": 0.0, "done_rate": 0.0},
                },
            }})
            .to_string(),
        );
        write(
            &dir.join("manifest.json"),
            &json!({"config": {"eval": {"benchmark": "seqeval", "name": "verifiable"}, "target": model}}).to_string(),
        );
        // 20 chains: IT passes the first 2, SIT the first 8 (and no other).
        let passed = if model == "it" { 2 } else { 8 };
        let items: Vec<serde_json::Value> = (0..20)
            .map(|i| json!({"id": format!("v-{i}"), "depth": 1, "verifiable": {"chain_passed": i < passed}}))
            .collect();
        write(&dir.join("items.jsonl"), &jsonl(&items));
    }
    for (model, pass1) in [("it", 0.125), ("sit", 0.25)] {
        let dir = run.join(format!("eval-humaneval-{model}"));
        write(
            &dir.join("metrics.json"),
            &json!({"benchmark": "humaneval", "pass@k": {"pass@1": pass1}, "skipped_k": [], "problems": 164, "samples": 164, "outcomes": {"passed": 20}, "settings": {}}).to_string(),
        );
        write(
            &dir.join("manifest.json"),
            &json!({"config": {"eval": {"benchmark": "humaneval"}, "target": model}}).to_string(),
        );
    }
}

#[test]
fn markdown_summary_has_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("quick");
    fixture_run(&run);
    let data = seqit_report::load_runs(&[run]).unwrap();
    let md = seqit_report::render_markdown(&data, &seqit_report::Options::default());
    assert!(
        md.contains("| 1 | 4 | 25.0% | 50.0% | 25.0% | 0.0% | 7/51/25/17 |"),
        "{md}"
    );
    assert!(
        md.contains("| 2 | 4 | 0.0% | 0.0% | 25.0% | 75.0% | 30/4/3/63 |"),
        "{md}"
    );
    assert!(
        md.contains("| sit (SIT) | 3 | 2.6000 | 1.2000 | 300 |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| seqeval | following_rate | 0.450 [0.250, 0.650] | 0.675 [0.475, 0.875] | +0.225 |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| seqeval | quality | 2.750 [2.350, 3.150] | 3.300 [2.900, 3.700] | +0.550 |"),
        "{md}"
    );
    assert!(
        md.contains("| humaneval | pass@1 | 0.125 | 0.250 | +0.125 |"),
        "{md}"
    );
    assert!(
        md.contains("| 3 | 0.600 [0.500, 0.700] | 3.100 [2.600, 3.600] |"),
        "{md}"
    );
    assert!(!md.contains("win_rate"), "null scores are left out: {md}");
    assert!(
        md.contains("| 2 | 0.300 [0.000, 0.400] | 0.500 [0.300, 0.600] |"),
        "the verifiable SIT eval by depth: {md}"
    );
    assert!(
        md.contains("| seqeval | verifiable.chain_pass_rate | 0.175 [0.100, 0.250] | 0.175 [0.100, 0.250] | +0.000 |"),
        "{md}"
    );
    assert!(
        !md.contains("first_failed_step") && !md.contains("all_capitals"),
        "{md}"
    );
    // IT data: "Name a fruit." (3 words) and "Add 2 and 3." (4 words); 1-word answers
    assert!(md.contains("| IT | 2 | 3.5 | 1.0 |"), "{md}");
}

#[test]
fn html_page_renders_in_chromium_with_charts_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("quick");
    fixture_run(&run);
    let data = seqit_report::load_runs(&[run]).unwrap();
    let html = seqit_report::render_html(
        &data,
        &seqit_report::Options {
            title: Some("IT vs SIT".into()),
        },
    );
    assert_eq!(
        html.matches("<svg class=\"chart").count(),
        9,
        "shares, 2 length histograms, loss, 4 depth plots, step kinds"
    );
    // Step kinds, hardest first, with each model's pass rate and steps checked.
    let kinds = &html[html
        .find("id=\"step-kinds\"")
        .expect("a step-kinds section")..];
    let order: Vec<usize> = ["count_words", "sum", "all_capitals"]
        .iter()
        .map(|k| kinds.find(&format!("<td>{k}</td>")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{kinds}");
    assert!(
        kinds.contains("<td>0.75 <span class=\"muted\">(4)</span></td>"),
        "{kinds}"
    );
    assert!(!html.contains("<script"), "self-contained and static");
    assert!(
        html.contains("Summarise &lt;the&gt; text"),
        "sample text is escaped"
    );
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).unwrap();

    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(chromium) = chromium else {
        eprintln!("skipping the browser check: no chromium installed (Debian package `chromium`)");
        return;
    };
    let profile = dir.path().join("profile");
    let browse = |extra: &[&str]| {
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()));
        cmd.output().unwrap()
    };
    let out = browse(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    assert!(dom.contains("<h1>IT vs SIT</h1>"), "{dom}");
    assert_eq!(dom.matches("<svg class=\"chart").count(), 9);
    assert_eq!(
        dom.matches("<polyline class=\"series\"").count(),
        2 + 4 * 2,
        "loss: IT, SIT; 4 depth plots: 2 each"
    );
    assert!(dom.contains("<section id=\"verdict\">"), "{dom}");
    for table in ["shares", "lengths", "training", "results"] {
        assert!(
            dom.contains(&format!("<table class=\"{table}\">")),
            "table {table}"
        );
    }
    assert!(
        dom.contains("<td class=\"pos\">+0.225</td>"),
        "delta of the following rate"
    );
    // One judged sample per SeqEval model, and the 20 checked chains of each.
    assert_eq!(
        dom.matches("<details class=\"sample\">").count(),
        2 + 2 * 20
    );

    let shot = dir.path().join("report.png");
    let out = browse(&[
        "--window-size=1200,4000",
        &format!("--screenshot={}", shot.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
}
