//! AdamW that updates parameters in place.
//!
//! candle's stock `AdamW` builds several new tensors per parameter per step (seconds per
//! step for a 135M model). Here, for f32 parameters on the CPU, one fused pass per
//! parameter reads the gradient and updates the moments and the weights where they lie,
//! in parallel chunks.
//!
//! Other devices (CUDA) and bf16/f16 parameters take the same update spelled with tensor
//! ops on the parameter's device. Moments are f32, and a bf16/f16 parameter keeps an f32
//! master copy that the update applies to: the model computes with the master rounded to
//! its dtype, so that updates smaller than the dtype's resolution still add up.

use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// AdamW's hyper-parameters (the learning rate is given to each [`AdamW::step`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Decay rate of the first moment (running mean of the gradients).
    pub beta1: f64,
    /// Decay rate of the second moment (running mean of the squared gradients).
    pub beta2: f64,
    /// Added to the second moment's square root so the division stays finite.
    pub eps: f64,
    /// Decoupled weight decay: every update first multiplies the weights by
    /// `1 - lr × weight_decay`.
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
    /// First moment, one value per element of the parameter.
    pub m: Vec<f32>,
    /// Second moment, one value per element of the parameter.
    pub v: Vec<f32>,
}

/// How one parameter is updated, with the state that takes.
enum ParamState {
    /// f32 on the CPU: [`FusedUpdate`] on moments kept in host memory.
    Fused(Mutex<Moments>),
    /// Anything else: [`TensorState::update`] on the parameter's device.
    Tensors(TensorState),
}

/// f32 moments on the parameter's device, and the f32 master weights of a bf16/f16
/// parameter.
struct TensorState {
    m: Tensor,
    v: Tensor,
    master: Option<Tensor>,
}

/// AdamW that updates the trainable variables in place: fused for f32 parameters on the
/// CPU, with tensor ops elsewhere; bf16/f16 parameters get f32 master weights.
pub struct AdamW {
    params: Vec<Var>,
    states: Vec<ParamState>,
    config: AdamWConfig,
    /// Updates applied so far (for bias correction).
    pub step: u64,
}

/// The per-step scalars of the update rule, shared by both implementations.
#[derive(Debug, Clone, Copy)]
struct UpdateRule {
    lr: f64,
    /// Gradients are multiplied by this first (clipping, loss-scale removal).
    grad_scale: f64,
    config: AdamWConfig,
    step: u64,
}

impl UpdateRule {
    fn bias_corrections(&self) -> (f64, f64) {
        let c = self.config;
        (
            1.0 - c.beta1.powi(self.step as i32),
            1.0 - c.beta2.powi(self.step as i32),
        )
    }
}

