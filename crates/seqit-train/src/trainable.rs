//! Turning a loaded model into one whose weights are trainable variables.

use anyhow::{bail, Result};
use candle_core::{Tensor, Var};
use seqit_model::{
    Attention, Block, Embedding, Kernels, Linear, LinearWeight, Llama, Mlp, RmsNorm,
};

/// A model whose dense weights are [`Var`]s, with their Hugging Face names.
pub struct TrainableModel {
    pub llama: Llama,
    pub params: Vec<(String, Var)>,
}

/// Every weight becomes trainable (full fine-tuning). Tied embeddings stay one variable.
pub fn full_finetuning(model: Llama) -> Result<TrainableModel> {
    let mut params = Vec::new();
    let mut var = |name: String, t: &Tensor| -> Result<Tensor> {
        let v = Var::from_tensor(&t.contiguous()?)?;
        let tensor = v.as_tensor().clone();
        params.push((name, v));
        Ok(tensor)
    };
    let linear = |var: &mut dyn FnMut(String, &Tensor) -> Result<Tensor>,
                  name: String,
                  l: &Linear|
     -> Result<Linear> {
        let LinearWeight::Dense(w) = l.weight() else {
            bail!("`{name}` is quantized: load the model with dense weights to train it");
        };
        let w = var(format!("{name}.weight"), w)?;
        let b = l
            .bias()
            .map(|b| var(format!("{name}.bias"), b))
            .transpose()?;
        Ok(Linear::new(LinearWeight::Dense(w), b)?)
    };
    let eps = model.config.rms_norm_eps;
    let embed = var("model.embed_tokens.weight".into(), &model.embed_tokens.0)?;
    let mut layers = Vec::with_capacity(model.layers.len());
    for (i, b) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let input_norm = var(
            format!("{p}.input_layernorm.weight"),
            b.input_layernorm.weight(),
        )?;
        let post_norm = var(
            format!("{p}.post_attention_layernorm.weight"),
            b.post_attention_layernorm.weight(),
        )?;
        let a = &b.self_attn;
        let m = &b.mlp;
        layers.push(Block {
            input_layernorm: RmsNorm::new(input_norm, eps),
            self_attn: Attention {
                q_proj: linear(&mut var, format!("{p}.self_attn.q_proj"), &a.q_proj)?,
                k_proj: linear(&mut var, format!("{p}.self_attn.k_proj"), &a.k_proj)?,
                v_proj: linear(&mut var, format!("{p}.self_attn.v_proj"), &a.v_proj)?,
                o_proj: linear(&mut var, format!("{p}.self_attn.o_proj"), &a.o_proj)?,
            },
            post_attention_layernorm: RmsNorm::new(post_norm, eps),
            mlp: Mlp {
                gate_proj: linear(&mut var, format!("{p}.mlp.gate_proj"), &m.gate_proj)?,
                up_proj: linear(&mut var, format!("{p}.mlp.up_proj"), &m.up_proj)?,
                down_proj: linear(&mut var, format!("{p}.mlp.down_proj"), &m.down_proj)?,
            },
        });
    }
    let norm = RmsNorm::new(var("model.norm.weight".into(), model.norm.weight())?, eps);
    let lm_head = if model.config.tie_word_embeddings {
        Linear::new(LinearWeight::Dense(embed.clone()), None)?
    } else {
        linear(&mut var, "lm_head".into(), &model.lm_head)?
    };
    let mut llama = Llama::new(
        model.config.clone(),
        model.rope_layout,
        Embedding(embed),
        layers,
        norm,
        lm_head,
    )?;
    llama.kernels = Kernels::Differentiable;
    Ok(TrainableModel { llama, params })
}
