//! A toy architecture for tests of the architecture seam.

use seqit_model::arch::{ArchSpec, TensorNames, LLAMA};

/// Llama under GPT-2-like names (`transformer.h.{i}.attn.q`, `ffn.down`, ...): the same
/// blocks, other tensor and class names, registered nowhere. Loading, export, PEFT and
/// LoRA must follow its names.
pub static RENAMED_LLAMA: ArchSpec = ArchSpec {
    name: "Toy",
    hf_class: "ToyForCausalLM",
    model_type: "toy",
    hf_names: TensorNames {
        embedding: "transformer.wte",
        final_norm: "transformer.ln_f",
        lm_head: "head",
        layer_prefix: "transformer.h.",
        layer: [
            "ln_1",
            "attn.q",
            "attn.k",
            "attn.v",
            "attn.out",
            "ln_2",
            "ffn.gate",
            "ffn.up",
            "ffn.down",
            "attn.q_ln",
            "attn.k_ln",
        ],
    },
    ..LLAMA
};
