//! GGUF files as llama.cpp writes them: metadata, tensor names and the Q/K row
//! permutation of Llama checkpoints.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use crate::arch::{self, ArchSpec, LLAMA};
use crate::config::{Architecture, ModelConfig, RopeLayout};

/// An opened GGUF file: its metadata and tensor index (tensor data is read on demand).
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .finish()
    }
}

impl GgufFile {
    /// Opens `path` and reads its header, metadata and tensor index (not the tensor data).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| {
            anyhow::anyhow!("`{}` is not a readable GGUF file: {e}", path.display())
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    /// The file's path, as given to [`GgufFile::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every metadata key and value of the file.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// Whether the file holds a tensor of this (GGUF) name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Reads tensor `name` onto `device`, in its stored quantization; fails when the file
    /// has no such tensor.
    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            bail!("`{}` has no tensor `{name}`", self.path.display());
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .with_context(|| format!("reading tensor `{name}` from `{}`", self.path.display()))
    }

    /// A string metadata value; `None` when the key is absent or holds another type.
    pub fn string(&self, key: &str) -> Option<&str> {
        match self.metadata().get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// An integer metadata value of any integer width.
    pub fn uint(&self, key: &str) -> Option<u64> {
        self.metadata().get(key).and_then(value_as_u64)
    }

    /// A numeric metadata value (float or integer) as `f64`. An `f32` reads as the
    /// shortest decimal that rounds to it (`1e-5`, not `9.99999974e-6`): the value the
    /// converter that wrote it started from, which a `config.json` written back should show.
    pub fn float(&self, key: &str) -> Option<f64> {
        match self.metadata().get(key)? {
            Value::F32(v) => v.to_string().parse().ok(),
            Value::F64(v) => Some(*v),
            other => value_as_u64(other).map(|v| v as f64),
        }
    }

    /// The spec of the file's `general.architecture`.
    pub fn arch_spec(&self) -> Result<&'static ArchSpec> {
        let name = self.string("general.architecture").with_context(|| {
            format!(
                "`{}` has no `general.architecture` metadata",
                self.path.display()
            )
        })?;
        arch::for_gguf(name).map_err(|e| anyhow::anyhow!("`{}`: {e}", self.path.display()))
    }

    /// The file's architecture (`general.architecture`).
    pub fn architecture(&self) -> Result<Architecture> {
        Ok(self.arch_spec()?.architecture)
    }

    /// Reads the model hyper-parameters from the metadata, as its architecture maps them.
    pub fn model_config(&self) -> Result<ModelConfig> {
        self.arch_spec()?.config_from_gguf(self)
    }

    /// How the file lays out Q/K rows ([`ArchSpec::gguf_rope_layout`]).
    pub fn rope_layout(&self) -> Result<RopeLayout> {
        Ok(self.arch_spec()?.gguf_rope_layout)
    }
}

fn value_as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(v) => Some(*v as u64),
        Value::U16(v) => Some(*v as u64),
        Value::U32(v) => Some(*v as u64),
        Value::U64(v) => Some(*v),
        Value::I8(v) => u64::try_from(*v).ok(),
        Value::I16(v) => u64::try_from(*v).ok(),
        Value::I32(v) => u64::try_from(*v).ok(),
        Value::I64(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

/// Maps a Llama-family Hugging Face tensor name to llama.cpp's, e.g.
/// `model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`
/// ([`ArchSpec::gguf_tensor_name`] of [`LLAMA`]).
pub fn gguf_tensor_name(hf_name: &str) -> Option<String> {
    LLAMA.gguf_tensor_name(hf_name)
}

/// Inverse of [`gguf_tensor_name`].
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    LLAMA.hf_tensor_name(gguf_name)
}

/// Reorders the rows of a Q or K projection (`[heads * head_dim, in]`) from Hugging
/// Face's half-split RoPE layout to llama.cpp's interleaved one: within each head, row
/// `half * d/2 + i` moves to `2 * i + half`.
pub fn permute_for_interleaved_rope(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let d = rows / heads;
    Ok(w.reshape((heads, 2, d / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// Inverse of [`permute_for_interleaved_rope`].
pub fn unpermute_interleaved_rope(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let d = rows / heads;
    Ok(w.reshape((heads, d / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_map_both_ways() {
        for hf in [
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.layers.12.self_attn.q_proj.bias",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.7.post_attention_layernorm.weight",
        ] {
            let g = gguf_tensor_name(hf).unwrap();
            assert_eq!(hf_tensor_name(&g).as_deref(), Some(hf));
        }
        assert_eq!(
            gguf_tensor_name("model.layers.3.self_attn.o_proj.weight").as_deref(),
            Some("blk.3.attn_output.weight")
        );
        assert_eq!(gguf_tensor_name("model.rotary_emb.inv_freq"), None);
    }

    #[test]
    fn rope_permutation_round_trips_and_moves_rows() {
        let w = Tensor::arange(0f32, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 2))
            .unwrap();
        let p = permute_for_interleaved_rope(&w, 2).unwrap();
        // head 0 rows (0,1 | 2,3) → (0,2,1,3)
        let rows: Vec<f32> = p
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(rows, vec![0., 4., 2., 6., 8., 12., 10., 14.]);
        let back = unpermute_interleaved_rope(&p, 2).unwrap();
        let diff = (back - &w)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
    }
}
