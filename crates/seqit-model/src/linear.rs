//! A projection whose weight is either a dense tensor (trainable, Hugging Face
//! checkpoints) or a GGUF quantized matrix (inference only, multiplied without
//! dequantizing).

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Result, Tensor, D};

/// Inner dimension granularity of candle's repacked x86 kernels (AVX-512 VNNI / AVX-VNNI
/// `dpbusd` tiles), which are several times faster than its per-row dot products.
const REPACKED_KERNEL_K: usize = 256;

#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `[out_features, in_features]`, as in PyTorch.
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    /// The quantized matrix as multiplied (possibly zero-padded) and its matmul.
    quantized: Option<(Arc<QTensor>, QMatMul)>,
    /// Inner dimension of `matmul`, larger than `in_features` when zero-padded.
    padded_in: usize,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: LinearWeight, bias: Option<Tensor>) -> Result<Self> {
        let (quantized, padded_in) = match &weight {
            LinearWeight::Dense(w) => (None, w.dim(1)?),
            LinearWeight::Quantized(q) => {
                let q = pad_for_repacked_kernels(q)?;
                let k = q.shape().dims()[1];
                (Some((q.clone(), QMatMul::from_arc(q)?)), k)
            }
        };
        Ok(Self {
            weight,
            quantized,
            padded_in,
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
        let y = match (&self.weight, &self.quantized) {
            (_, Some((_, q))) => q.forward(&self.pad_input(x)?)?,
            (LinearWeight::Dense(w), None) => match x.dims() {
                [b, t, k] => x
                    .reshape((b * t, *k))?
                    .matmul(&w.t()?)?
                    .reshape((*b, *t, ()))?,
                _ => x.broadcast_matmul(&w.t()?)?,
            },
            (LinearWeight::Quantized(_), None) => unreachable!("quantized weights get a QMatMul"),
        };
        self.add_bias(y)
    }

    fn add_bias(&self, y: Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    fn pad_input(&self, x: &Tensor) -> Result<Tensor> {
        let k = x.dim(D::Minus1)?;
        if k < self.padded_in {
            x.pad_with_zeros(D::Minus1, 0, self.padded_in - k)
        } else {
            Ok(x.clone())
        }
    }

    /// Applies several projections to the same input (q/k/v, gate/up). Quantized
    /// weights then share one padding and one quantization of `x` and one parallel
    /// region, instead of one each.
    pub fn forward_shared<const N: usize>(
        linears: [&Linear; N],
        x: &Tensor,
    ) -> Result<[Tensor; N]> {
        let first = linears[0];
        let fusable = linears
            .iter()
            .all(|l| l.quantized.is_some() && l.padded_in == first.padded_in);
        if fusable {
            let x = first.pad_input(x)?.contiguous()?;
            let weights: Vec<&QTensor> = linears
                .iter()
                .map(|l| {
                    l.quantized
                        .as_ref()
                        .map(|(q, _)| q.as_ref())
                        .expect("checked")
                })
                .collect();
            if let Some(outputs) = QTensor::gemv_fused_shared_lhs(&weights, &x)? {
                let mut outputs = outputs.into_iter();
                let mut results = Vec::with_capacity(N);
                for linear in linears {
                    results.push(linear.add_bias(outputs.next().expect("one output per weight"))?);
                }
                return Ok(results.try_into().expect("N results"));
            }
        }
        let mut results = Vec::with_capacity(N);
        for linear in linears {
            results.push(linear.forward(x)?);
        }
        Ok(results.try_into().expect("N results"))
    }
}

/// candle only takes its fast repacked path when the inner dimension is a multiple of
/// 256 (SmolLM2's 576 is not). Zero columns cost a third more multiply-adds there but
/// make the product several times faster; the result is unchanged since the padded
/// activations are zero too.
fn pad_for_repacked_kernels(q: &Arc<QTensor>) -> Result<Arc<QTensor>> {
    let Ok((_, k)) = q.shape().dims2() else {
        return Ok(q.clone());
    };
    let repackable = matches!(q.dtype(), GgmlDType::Q8_0);
    if !repackable || k % REPACKED_KERNEL_K == 0 || !cpu_has_vnni() {
        return Ok(q.clone());
    }
    let device = q.device();
    let dense = q.dequantize(&device)?;
    let padded = dense.pad_with_zeros(1, 0, k.next_multiple_of(REPACKED_KERNEL_K) - k)?;
    Ok(Arc::new(QTensor::quantize(&padded, q.dtype())?))
}

fn cpu_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni"))
            || (is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
