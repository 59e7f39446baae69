//! AlpacaEval-style pairwise evaluation: alpaca_eval output files (a JSON list of
//! `{instruction, output, generator, …}`), a judge comparing the model's output with the
//! reference's in both orders, alpaca_eval-compatible annotations, the win rate with its
//! standard error, and a length-controlled win rate ([`length_controlled`]).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{EvalError, Result};

/// One output record of an alpaca_eval file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// The prompt.
    pub instruction: String,
    /// The model's answer.
    pub output: String,
    /// The model's name.
    #[serde(default)]
    pub generator: Option<String>,
    /// The subset (`helpful_base`, …), kept when present.
    #[serde(default)]
    pub dataset: Option<String>,
}

/// Reads an alpaca_eval outputs file (a JSON list; JSONL is accepted too).
pub fn read_outputs(path: &Path) -> Result<Vec<Output>> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| EvalError::File(seqit_core::FileError::read(path, source)))?;
    if text.trim_start().starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(&text).map_err(|err| EvalError::Parse {
            path: path.to_path_buf(),
            line: err.line(),
            message: format!("not a JSON list of outputs: {err}"),
        })?;
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                serde_json::from_value(v).map_err(|err| EvalError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: format!(
                        "record {}: {err} (expected `instruction` and `output` strings)",
                        i + 1
                    ),
                })
            })
            .collect()
    } else {
        crate::io::read_jsonl(path)?
            .into_iter()
            .map(|(line, record)| {
                crate::io::from_record(record, path, line, "`instruction` and `output` strings")
            })
            .collect()
    }
}

/// Win rate (percent) and its standard error from per-item scores in `[0, 1]` (1 the
/// model wins, ½ a tie), as alpaca_eval reports them (`standard_error` is the sample
/// standard deviation over √n, in percent).
pub fn win_rate(scores: &[f64]) -> Value {
    let n = scores.len();
    let mean = if n == 0 {
        0.0
    } else {
        scores.iter().sum::<f64>() / n as f64
    };
    let se = if n < 2 {
        0.0
    } else {
        let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        (var / n as f64).sqrt()
    };
    json!({
        "win_rate": 100.0 * mean,
        "standard_error": 100.0 * se,
        "n_wins": scores.iter().filter(|&&s| s > 0.5).count(),
        "n_wins_base": scores.iter().filter(|&&s| s < 0.5).count(),
        "n_draws": scores.iter().filter(|&&s| s == 0.5).count(),
        "n_total": n,
    })
}

/// Length-controlled win rate (percent): the win rate the judge would give at equal
/// output lengths.
///
/// Each item's score `p` (1 win, ½ tie, 0 loss) is regressed on the squashed length
/// difference `x = tanh((len_model − len_reference) / sd)`, lengths in characters, `sd`
/// the standard deviation of the differences: `p ≈ σ(a + b·x)`, fitted by maximum
/// likelihood with soft labels (Newton's method, a 10⁻⁴ ridge on `b` so that
/// perfectly separated data stay finite). The result is `100 · σ(a)`, the fitted
/// preference at zero length difference. This is the length term of alpaca_eval 2.0's
/// GLM without its per-instruction difficulty terms, which need many models' outputs.
/// `None` for no items.
pub fn length_controlled(
    scores: &[f64],
    model_lengths: &[usize],
    reference_lengths: &[usize],
) -> Option<f64> {
    let n = scores.len();
    if n == 0 || model_lengths.len() != n || reference_lengths.len() != n {
        return None;
    }
    let diffs: Vec<f64> = model_lengths
        .iter()
        .zip(reference_lengths)
        .map(|(&m, &r)| m as f64 - r as f64)
        .collect();
    let mean_diff = diffs.iter().sum::<f64>() / n as f64;
    let sd = (diffs.iter().map(|d| (d - mean_diff).powi(2)).sum::<f64>() / n as f64).sqrt();
    let xs: Vec<f64> = diffs
        .iter()
        .map(|d| if sd > 0.0 { (d / sd).tanh() } else { 0.0 })
        .collect();
    const RIDGE: f64 = 1e-4;
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for _ in 0..100 {
        // Gradient and Hessian of the penalised negative log likelihood.
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, RIDGE * b, 0.0, 0.0, RIDGE);
        for (&x, &p) in xs.iter().zip(scores) {
            let q = 1.0 / (1.0 + (-(a + b * x)).exp());
            let w = q * (1.0 - q);
            ga += q - p;
            gb += (q - p) * x;
            haa += w;
            hab += w * x;
            hbb += w * x * x;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-12 {
            // No spread in x: the intercept alone (the plain win rate's logit).
            let mean = scores.iter().sum::<f64>() / n as f64;
            return Some(100.0 * mean);
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() < 1e-10 && db.abs() < 1e-10 {
            break;
        }
    }
    Some(100.0 / (1.0 + (-a).exp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win_rate_and_standard_error_by_hand() {
        // Mean 0.5; sample variance ((.5)^2 + (.5)^2 + 0 + 0) / 3 = 1/6; se = sqrt(1/6 / 4).
        let w = win_rate(&[1.0, 0.0, 0.5, 0.5]);
        assert!((w["win_rate"].as_f64().unwrap() - 50.0).abs() < 1e-12);
        let se = 100.0 * (1.0f64 / 6.0 / 4.0).sqrt();
        assert!((w["standard_error"].as_f64().unwrap() - se).abs() < 1e-9);
        assert_eq!(
            (w["n_wins"].as_u64(), w["n_draws"].as_u64()),
            (Some(1), Some(2))
        );
    }

    #[test]
    fn length_control_removes_a_preference_for_longer_outputs() {
        // Two length differences only (+10 twice, -10 once), so the fit reproduces the
        // group means: σ(a + b·c) = (0.9 + 0.7) / 2 = 0.8 and σ(a − b·c) = 0.2, hence
        // a = (logit 0.8 + logit 0.2) / 2 = 0: 50% at equal length, against a raw 60%.
        let scores = [0.9, 0.7, 0.2];
        let lc = length_controlled(&scores, &[20, 20, 0], &[10, 10, 10]).unwrap();
        assert!((lc - 50.0).abs() < 0.05, "{lc}");
        let raw = win_rate(&scores)["win_rate"].as_f64().unwrap();
        assert!((raw - 60.0).abs() < 1e-9);
        // Equal lengths everywhere: the plain win rate.
        let lc = length_controlled(&[1.0, 0.0, 1.0], &[5, 5, 5], &[5, 5, 5]).unwrap();
        assert!((lc - 200.0 / 3.0).abs() < 1e-9);
        // Perfectly separated data stay finite.
        let lc = length_controlled(&[1.0, 1.0, 0.0, 0.0], &[9, 9, 1, 1], &[5, 5, 5, 5]).unwrap();
        assert!(lc.is_finite() && (lc - 50.0).abs() < 1.0, "{lc}");
    }
}
