//! AdamW that updates parameters in place.
//!
//! candle's stock `AdamW` builds several new tensors per parameter per step (seconds per
//! step for a 135M model). Here one fused pass per parameter reads the gradient and
//! updates the moments and the weights where they lie, in parallel chunks.

use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of one parameter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Moments {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

pub struct AdamW {
    params: Vec<Var>,
    moments: Vec<Mutex<Moments>>,
    config: AdamWConfig,
    /// Updates applied so far (for bias correction).
    pub step: u64,
}

/// One parameter's update: `dst` is the parameter, the source its gradient.
struct FusedUpdate<'a> {
    moments: &'a Mutex<Moments>,
    lr: f32,
    grad_scale: f32,
    config: AdamWConfig,
    step: u64,
}

impl InplaceOp2 for FusedUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        grad: &CpuStorage,
        grad_l: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(param), CpuStorage::F32(grad)) = (dst, grad) else {
            candle_core::bail!("adamw-update: only f32 parameters are supported");
        };
        let (Some((p0, p1)), Some((g0, g1))) =
            (dst_l.contiguous_offsets(), grad_l.contiguous_offsets())
        else {
            candle_core::bail!("adamw-update: parameter and gradient must be contiguous");
        };
        let param = &mut param[p0..p1];
        let grad = &grad[g0..g1];
        let mut guard = self.moments.lock().expect("moments lock");
        let Moments { m, v } = &mut *guard;
        let c = self.config;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let correction1 = 1.0 - c.beta1.powi(self.step as i32) as f32;
        let correction2 = 1.0 - c.beta2.powi(self.step as i32) as f32;
        let (lr, eps, decay, scale) = (
            self.lr,
            c.eps as f32,
            1.0 - self.lr * c.weight_decay as f32,
            self.grad_scale,
        );
        const CHUNK: usize = 16 * 1024;
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| {
                for i in 0..p.len() {
                    let g = g[i] * scale;
                    m[i] = b1 * m[i] + (1.0 - b1) * g;
                    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                    let update = (m[i] / correction1) / ((v[i] / correction2).sqrt() + eps);
                    p[i] = p[i] * decay - lr * update;
                }
            });
        Ok(())
    }
}

impl AdamW {
    pub fn new(params: Vec<Var>, config: AdamWConfig) -> Result<Self> {
        let moments = params
            .iter()
            .map(|p| {
                let n = p.elem_count();
                Mutex::new(Moments {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                })
            })
            .collect();
        Ok(Self {
            params,
            moments,
            config,
            step: 0,
        })
    }

    pub fn params(&self) -> &[Var] {
        &self.params
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sum = 0f64;
        for p in &self.params {
            if let Some(g) = grads.get(p.as_tensor()) {
                sum += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(sum.sqrt())
    }

    /// Applies one update with learning rate `lr`, first scaling gradients so that their
    /// global norm is at most `max_norm` (when given). Returns the norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64, max_norm: Option<f64>) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        if !norm.is_finite() {
            bail!("the gradient norm is {norm}: training diverged");
        }
        let grad_scale = match max_norm {
            Some(max) if norm > max => (max / (norm + 1e-6)) as f32,
            _ => 1.0,
        };
        self.step += 1;
        for (p, moments) in self.params.iter().zip(&self.moments) {
            let Some(grad) = grads.get(p.as_tensor()) else {
                continue;
            };
            let grad = grad.contiguous()?;
            let update = FusedUpdate {
                moments,
                lr: lr as f32,
                grad_scale,
                config: self.config,
                step: self.step,
            };
            p.as_tensor()
                .inplace_op2(&grad, &update)
                .context("optimizer update")?;
        }
        Ok(norm)
    }

    /// Moments for checkpoints.
    pub fn moments(&self) -> Vec<Moments> {
        self.moments
            .iter()
            .map(|m| m.lock().expect("moments lock").clone())
            .collect()
    }

    pub fn restore(&mut self, moments: Vec<Moments>, step: u64) -> Result<()> {
        if moments.len() != self.params.len() {
            bail!(
                "the checkpoint has optimizer state for {} parameters, the model has {}",
                moments.len(),
                self.params.len()
            );
        }
        for ((slot, restored), p) in self.moments.iter().zip(moments).zip(&self.params) {
            if restored.m.len() != p.elem_count() {
                bail!("optimizer state does not match the parameter shapes");
            }
            *slot.lock().expect("moments lock") = restored;
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The fused update equals the textbook AdamW formulas computed with tensors.
    #[test]
    fn matches_reference_adamw() {
        let dev = Device::Cpu;
        let init: Vec<f32> = (0..40_000).map(|i| ((i as f32) * 0.37).sin()).collect();
        let var = Var::from_tensor(&Tensor::from_vec(init.clone(), 40_000, &dev).unwrap()).unwrap();
        let config = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(vec![var.clone()], config).unwrap();
        let (mut p, mut m, mut v) = (init.clone(), vec![0f32; 40_000], vec![0f32; 40_000]);
        for step in 1..=3 {
            let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads, 0.01, None).unwrap();
            for i in 0..p.len() {
                let g = p[i]; // d(x^2/2)/dx
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let mh = m[i] / (1.0 - 0.9f32.powi(step));
                let vh = v[i] / (1.0 - 0.999f32.powi(step));
                p[i] = p[i] * (1.0 - 0.01 * 0.1) - 0.01 * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        let max = got
            .iter()
            .zip(&p)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max < 1e-6, "max difference {max}");
    }

    #[test]
    fn clipping_scales_the_update() {
        let dev = Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[3f32, 4.0], &dev).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![var.clone()], AdamWConfig::default()).unwrap();
        let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        let norm = opt.step(&loss.backward().unwrap(), 0.1, Some(1.0)).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        // First Adam step moves each coordinate by lr * sign(g) regardless of scale.
        let got: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        assert!(
            (got[0] - 2.9).abs() < 1e-5 && (got[1] - 3.9).abs() < 1e-5,
            "{got:?}"
        );
        let m = &opt.moments()[0].m;
        assert!(
            (m[0] - 0.1 * 3.0 / 5.0).abs() < 1e-5,
            "moments see the clipped gradient: {m:?}"
        );
    }
}
