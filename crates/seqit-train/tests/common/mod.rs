//! Training data shared by seqit-train's tests.

use seqit_train::TokenizedExample;

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
