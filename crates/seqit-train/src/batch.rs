//! Tokenized examples to model inputs: right-padded batches, or packed rows holding
//! several examples with positions restarting per example and no attention across them.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use crate::tokenize::TokenizedExample;

/// One forward pass worth of training data.
#[derive(Debug)]
pub struct Batch {
    /// `[rows, t]` u32
    pub input_ids: Tensor,
    /// `[rows, t]` u32 RoPE positions
    pub positions: Tensor,
    /// `[rows, 1, t, t]` additive attention mask
    pub mask: Tensor,
    /// `[rows, t - 1]` u32: the token each position predicts
    pub targets: Tensor,
    /// `[rows, t - 1]` f32: 1 where the predicted token carries loss
    pub weights: Tensor,
    /// Tokens that carry loss in this batch.
    pub trained_tokens: usize,
    /// All tokens in this batch, padding excluded.
    pub tokens: usize,
}

/// Examples laid out in rows; each row is a list of examples placed one after another.
pub fn build_batch(rows: &[Vec<&TokenizedExample>], device: &Device) -> Result<Batch> {
    let t = rows
        .iter()
        .map(|r| r.iter().map(|e| e.input_ids.len()).sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(2);
    let n = rows.len();
    let mut ids = vec![0u32; n * t];
    let mut positions = vec![0u32; n * t];
    let mut trained = vec![false; n * t];
    // Segment index per position (usize::MAX for padding) drives the mask.
    let mut segment = vec![usize::MAX; n * t];
    let mut tokens = 0;
    for (r, row) in rows.iter().enumerate() {
        let mut at = r * t;
        for (s, example) in row.iter().enumerate() {
            for (i, (&id, &tr)) in example.input_ids.iter().zip(&example.trained).enumerate() {
                ids[at] = id;
                positions[at] = i as u32;
                trained[at] = tr;
                segment[at] = s;
                at += 1;
            }
            tokens += example.input_ids.len();
        }
    }
    let mut mask = vec![f32::NEG_INFINITY; n * t * t];
    for r in 0..n {
        for i in 0..t {
            for j in 0..=i {
                let (si, sj) = (segment[r * t + i], segment[r * t + j]);
                // Same example and causal; a padding position sees itself so that its
                // softmax row stays finite.
                if (si == sj && si != usize::MAX) || i == j {
                    mask[(r * t + i) * t + j] = 0.0;
                }
            }
        }
    }
    let mut targets = Vec::with_capacity(n * (t - 1));
    let mut weights = Vec::with_capacity(n * (t - 1));
    for r in 0..n {
        for i in 0..t - 1 {
            let (now, next) = (r * t + i, r * t + i + 1);
            // Predicting the next token only within one example.
            let same = segment[now] == segment[next] && segment[now] != usize::MAX;
            targets.push(ids[next]);
            weights.push(if same && trained[next] { 1f32 } else { 0.0 });
        }
    }
    let trained_tokens = weights.iter().filter(|w| **w > 0.0).count();
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (n, t), device)?,
        positions: Tensor::from_vec(positions, (n, t), device)?,
        mask: Tensor::from_vec(mask, (n, 1, t, t), device)?,
        targets: Tensor::from_vec(targets, (n, t - 1), device)?,
        weights: Tensor::from_vec(weights, (n, t - 1), device)?.to_dtype(DType::F32)?,
        trained_tokens,
        tokens,
    })
}

/// Greedy first-fit packing of examples (in order) into rows of at most `max_len` tokens.
pub fn pack<'a>(
    examples: &[&'a TokenizedExample],
    max_len: usize,
) -> Vec<Vec<&'a TokenizedExample>> {
    let mut rows: Vec<(usize, Vec<&TokenizedExample>)> = Vec::new();
    for example in examples {
        let len = example.input_ids.len();
        match rows.iter_mut().find(|(used, _)| used + len <= max_len) {
            Some((used, row)) => {
                *used += len;
                row.push(example);
            }
            None => rows.push((len, vec![example])),
        }
    }
    rows.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(ids: &[u32], trained: &[bool]) -> TokenizedExample {
        TokenizedExample {
            input_ids: ids.to_vec(),
            trained: trained.to_vec(),
        }
    }

    #[test]
    fn packed_rows_restart_positions_and_block_attention() {
        let a = example(&[1, 2, 3], &[false, true, true]);
        let b = example(&[4, 5], &[false, true]);
        let batch = build_batch(&[vec![&a, &b]], &Device::Cpu).unwrap();
        let positions: Vec<u32> = batch.positions.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(positions, [0, 1, 2, 0, 1]);
        let mask: Vec<Vec<f32>> = batch
            .mask
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        let visible: Vec<Vec<bool>> = mask
            .iter()
            .map(|r| r.iter().map(|v| *v == 0.0).collect())
            .collect();
        assert_eq!(visible[2], [true, true, true, false, false]);
        assert_eq!(
            visible[4],
            [false, false, false, true, true],
            "b must not see a"
        );
        // Targets: 2, 3 (trained), 4 (crosses into b: not trained), 5 (trained).
        let weights: Vec<f32> = batch.weights.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(weights, [1.0, 1.0, 0.0, 1.0]);
        assert_eq!(batch.trained_tokens, 3);
    }

    #[test]
    fn padded_rows_train_nothing_on_padding() {
        let a = example(&[1, 2, 3, 4], &[false, false, true, true]);
        let b = example(&[5, 6], &[false, true]);
        let batch = build_batch(&[vec![&a], vec![&b]], &Device::Cpu).unwrap();
        let weights: Vec<Vec<f32>> = batch.weights.to_vec2().unwrap();
        assert_eq!(weights, [vec![0.0, 1.0, 1.0], vec![1.0, 0.0, 0.0]]);
        assert_eq!(batch.tokens, 6);
    }

    #[test]
    fn packing_fills_rows_first_fit() {
        let e = |n: usize| example(&vec![1; n], &vec![true; n]);
        let (a, b, c, d) = (e(5), e(4), e(3), e(2));
        let rows = pack(&[&a, &b, &c, &d], 8);
        let lens: Vec<Vec<usize>> = rows
            .iter()
            .map(|r| r.iter().map(|x| x.input_ids.len()).collect())
            .collect();
        assert_eq!(lens, [vec![5, 3], vec![4, 2]]);
    }
}
