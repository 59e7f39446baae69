//! A projection whose weight is either a dense tensor (trainable, Hugging Face
//! checkpoints) or a GGUF quantized matrix (inference only, multiplied without
//! dequantizing).

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};

#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `[out_features, in_features]`, as in PyTorch.
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    matmul: Option<QMatMul>,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: LinearWeight, bias: Option<Tensor>) -> Result<Self> {
        let matmul = match &weight {
            LinearWeight::Dense(_) => None,
            LinearWeight::Quantized(q) => Some(QMatMul::from_arc(q.clone())?),
        };
        Ok(Self {
            weight,
            matmul,
            bias,
        })
    }

    pub fn weight(&self) -> &LinearWeight {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `x @ W^T + b` for `x` of shape `[..., in_features]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match (&self.weight, &self.matmul) {
            (_, Some(q)) => q.forward(x)?,
            (LinearWeight::Dense(w), None) => match x.dims() {
                [b, t, k] => x
                    .reshape((b * t, *k))?
                    .matmul(&w.t()?)?
                    .reshape((*b, *t, ()))?,
                _ => x.broadcast_matmul(&w.t()?)?,
            },
            (LinearWeight::Quantized(_), None) => unreachable!("quantized weights get a QMatMul"),
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
