//! One prompt through a model's full forward pass, as the tests that compare logits run it.

use candle_core::Tensor;
use seqit_model::{padded_causal_mask, Llama, LogitsFor};

/// The logits of every position of `ids` (one unpadded row, no cache), `[positions,
/// vocab]` in f32 on the model's device.
pub fn logits_at_every_position(model: &Llama, ids: &[u32]) -> Tensor {
    let (n, device) = (ids.len(), model.device());
    let input = Tensor::from_slice(ids, (1, n), device).unwrap();
    let positions = Tensor::arange(0u32, n as u32, device)
        .unwrap()
        .reshape((1, n))
        .unwrap();
    let mask = padded_causal_mask(&[0], 0, n, device).unwrap();
    model
        .forward(
            &input,
            &positions,
            Some(&mask),
            None,
            LogitsFor::AllPositions,
        )
        .unwrap()
        .squeeze(0)
        .unwrap()
}
