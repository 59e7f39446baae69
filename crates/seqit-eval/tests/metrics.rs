//! Metrics with hand-computed expected values, and the bootstrap interval on data whose
//! properties are known.

use seqit_eval::extract::Mode;
use seqit_eval::metrics::{
    bootstrap_ci, bootstrap_mean_ci, bootstrap_paired_diff_ci, exact_match, mean, per_language,
    score_xquad, xquad_metrics, Rate, XQUAD_MARKERS,
};
use seqit_eval::tasks::score_number;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn exact_match_on_numbers() {
    assert!(exact_match(Some(72.0), 72.0));
    assert!(exact_match(Some(3.0000000001), 3.0));
    assert!(!exact_match(Some(72.5), 72.0));
    assert!(!exact_match(None, 0.0));
    // GSM8K accuracy of four outputs, three right: 0.75.
    let outputs = [
        ("The answer is 26.", 26.0),
        ("so 1250 + 85 = 1,335. The answer is 1,335.", 1335.0),
        ("The answer is 5.", -5.0),
        ("4 x 2.5 = 10. The answer is 10 cups.", 10.0),
    ];
    let flags: Vec<bool> = outputs
        .iter()
        .map(|(o, gold)| score_number(o, *gold, Mode::Strict, &[], None).correct)
        .collect();
    let rate = Rate::of(flags);
    assert_eq!((rate.hits, rate.total), (3, 4));
    assert!(close(rate.value, 0.75));
    assert_eq!(Rate::of(Vec::<bool>::new()).value, 0.0);
}

#[test]
fn mgsm_mean_weights_languages_equally() {
    // de: 3 of 4 = 0.75; es: 1 of 3 = 1/3; bn: 0 of 1 = 0. Mean = (0.75 + 1/3 + 0) / 3.
    let items = [
        ("de", true),
        ("de", false),
        ("de", true),
        ("de", true),
        ("es", false),
        ("es", false),
        ("es", true),
        ("bn", false),
    ];
    let scores = per_language(items.iter().copied());
    assert!(close(scores.languages["de"].value, 0.75));
    assert!(close(scores.languages["es"].value, 1.0 / 3.0));
    assert_eq!(scores.languages["bn"].value, 0.0);
    assert!(close(scores.mean, (0.75 + 1.0 / 3.0 + 0.0) / 3.0));
    // Not the pooled share (4 of 8 = 0.5).
    assert!((scores.mean - 0.5).abs() > 0.1);
}

#[test]
fn xquad_accuracy_and_follow_rate() {
    let gold = vec!["930 kilómetros".to_string()];
    let outputs = [
        "Translation into English: What is the length of the Ebro?\nAnswer: 930 kilómetros", // followed, right
        "Answer: 910 kilómetros",               // followed, wrong
        "Tiene 930 kilómetros.",                // not followed, right if flexible
        "Answer: unos 930 kilómetros de largo", // followed, right (substring)
    ];
    let flexible: Vec<_> = outputs
        .iter()
        .map(|o| score_xquad(o, &gold, Mode::Flexible, XQUAD_MARKERS))
        .collect();
    let m = xquad_metrics(&flexible);
    assert_eq!(
        (m.accuracy.hits, m.follow_rate.hits, m.accuracy.total),
        (3, 3, 4)
    );
    assert!(close(m.accuracy.value, 0.75) && close(m.follow_rate.value, 0.75));
    let strict: Vec<_> = outputs
        .iter()
        .map(|o| score_xquad(o, &gold, Mode::Strict, XQUAD_MARKERS))
        .collect();
    let m = xquad_metrics(&strict);
    assert!(close(m.accuracy.value, 0.5) && close(m.follow_rate.value, 0.75));
}

#[test]
fn bootstrap_of_constant_data_has_zero_width() {
    let ci = bootstrap_mean_ci(&[0.7; 50], 500, 0.95, 1).unwrap();
    assert!(
        close(ci.low, 0.7) && close(ci.estimate, 0.7) && close(ci.high, 0.7),
        "{ci:?}"
    );
    assert_eq!(ci.low, ci.high);
    assert!(bootstrap_mean_ci(&[], 500, 0.95, 1).is_none());
    assert!(bootstrap_mean_ci(&[1.0], 0, 0.95, 1).is_none());
    assert!(bootstrap_mean_ci(&[1.0], 10, 1.5, 1).is_none());
}

