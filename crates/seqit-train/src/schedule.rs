//! Learning-rate schedules: linear warm-up, then linear or cosine decay, or constant.

use serde::{Deserialize, Serialize};

/// How the learning rate goes after the linear warm-up (see [`learning_rate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Linear decay from the peak to 0 at the last update (the SIT paper's).
    Linear,
    /// Half-cosine decay from the peak to 0 at the last update.
    Cosine,
    /// The peak until the end.
    Constant,
}

/// Learning rate for update `step` (0-based) of `total`.
pub fn learning_rate(
    schedule: Schedule,
    peak: f64,
    step: usize,
    total: usize,
    warmup: usize,
) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / decay_steps).min(1.0);
    match schedule {
        Schedule::Constant => peak,
        Schedule::Linear => peak * (1.0 - progress),
        Schedule::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let lr = |s, step| learning_rate(s, 1.0, step, 10, 2);
        assert_eq!(lr(Schedule::Linear, 0), 0.5);
        assert_eq!(lr(Schedule::Linear, 1), 1.0);
        assert_eq!(lr(Schedule::Linear, 2), 1.0);
        assert!((lr(Schedule::Linear, 6) - 0.5).abs() < 1e-12);
        assert!((lr(Schedule::Cosine, 6) - 0.5).abs() < 1e-12);
        assert!(lr(Schedule::Cosine, 4) > lr(Schedule::Linear, 4));
        assert_eq!(lr(Schedule::Constant, 9), 1.0);
    }
}
