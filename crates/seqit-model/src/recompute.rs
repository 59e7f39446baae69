//! Recomputation ("activation checkpointing") of parameter-free pieces of the network in
//! training: the piece runs without recording its intermediate tensors, and its backward
//! pass runs it again, differentiably, to get the inputs' gradients. Attention scores and
//! probabilities, RoPE and RMSNorm temporaries then live one layer at a time instead of
//! for the whole forward pass, for a few percent more compute.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Tensor, Var,
};

/// A piece of the network as a function of its inputs.
pub(crate) type Piece = dyn Fn(&[Tensor]) -> anyhow::Result<Tensor> + Send + Sync;

struct Recompute {
    name: &'static str,
    piece: Box<Piece>,
}

fn msg(e: anyhow::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("{e:#}"))
}

/// A view of an f32 CPU storage as a fresh tensor (not part of any graph).
fn tensor_of(storage: &CpuStorage, layout: &Layout) -> Result<Tensor> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("recomputed pieces take f32 tensors");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("recomputed pieces take contiguous tensors");
    };
    Tensor::from_slice(&data[start..end], layout.shape(), &Device::Cpu)
}

impl Recompute {
    fn forward(&self, inputs: &[Tensor]) -> Result<(CpuStorage, Shape)> {
        let out = (self.piece)(inputs).map_err(msg)?;
        let shape = out.shape().clone();
        Ok((CpuStorage::F32(out.flatten_all()?.to_vec1()?), shape))
    }

    /// Gradients of the inputs: the piece again, differentiably, then `Σ out · grad`
    /// back-propagated (whose gradient with respect to `out` is `grad`).
    fn backward(&self, inputs: &[&Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let vars = inputs
            .iter()
            .map(|t| Var::from_tensor(&t.detach()))
            .collect::<Result<Vec<_>>>()?;
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = (self.piece)(&tensors).map_err(msg)?;
        let grads = (out * grad.detach())?.sum_all()?.backward()?;
        Ok(vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned())
            .collect())
    }
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward(&[tensor_of(s, l)?])
    }

    fn bwd(&self, a: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.backward(&[a], grad)?.remove(0))
    }
}

impl CustomOp2 for Recompute {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(&[tensor_of(s1, l1)?, tensor_of(s2, l2)?])
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut g = self.backward(&[a, b], grad)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten()))
    }
}

impl CustomOp3 for Recompute {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(&[tensor_of(s1, l1)?, tensor_of(s2, l2)?, tensor_of(s3, l3)?])
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut g = self.backward(&[a, b, c], grad)?.into_iter();
        Ok((g.next().flatten(), g.next().flatten(), g.next().flatten()))
    }
}

/// `piece(inputs)` (1 to 3 f32 CPU tensors), recomputed in the backward pass instead of
/// keeping its intermediates. Inputs that are not on a gradient path get no gradient.
pub(crate) fn recompute(
    name: &'static str,
    inputs: &[&Tensor],
    piece: impl Fn(&[Tensor]) -> anyhow::Result<Tensor> + Send + Sync + 'static,
) -> Result<Tensor> {
    let op = Recompute {
        name,
        piece: Box::new(piece),
    };
    let c = |t: &Tensor| t.contiguous();
    match inputs {
        [a] => c(a)?.apply_op1(op),
        [a, b] => c(a)?.apply_op2(&c(b)?, op),
        [a, b, c3] => c(a)?.apply_op3(&c(b)?, &c(c3)?, op),
        _ => candle_core::bail!("recompute takes 1 to 3 inputs"),
    }
}
