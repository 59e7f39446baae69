//! Verdict probabilities from a judge's token log-probabilities (G-Eval's method):
//! instead of the one verdict the judge wrote, the probability it gave each possible
//! verdict at that position — a 1–5 rating becomes Σ p(k)·k, a yes/no verdict p(yes),
//! a pairwise verdict p(A). Smoother than parsed verdicts, and defined even where the
//! judge's greedy choice sits on a thin margin.
//!
//! Probabilities come from the verdict token and the alternatives the backend returned
//! for its position (`top_logprobs`), normalised over the labels among them; spellings
//! of one label (`"yes"`, `" yes"`, `"Yes"`) are added up.

use seqit_core::TokenLogprob;

/// Alternatives asked for per token when a judge's verdicts are scored this way.
pub const JUDGE_TOP_LOGPROBS: usize = 20;

/// How likely each of `labels` was at this position, normalised over the labels; `None`
/// when the backend gave none of them any probability.
pub fn label_distribution(token: &TokenLogprob, labels: &[&str]) -> Option<Vec<f64>> {
    let mut seen: Vec<&str> = Vec::new();
    let mut mass = vec![0.0; labels.len()];
    let candidates = std::iter::once((token.token.as_str(), token.logprob))
        .chain(token.top.iter().map(|t| (t.token.as_str(), t.logprob)));
    for (text, logprob) in candidates {
        if seen.contains(&text) {
            continue;
        }
        seen.push(text);
        let word = text.trim();
        if let Some(label) = labels.iter().position(|l| l.eq_ignore_ascii_case(word)) {
            mass[label] += f64::from(logprob).exp();
        }
    }
    let total: f64 = mass.iter().sum();
    (total > 0.0).then(|| mass.iter().map(|m| m / total).collect())
}

/// Positions of the tokens that spell one of `labels` (trimmed, any case), in order.
pub fn verdict_positions(logprobs: &[TokenLogprob], labels: &[&str]) -> Vec<usize> {
    logprobs
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            labels
                .iter()
                .any(|l| l.eq_ignore_ascii_case(t.token.trim()))
        })
        .map(|(i, _)| i)
        .collect()
}

/// The expected rating Σ p(k)·k at the last token that is a rating in `low..=high`
/// (single-token ratings only: 1–9).
pub fn expected_rating(logprobs: &[TokenLogprob], low: u32, high: u32) -> Option<f64> {
    let labels: Vec<String> = (low..=high).map(|k| k.to_string()).collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let at = *verdict_positions(logprobs, &labels).last()?;
    let distribution = label_distribution(&logprobs[at], &labels)?;
    Some(
        distribution
            .iter()
            .zip(low..=high)
            .map(|(p, k)| p * f64::from(k))
            .sum(),
    )
}

/// p(yes) at each yes/no verdict, in order.
pub fn yes_probabilities(logprobs: &[TokenLogprob]) -> Vec<f64> {
    let labels = ["yes", "no"];
    verdict_positions(logprobs, &labels)
        .into_iter()
        .filter_map(|at| label_distribution(&logprobs[at], &labels).map(|d| d[0]))
        .collect()
}

/// p(A), p(B), p(tie) at the last pairwise verdict.
pub fn winner_distribution(logprobs: &[TokenLogprob]) -> Option<[f64; 3]> {
    let labels = ["A", "B", "tie"];
    let at = *verdict_positions(logprobs, &labels).last()?;
    let d = label_distribution(&logprobs[at], &labels)?;
    Some([d[0], d[1], d[2]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqit_core::TopLogprob;

    fn token(text: &str, logprob: f32, top: &[(&str, f32)]) -> TokenLogprob {
        TokenLogprob {
            token: text.into(),
            bytes: text.as_bytes().to_vec(),
            logprob,
            top: top
                .iter()
                .map(|(t, lp)| TopLogprob {
                    token: (*t).into(),
                    bytes: t.as_bytes().to_vec(),
                    logprob: *lp,
                })
                .collect(),
        }
    }

    #[test]
    fn expected_rating_weights_every_score() {
        let half = 0.5f32.ln();
        let quarter = 0.25f32.ln();
        let tokens = [
            token("Rating", -0.1, &[]),
            token(":", -0.1, &[]),
            token(
                " 4",
                half,
                &[(" 4", half), (" 5", quarter), (" 2", quarter), ("x", -0.1)],
            ),
        ];
        // 0.5·4 + 0.25·5 + 0.25·2 = 3.75
        let expected = expected_rating(&tokens, 1, 5).unwrap();
        assert!((expected - 3.75).abs() < 1e-6, "{expected}");
        assert_eq!(expected_rating(&tokens[..2], 1, 5), None);
    }

    #[test]
    fn spellings_of_a_label_add_up_and_others_are_ignored() {
        let t = token(
            " yes",
            0.4f32.ln(),
            &[
                (" yes", 0.4f32.ln()),
                ("Yes", 0.2f32.ln()),
                (" no", 0.2f32.ln()),
                (" maybe", 0.2f32.ln()),
            ],
        );
        let d = label_distribution(&t, &["yes", "no"]).unwrap();
        assert!((d[0] - 0.75).abs() < 1e-6, "{d:?}");
        let tokens = [
            token("Task", 0.0, &[]),
            t,
            token(" no", -0.01, &[(" no", -0.01)]),
        ];
        let p = yes_probabilities(&tokens);
        assert_eq!(p.len(), 2);
        assert!((p[0] - 0.75).abs() < 1e-6 && p[1] == 0.0, "{p:?}");
    }

    #[test]
    fn winner_distribution_reads_the_last_verdict() {
        let tokens = [
            token(" A", -0.1, &[]),
            token(
                " B",
                0.6f32.ln(),
                &[(" A", 0.3f32.ln()), (" tie", 0.1f32.ln())],
            ),
        ];
        let [a, b, tie] = winner_distribution(&tokens).unwrap();
        assert!((a - 0.3).abs() < 1e-6 && (b - 0.6).abs() < 1e-6 && (tie - 0.1).abs() < 1e-6);
    }
}