#[test]
fn bootstrap_of_a_fair_coin_matches_the_normal_approximation() {
    // 400 items, half right: mean 0.5, standard error sqrt(0.25 / 400) = 0.025, so the
    // 95% interval is about 0.5 ± 0.049.
    let values: Vec<f64> = (0..400).map(|i| f64::from(i % 2 == 0)).collect();
    let ci = bootstrap_mean_ci(&values, 4000, 0.95, 42).unwrap();
    assert_eq!(ci.estimate, 0.5);
    assert!((ci.low - 0.451).abs() < 0.008, "{ci:?}");
    assert!((ci.high - 0.549).abs() < 0.008, "{ci:?}");
    assert!(
        ((0.5 - ci.low) - (ci.high - 0.5)).abs() < 0.01,
        "not symmetric: {ci:?}"
    );
    // Seeded: same seed, same interval; another seed, a slightly different one.
    assert_eq!(bootstrap_mean_ci(&values, 4000, 0.95, 42).unwrap(), ci);
    let other = bootstrap_mean_ci(&values, 4000, 0.95, 43).unwrap();
    assert_ne!(other, ci);
    assert!((other.low - ci.low).abs() < 0.01);
    // A 99% interval is wider than a 90% one.
    let narrow = bootstrap_mean_ci(&values, 4000, 0.90, 42).unwrap();
    let wide = bootstrap_mean_ci(&values, 4000, 0.99, 42).unwrap();
    assert!(wide.high - wide.low > ci.high - ci.low && ci.high - ci.low > narrow.high - narrow.low);
}

#[test]
fn bootstrap_intervals_cover_the_truth_about_95_percent_of_the_time() {
    // 300 data sets of 100 Bernoulli(0.3) draws (a fixed generator, so the test is
    // deterministic); the true mean 0.3 should fall inside ~95% of the intervals. The
    // percentile bootstrap runs a little narrow for n = 100: allow 90–98%.
    let mut state = 0x5eed_u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let trials = 300;
    let mut covered = 0;
    for trial in 0..trials {
        let values: Vec<f64> = (0..100).map(|_| f64::from(uniform() < 0.3)).collect();
        let ci = bootstrap_mean_ci(&values, 400, 0.95, trial).unwrap();
        covered += usize::from(ci.low <= 0.3 && 0.3 <= ci.high);
    }
    let coverage = covered as f64 / trials as f64;
    assert!((0.90..=0.98).contains(&coverage), "coverage {coverage}");
}

#[test]
fn paired_difference() {
    let a = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0];
    let ci = bootstrap_paired_diff_ci(&a, &a, 1000, 0.95, 3).unwrap();
    assert_eq!((ci.low, ci.estimate, ci.high), (0.0, 0.0, 0.0));
    let b: Vec<f64> = a.iter().map(|x| x - 0.25).collect();
    let ci = bootstrap_paired_diff_ci(&a, &b, 1000, 0.95, 3).unwrap();
    assert!(close(ci.low, 0.25) && close(ci.high, 0.25));
    assert!(bootstrap_paired_diff_ci(&a, &b[..3], 1000, 0.95, 3).is_none());
}

#[test]
fn bootstrap_of_any_statistic() {
    // The median of resamples of [1, 2, 3] stays within [1, 3].
    let data = [1.0, 2.0, 3.0];
    let (low, high) = bootstrap_ci(3, 1000, 0.95, 9, |idx| {
        let mut v: Vec<f64> = idx.iter().map(|&i| data[i]).collect();
        v.sort_by(f64::total_cmp);
        v[1]
    })
    .unwrap();
    assert!(low >= 1.0 && high <= 3.0 && low < high);
    assert_eq!(mean(&data), Some(2.0));
}