/// One parameter's update: `dst` is the parameter, the source its gradient.
struct FusedUpdate<'a> {
    moments: &'a Mutex<Moments>,
    rule: UpdateRule,
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
        let c = self.rule.config;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let (correction1, correction2) = self.rule.bias_corrections();
        let (correction1, correction2) = (correction1 as f32, correction2 as f32);
        let lr = self.rule.lr as f32;
        let (eps, decay, scale) = (
            c.eps as f32,
            1.0 - lr * c.weight_decay as f32,
            self.rule.grad_scale as f32,
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

impl TensorState {
    fn new(param: &Var) -> Result<Self> {
        let t = param.as_tensor();
        let zeros = || Tensor::zeros(t.shape(), DType::F32, t.device());
        Ok(Self {
            m: zeros()?,
            v: zeros()?,
            master: (t.dtype() != DType::F32)
                .then(|| t.detach().to_dtype(DType::F32))
                .transpose()?,
        })
    }

    /// The parameter's value in f32: its master copy, or the parameter itself.
    fn weights(&self, param: &Var) -> Tensor {
        match &self.master {
            Some(master) => master.clone(),
            None => param.as_tensor().detach(),
        }
    }

    fn update(&mut self, param: &Var, grad: &Tensor, rule: UpdateRule) -> Result<()> {
        let c = rule.config;
        let (correction1, correction2) = rule.bias_corrections();
        let g = (grad.detach().to_dtype(DType::F32)? * rule.grad_scale)?;
        self.m = ((&self.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
        self.v = ((&self.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
        let denominator = ((&self.v / correction2)?.sqrt()? + c.eps)?;
        let update = ((&self.m / correction1)? / denominator)?;
        let decayed = (self.weights(param) * (1.0 - rule.lr * c.weight_decay))?;
        let updated = (decayed - (update * rule.lr)?)?;
        match &mut self.master {
            Some(master) => {
                param.set(&updated.to_dtype(param.dtype())?)?;
                *master = updated;
            }
            None => param.set(&updated)?,
        }
        Ok(())
    }
}

impl AdamW {
    /// An optimizer for `params` with zero moments (and f32 master copies of bf16/f16
    /// parameters).
    pub fn new(params: Vec<Var>, config: AdamWConfig) -> Result<Self> {
        Self::with_states(params, config, |p| {
            let fused = p.device().is_cpu() && p.dtype() == DType::F32;
            Ok(if fused {
                let n = p.elem_count();
                ParamState::Fused(Mutex::new(Moments {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                }))
            } else {
                ParamState::Tensors(TensorState::new(p)?)
            })
        })
    }

    /// The tensor-op update for every parameter, also on the CPU: to check it against
    /// the fused one.
    #[cfg(test)]
    fn with_tensor_updates(params: Vec<Var>, config: AdamWConfig) -> Result<Self> {
        Self::with_states(params, config, |p| {
            Ok(ParamState::Tensors(TensorState::new(p)?))
        })
    }

    /// An optimizer at step 0 whose state for each parameter is `state(parameter)`.
    fn with_states(
        params: Vec<Var>,
        config: AdamWConfig,
        state: impl Fn(&Var) -> Result<ParamState>,
    ) -> Result<Self> {
        let states = params.iter().map(state).collect::<Result<_>>()?;
        Ok(Self {
            params,
            states,
            config,
            step: 0,
        })
    }

    /// The parameters, in the order given to [`AdamW::new`].
    pub fn params(&self) -> &[Var] {
        &self.params
    }

    /// Global L2 norm of the gradients, times `scale`.
    pub fn grad_norm(&self, grads: &GradStore, scale: f64) -> Result<f64> {
        // Summed on the parameters' device, read back once.
        let mut sum: Option<Tensor> = None;
        for p in &self.params {
            if let Some(g) = grads.get(p.as_tensor()) {
                let squares = g
                    .to_dtype(DType::F32)?
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?;
                sum = Some(match sum {
                    None => squares,
                    Some(total) => (total + squares)?,
                });
            }
        }
        let sum = match sum {
            Some(s) => s.to_scalar::<f64>()?,
            None => 0.0,
        };
        Ok(sum.sqrt() * scale)
    }

    /// Applies one update with learning rate `lr` to gradients multiplied by
    /// `grad_scale` (the inverse of a loss scale; 1 otherwise), first scaling them so
    /// that their global norm is at most `max_norm` (when given). Returns the norm
    /// before clipping; when it is not finite, nothing is updated.
    pub fn step(
        &mut self,
        grads: &GradStore,
        lr: f64,
        max_norm: Option<f64>,
        grad_scale: f64,
    ) -> Result<f64> {
        let norm = self.grad_norm(grads, grad_scale)?;
        if !norm.is_finite() {
            return Ok(norm);
        }
        let clip = match max_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.step += 1;
        let rule = UpdateRule {
            lr,
            grad_scale: grad_scale * clip,
            config: self.config,
            step: self.step,
        };
        for (p, state) in self.params.iter().zip(&mut self.states) {
            let Some(grad) = grads.get(p.as_tensor()) else {
                continue;
            };
            match state {
                ParamState::Fused(moments) => {
                    let update = FusedUpdate { moments, rule };
                    p.as_tensor()
                        .inplace_op2(&grad.contiguous()?, &update)
                        .context("optimizer update")?;
                }
                ParamState::Tensors(state) => {
                    state.update(p, grad, rule).context("optimizer update")?
                }
            }
        }
        Ok(norm)
    }

    /// Every parameter's value in f32 (bf16/f16 parameters: their master copy), on the
    /// CPU: what checkpoints and adapter exports save.
    pub fn f32_weights(&self) -> Result<Vec<Tensor>> {
        self.params
            .iter()
            .zip(&self.states)
            .map(|(p, state)| {
                let w = match state {
                    ParamState::Fused(_) => p.as_tensor().detach(),
                    ParamState::Tensors(s) => s.weights(p),
                };
                Ok(w.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)
            })
            .collect()
    }

    /// Moments for checkpoints.
    pub fn moments(&self) -> Result<Vec<Moments>> {
        self.states
            .iter()
            .map(|state| {
                Ok(match state {
                    ParamState::Fused(m) => m.lock().expect("moments lock").clone(),
                    ParamState::Tensors(s) => Moments {
                        m: s.m.flatten_all()?.to_vec1()?,
                        v: s.v.flatten_all()?.to_vec1()?,
                    },
                })
            })
            .collect()
    }

    /// Restores a checkpoint: the weights in f32 (see [`AdamW::f32_weights`]), the
    /// moments and the update count.
    pub fn restore(
        &mut self,
        weights: Vec<Tensor>,
        moments: Vec<Moments>,
        step: u64,
    ) -> Result<()> {
        if moments.len() != self.params.len() || weights.len() != self.params.len() {
            bail!(
                "the checkpoint has optimizer state for {} parameters, the model has {}",
                moments.len(),
                self.params.len()
            );
        }
        let items = self.params.iter().zip(&mut self.states);
        for ((p, state), (w, restored)) in items.zip(weights.into_iter().zip(moments)) {
            if restored.m.len() != p.elem_count() || w.dims() != p.dims() {
                bail!("optimizer state does not match the parameter shapes");
            }
            let w = w.to_dtype(DType::F32)?.to_device(p.device())?;
            p.set(&w.to_dtype(p.dtype())?)?;
            match state {
                ParamState::Fused(slot) => *slot.get_mut().expect("moments lock") = restored,
                ParamState::Tensors(s) => {
                    let on_device =
                        |values: Vec<f32>| Tensor::from_vec(values, p.shape(), p.device());
                    s.m = on_device(restored.m)?;
                    s.v = on_device(restored.v)?;
                    if s.master.is_some() {
                        s.master = Some(w);
                    }
                }
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn wave(n: usize, phase: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * 0.37 + phase).sin()).collect()
    }

    /// Three steps of `loss = Σ x²/2` (gradient `x`) from `init`, with weight decay 0.1,
    /// by the fused update or (`tensor_updates`) the tensor-op one.
    fn three_steps(init: &[f32], tensor_updates: bool) -> (AdamW, Var) {
        let t = Tensor::from_vec(init.to_vec(), init.len(), &Device::Cpu).unwrap();
        let var = Var::from_tensor(&t).unwrap();
        let config = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        let params = vec![var.clone()];
        let mut opt = if tensor_updates {
            AdamW::with_tensor_updates(params, config).unwrap()
        } else {
            AdamW::new(params, config).unwrap()
        };
        for _ in 0..3 {
            let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            opt.step(&loss.backward().unwrap(), 0.01, None, 1.0)
                .unwrap();
        }
        (opt, var)
    }

    fn max_difference(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    /// The fused update equals the textbook AdamW formulas.
    #[test]
    fn matches_reference_adamw() {
        let init = wave(40_000, 0.0);
        let (_, var) = three_steps(&init, false);
        let (mut p, mut m, mut v) = (init.clone(), vec![0f32; 40_000], vec![0f32; 40_000]);
        for step in 1..=3 {
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
        let max = max_difference(&got, &p);
        assert!(max < 1e-6, "max difference {max}");
    }

    /// The tensor-op update (CUDA, bf16/f16) equals the fused one: weights and moments.
    #[test]
    fn tensor_update_matches_fused() {
        let init = wave(5_000, 1.0);
        let (fused, a) = three_steps(&init, false);
        let (tensors, b) = three_steps(&init, true);
        assert!(matches!(fused.states[0], ParamState::Fused(_)));
        assert!(matches!(tensors.states[0], ParamState::Tensors(_)));
        let (wa, wb): (Vec<f32>, Vec<f32>) = (
            a.as_tensor().to_vec1().unwrap(),
            b.as_tensor().to_vec1().unwrap(),
        );
        assert!(max_difference(&wa, &wb) < 1e-6);
        let (ma, mb) = (&fused.moments().unwrap()[0], &tensors.moments().unwrap()[0]);
        assert!(max_difference(&ma.m, &mb.m) < 1e-7);
        assert!(max_difference(&ma.v, &mb.v) < 1e-7);
        assert_ne!(wa, init, "the update moved the weights");
    }

    /// A bf16 parameter is updated through its f32 master copy: steps far below bf16's
    /// resolution (2^-8 near 1) still add up, and the parameter is the master rounded.
    #[test]
    fn bf16_parameters_keep_f32_master_weights() {
        let var = Var::from_tensor(&Tensor::ones(4, DType::BF16, &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![var.clone()], AdamWConfig::default()).unwrap();
        for _ in 0..50 {
            // Constant gradient 1: every Adam step moves each weight by lr.
            let loss = var
                .as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap(), 1e-4, None, 1.0)
                .unwrap();
        }
        let master: Vec<f32> = opt.f32_weights().unwrap()[0].to_vec1().unwrap();
        assert!(
            master.iter().all(|w| (w - 0.995).abs() < 1e-5),
            "{master:?}"
        );
        assert_eq!(var.dtype(), DType::BF16);
        let rounded: Vec<f32> = var
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(rounded.iter().all(|w| *w == 0.99609375), "{rounded:?}");
    }

    /// One step with learning rate 0.1 from `x = [3, 4]` on `loss = loss_scale · Σ x²`
    /// (`step`'s other arguments given): the optimizer, `x` and the norm `step` returned.
    fn one_step_from_3_4(
        loss_scale: f64,
        max_norm: Option<f64>,
        grad_scale: f64,
    ) -> (AdamW, Var, f64) {
        let var = Var::from_tensor(&Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![var.clone()], AdamWConfig::default()).unwrap();
        let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * loss_scale).unwrap();
        let norm = opt
            .step(&loss.backward().unwrap(), 0.1, max_norm, grad_scale)
            .unwrap();
        (opt, var, norm)
    }

    #[test]
    fn clipping_scales_the_update() {
        let (opt, var, norm) = one_step_from_3_4(0.5, Some(1.0), 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        // First Adam step moves each coordinate by lr * sign(g) regardless of scale.
        let got: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        assert!(
            (got[0] - 2.9).abs() < 1e-5 && (got[1] - 3.9).abs() < 1e-5,
            "{got:?}"
        );
        let m = &opt.moments().unwrap()[0].m;
        assert!(
            (m[0] - 0.1 * 3.0 / 5.0).abs() < 1e-5,
            "moments see the clipped gradient: {m:?}"
        );
    }

    /// Gradients of a scaled loss are unscaled before the norm and the moments; a
    /// non-finite gradient updates nothing.
    #[test]
    fn grad_scale_undoes_a_loss_scale_and_overflow_skips() {
        let (mut opt, var, norm) = one_step_from_3_4(512.0, None, 1.0 / 1024.0);
        assert!((norm - 5.0).abs() < 1e-6, "{norm}");
        let m = &opt.moments().unwrap()[0].m;
        assert!((m[0] - 0.3).abs() < 1e-6, "{m:?}");
        let before: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        let loss = (var.as_tensor().sum_all().unwrap() * f64::INFINITY).unwrap();
        let norm = opt.step(&loss.backward().unwrap(), 0.1, None, 1.0).unwrap();
        assert!(!norm.is_finite());
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), before);
        assert_eq!(opt.step, 1, "a skipped update does not count");
    }
}
