//! Training data and forward passes shared by seqit-train's tests (each test file uses
//! part of them).
#![allow(dead_code)]

use candle_core::Tensor;
use seqit_model::{Llama, LogitsFor};
use seqit_train::{build_batch, masked_cross_entropy, TokenizedExample};

/// Eight examples of a 4-token prompt (not trained) and a 6-token answer (trained) that
/// depends on the prompt: something a tiny model can learn in a few steps.
pub fn examples() -> Vec<TokenizedExample> {
    (0..8u32)
        .map(|i| {
            let prompt: Vec<u32> = (0..4).map(|j| 97 + (i * 3 + j) % 26).collect();
            let answer: Vec<u32> = (0..6).map(|j| 65 + (i * 5 + j * 7) % 26).collect();
            TokenizedExample {
                input_ids: [prompt, answer].concat(),
                trained: [vec![false; 4], vec![true; 6]].concat(),
            }
        })
        .collect()
}

/// Logits at every position of `rows`, batched on the model's device.
pub fn logits_of_rows(llama: &Llama, rows: &[Vec<&TokenizedExample>]) -> Tensor {
    let batch = build_batch(rows, llama.device()).unwrap();
    llama
        .forward(
            &batch.input_ids,
            &batch.positions,
            Some(&batch.mask),
            None,
            LogitsFor::AllPositions,
        )
        .unwrap()
}

/// The masked cross-entropy of `rows` (the answers' tokens only).
pub fn loss_of_rows(llama: &Llama, rows: &[Vec<&TokenizedExample>]) -> Tensor {
    let batch = build_batch(rows, llama.device()).unwrap();
    let logits = logits_of_rows(llama, rows);
    masked_cross_entropy(&logits, &batch.targets, &batch.weights).unwrap()
}
