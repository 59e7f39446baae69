//! The dtype a run trains in, and the dynamic loss scaling that f16 needs.
//!
//! In bf16 and f16 the model's weights, activations and gradients are low-precision;
//! the optimizer keeps f32 moments and f32 master weights ([`crate::AdamW`]). f16 has
//! bf16's mantissa plus three bits but a far smaller exponent range: gradients below
//! ~6e-8 flush to zero. So in f16 the loss is multiplied by a large factor before the
//! backward pass and the gradients divided by it before the update; an update whose
//! gradients overflowed is skipped and the factor halved, and after a run of clean
//! updates the factor doubles again ("Mixed Precision Training", Micikevicius et al.,
//! 2018).

use anyhow::{bail, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};

/// The dtype of a run's weights and activations (`--dtype`); the optimizer's state is f32
/// whatever it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// bf16 weights and activations, updated through f32 master weights.
    Bf16,
    /// f16 as bf16, plus dynamic loss scaling ([`LossScale`]).
    F16,
}

impl Precision {
    /// The precision named `f32`, `bf16` or `f16`.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "f32" => Self::F32,
            "bf16" => Self::Bf16,
            "f16" => Self::F16,
            other => bail!("dtype `{other}`: expected f32, bf16 or f16"),
        })
    }

    /// The candle dtype the model is loaded and trained in.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }

    /// The loss scaling a run in this precision starts with (f16 only).
    pub fn initial_loss_scale(self) -> Option<LossScale> {
        (self == Self::F16).then(LossScale::default)
    }
}

/// The current loss-scale factor and how many updates in a row went through at it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    /// The loss is multiplied by this before the backward pass, the gradients divided by it
    /// before the update.
    pub factor: f64,
    /// Updates in a row with finite gradients at this factor; at 2000 the factor doubles.
    pub clean_updates: usize,
}

impl LossScale {
    /// 2^16, as PyTorch's `GradScaler` starts.
    const INITIAL: f64 = 65536.0;
    /// Clean updates after which the factor doubles (`GradScaler`'s growth interval).
    const GROWTH_INTERVAL: usize = 2000;
    /// Below this, overflowing gradients are not a scaling problem: training diverged.
    const MIN: f64 = 1.0;

    /// Records whether this update's gradients were finite (the update is applied only
    /// then).
    pub fn record(&mut self, finite: bool) -> Result<()> {
        if finite {
            self.clean_updates += 1;
            if self.clean_updates == Self::GROWTH_INTERVAL {
                self.factor *= 2.0;
                self.clean_updates = 0;
            }
            return Ok(());
        }
        if self.factor <= Self::MIN {
            bail!(
                "the gradients overflow even with loss scale {}: training diverged",
                self.factor
            );
        }
        self.factor /= 2.0;
        self.clean_updates = 0;
        Ok(())
    }
}

impl Default for LossScale {
    fn default() -> Self {
        Self {
            factor: Self::INITIAL,
            clean_updates: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_halves_and_clean_runs_double() {
        let mut scale = LossScale::default();
        scale.record(false).unwrap();
        scale.record(false).unwrap();
        assert_eq!(scale.factor, 16384.0);
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            scale.record(true).unwrap();
        }
        assert_eq!(scale.factor, 16384.0);
        scale.record(true).unwrap();
        assert_eq!((scale.factor, scale.clean_updates), (32768.0, 0));
    }

    #[test]
    fn overflow_at_the_smallest_factor_is_divergence() {
        let mut scale = LossScale {
            factor: 1.0,
            clean_updates: 7,
        };
        let e = scale.record(false).unwrap_err().to_string();
        assert!(e.contains("diverged"), "{e}");
    }

    #[test]
    fn names_parse_to_dtypes() {
        assert_eq!(Precision::parse("bf16").unwrap().dtype(), DType::BF16);
        assert_eq!(Precision::parse("f16").unwrap().dtype(), DType::F16);
        assert!(Precision::F16.initial_loss_scale().is_some());
        assert!(Precision::Bf16.initial_loss_scale().is_none());
        let e = Precision::parse("fp8").unwrap_err().to_string();
        assert!(e.contains("expected f32, bf16 or f16"), "{e}");
    }
}
