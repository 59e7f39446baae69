//! Key/value cache for incremental decoding of a batch of sequences.
//!
//! Buffers are pre-allocated and grown by doubling, then written in place, so a decode
//! step costs O(new tokens) copies instead of re-concatenating the whole history.
//! Rows of finished sequences can be dropped to keep later steps small.

use candle_core::{Result, Tensor};

#[derive(Debug, Clone)]
struct LayerKv {
    /// `[batch, kv_heads, capacity, head_dim]`
    k: Tensor,
    v: Tensor,
}

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    /// Number of positions written (the same for every layer after a full forward).
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
            capacity: 0,
        }
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `k`, `v` (`[batch, kv_heads, t, head_dim]`) for `layer` and returns the
    /// whole cached history for that layer.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let start = self.len;
        let needed = start + t;
        let is_last_layer = layer + 1 == self.layers.len();
        let entry = &mut self.layers[layer];
        match entry {
            None => {
                let capacity = needed.next_power_of_two().max(64);
                let (b, h, _, d) = k.dims4()?;
                let buffer = || Tensor::zeros((b, h, capacity, d), k.dtype(), k.device());
                *entry = Some(LayerKv {
                    k: buffer()?,
                    v: buffer()?,
                });
                if layer == 0 {
                    self.capacity = capacity;
                }
            }
            Some(kv) if kv.k.dim(2)? < needed => {
                let capacity = needed.next_power_of_two();
                let (b, h, old, d) = kv.k.dims4()?;
                let pad = Tensor::zeros((b, h, capacity - old, d), k.dtype(), k.device())?;
                kv.k = Tensor::cat(&[&kv.k, &pad], 2)?;
                kv.v = Tensor::cat(&[&kv.v, &pad], 2)?;
                if layer == 0 {
                    self.capacity = capacity;
                }
            }
            Some(_) => {}
        }
        let kv = entry.as_mut().expect("initialised above");
        kv.k.slice_set(&k.contiguous()?, 2, start)?;
        kv.v.slice_set(&v.contiguous()?, 2, start)?;
        if is_last_layer {
            self.len = needed;
        }
        Ok((kv.k.narrow(2, 0, needed)?, kv.v.narrow(2, 0, needed)?))
    }

    /// Keeps only the batch rows listed in `rows` (in that order).
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for kv in self.layers.iter_mut().flatten() {
            kv.k = kv.k.index_select(rows, 0)?;
            kv.v = kv.v.index_select(rows, 0)?;
        }
        Ok(())
    }
}
