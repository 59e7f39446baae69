//! Key/value cache for incremental decoding of a batch of sequences.
//!
//! Buffers are pre-allocated and grown by doubling, then written in place, so a decode
//! step costs O(new tokens) copies instead of re-concatenating the whole history.
//! Rows of finished sequences can be dropped to keep later steps small.
//!
//! A cache serves one of the two decoder paths: candle tensors for
//! [`Llama::forward`](crate::Llama::forward), or plain buffers laid out for the packed
//! kernels of [`Llama::forward_packed`](crate::Llama::forward_packed).

use candle_core::{Result, Tensor};

#[derive(Debug, Clone)]
struct LayerKv {
    /// `[batch, kv_heads, capacity, head_dim]`
    k: Tensor,
    v: Tensor,
}

/// Keys and values of the packed path, per layer, as f16 bits (llama.cpp's default cache
/// type: half the memory traffic of f32). Keys are stored in blocks of 16 positions,
/// transposed within a block (`[batch, kv_heads, capacity / 16, head_dim, 16]`), so that
/// the scores of a block are one vector computed from contiguous memory; values as
/// `[batch, kv_heads, capacity, head_dim]`.
#[derive(Debug, Clone)]
pub(crate) struct PackedKv {
    pub batch: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions per row, a multiple of 16.
    pub capacity: usize,
    pub k: Vec<Vec<u16>>,
    pub v: Vec<Vec<u16>>,
}

/// Slack after each buffer: attention reads whole 16-position vectors.
const SLACK: usize = 16;

impl PackedKv {
    fn new(layers: usize, batch: usize, kv_heads: usize, head_dim: usize, capacity: usize) -> Self {
        let capacity = capacity.next_multiple_of(16);
        let size = batch * kv_heads * head_dim * capacity + SLACK;
        Self {
            batch,
            kv_heads,
            head_dim,
            capacity,
            k: (0..layers).map(|_| vec![0u16; size]).collect(),
            v: (0..layers).map(|_| vec![0u16; size]).collect(),
        }
    }

    /// Copies the first `len` positions of rows `rows` of `self` into `into`.
    fn copy_into(&self, into: &mut PackedKv, rows: &[usize], len: usize) {
        let (h, d) = (self.kv_heads, self.head_dim);
        let key_len = len.next_multiple_of(16) * d;
        for layer in 0..self.k.len() {
            for (dst_b, &src_b) in rows.iter().enumerate() {
                for hk in 0..h {
                    let src = (src_b * h + hk) * self.capacity * d;
                    let dst = (dst_b * h + hk) * into.capacity * d;
                    into.k[layer][dst..dst + key_len]
                        .copy_from_slice(&self.k[layer][src..src + key_len]);
                    into.v[layer][dst..dst + len * d]
                        .copy_from_slice(&self.v[layer][src..src + len * d]);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    packed: Option<PackedKv>,
    /// Number of positions written (the same for every layer after a full forward).
    len: usize,
    capacity: usize,
    /// Positions to allocate room for up front.
    reserve: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            packed: None,
            len: 0,
            capacity: 0,
            reserve: 0,
        }
    }

    /// A cache that allocates room for `positions` positions on first use, so that a
    /// generation of known length never grows (copies) its buffers.
    pub fn with_capacity(num_layers: usize, positions: usize) -> Self {
        Self {
            reserve: positions,
            ..Self::new(num_layers)
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
                let capacity = needed.max(self.reserve).next_power_of_two().max(64);
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

    /// The packed-path buffers, with room for `needed` positions of `batch` rows.
    pub(crate) fn packed_mut(
        &mut self,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        needed: usize,
    ) -> candle_core::Result<&mut PackedKv> {
        if self.layers.iter().any(Option::is_some) {
            candle_core::bail!("this cache holds tensors of the candle decoder path");
        }
        let layers = self.layers.len();
        let fits =
            |p: &PackedKv| p.batch == batch && p.kv_heads == kv_heads && p.head_dim == head_dim;
        match &mut self.packed {
            Some(p) if !fits(p) => candle_core::bail!(
                "the cache holds {} rows of {}x{} keys, the batch has {batch} rows of {kv_heads}x{head_dim}",
                p.batch,
                p.kv_heads,
                p.head_dim
            ),
            Some(p) if p.capacity < needed => {
                let mut grown = PackedKv::new(layers, batch, kv_heads, head_dim, needed.next_power_of_two());
                let rows: Vec<usize> = (0..batch).collect();
                p.copy_into(&mut grown, &rows, self.len);
                *p = grown;
            }
            Some(_) => {}
            None => {
                let capacity = needed.max(self.reserve);
                self.packed = Some(PackedKv::new(layers, batch, kv_heads, head_dim, capacity));
            }
        }
        let packed = self.packed.as_mut().expect("set above");
        self.capacity = packed.capacity;
        Ok(packed)
    }

    /// Records that a forward pass of the packed path wrote `t` more positions.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Keeps only the batch rows listed in `rows` (in that order).
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for kv in self.layers.iter_mut().flatten() {
            kv.k = kv.k.index_select(rows, 0)?;
            kv.v = kv.v.index_select(rows, 0)?;
        }
        if let Some(p) = &mut self.packed {
            let rows: Vec<usize> = rows
                .to_vec1::<u32>()?
                .into_iter()
                .map(|r| r as usize)
                .collect();
            if let Some(&bad) = rows.iter().find(|&&r| r >= p.batch) {
                candle_core::bail!("row {bad} of a cache of {} rows", p.batch);
            }
            let mut kept = PackedKv::new(
                self.layers.len(),
                rows.len(),
                p.kv_heads,
                p.head_dim,
                p.capacity,
            );
            p.copy_into(&mut kept, &rows, self.len);
            *p = kept;
        }
        Ok(())
    }
}
