//! Key/value cache for incremental decoding of a batch of sequences.
//!
//! Buffers are pre-allocated and grown by doubling, then written in place, so a decode
//! step costs O(new tokens) copies instead of re-concatenating the whole history.
//! Rows of finished sequences can be dropped to keep later steps small.
//!
//! A cache serves one of the two decoder paths: candle tensors for
//! [`Llama::forward`](crate::Llama::forward), or plain buffers laid out for the packed
//! kernels of [`PackedDecoder::forward`](crate::PackedDecoder::forward).

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

    /// Checks that positions `from..to` of row `row` lie in the buffers.
    fn check_span(&self, row: usize, from: usize, to: usize) -> Result<()> {
        if row >= self.batch || from > to || to > self.capacity {
            candle_core::bail!(
                "positions {from}..{to} of row {row} in a cache of {} rows of {} positions",
                self.batch,
                self.capacity
            );
        }
        Ok(())
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

/// Keys and values of a run of positions of one cache row, every layer, copied out of
/// the packed buffers ([`KvCache::read_packed`]) to be written into a row of another
/// cache ([`KvCache::write_packed`]). Per layer, f16 bits, position-major:
/// `[positions, kv_heads, head_dim]`.
///
/// Keys are stored already rotated by their RoPE position relative to the row's first
/// real position, so a block is valid wherever it is written as long as it lands at the
/// same distance from the row's padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvBlock {
    /// Number of positions in the block.
    pub positions: usize,
    /// Key/value heads of the model the block came from.
    pub kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Per layer, `positions · kv_heads · head_dim` f16 bits.
    pub k: Vec<Vec<u16>>,
    /// Per layer, the values, laid out like `k`.
    pub v: Vec<Vec<u16>>,
}

impl KvBlock {
    /// Memory the keys and values take.
    pub fn bytes(&self) -> usize {
        let per_layer = self.positions * self.kv_heads * self.head_dim * 2;
        2 * self.k.len() * per_layer
    }
}

/// Keys and values of every layer for a batch of sequences, so that each decode step
/// attends to the history without recomputing it. One cache serves one batch on one
/// decoder path: [`Llama::forward`](crate::Llama::forward) or
/// [`PackedDecoder::forward`](crate::PackedDecoder::forward).
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
    /// An empty cache for a model of `num_layers` layers; buffers are allocated on the
    /// first forward pass.
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

    /// Whether no position is cached yet.
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

    /// Makes sure the packed-path buffers exist for `batch` rows of `kv_heads × head_dim`
    /// with room for `positions` positions (and at least what the cache reserved), so
    /// that [`Self::write_packed`] can fill positions before the first forward pass.
    pub fn reserve_packed(
        &mut self,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        positions: usize,
    ) -> Result<()> {
        self.packed_mut(batch, kv_heads, head_dim, positions)?;
        Ok(())
    }

    /// Copies the keys and values of row `row`, positions `from..to`, of every layer
    /// out of the packed buffers.
    pub fn read_packed(&self, row: usize, from: usize, to: usize) -> Result<KvBlock> {
        let Some(p) = &self.packed else {
            candle_core::bail!("this cache holds no packed keys and values");
        };
        p.check_span(row, from, to)?;
        let (h, d, cap) = (p.kv_heads, p.head_dim, p.capacity);
        let n = to - from;
        let mut block = KvBlock {
            positions: n,
            kv_heads: h,
            head_dim: d,
            k: Vec::with_capacity(p.k.len()),
            v: Vec::with_capacity(p.v.len()),
        };
        for (keys, values) in p.k.iter().zip(&p.v) {
            let mut k = vec![0u16; n * h * d];
            let mut v = vec![0u16; n * h * d];
            for hk in 0..h {
                let base = (row * h + hk) * cap;
                for (i, j) in (from..to).enumerate() {
                    let dst = (i * h + hk) * d;
                    let key_block = (base + j / 16 * 16) * d + j % 16;
                    for (dd, out) in k[dst..dst + d].iter_mut().enumerate() {
                        *out = keys[key_block + dd * 16];
                    }
                    v[dst..dst + d].copy_from_slice(&values[(base + j) * d..][..d]);
                }
            }
            block.k.push(k);
            block.v.push(v);
        }
        Ok(block)
    }

    /// Writes `block` into row `row` from position `at` on (the inverse of
    /// [`Self::read_packed`]); the buffers must exist ([`Self::reserve_packed`]) with
    /// room for `at + block.positions` positions.
    pub fn write_packed(&mut self, row: usize, at: usize, block: &KvBlock) -> Result<()> {
        let Some(p) = &mut self.packed else {
            candle_core::bail!("this cache holds no packed keys and values; reserve them first");
        };
        let (h, d, cap) = (p.kv_heads, p.head_dim, p.capacity);
        let layers = p.k.len();
        if block.kv_heads != h
            || block.head_dim != d
            || block.k.len() != layers
            || block.v.len() != layers
        {
            candle_core::bail!(
                "a block of {} layers of {}x{} keys for a cache of {layers} layers of {h}x{d}",
                block.k.len(),
                block.kv_heads,
                block.head_dim
            );
        }
        let n = block.positions;
        p.check_span(row, at, at + n)?;
        for ((keys, values), (k, v)) in
            p.k.iter_mut()
                .zip(&mut p.v)
                .zip(block.k.iter().zip(&block.v))
        {
            if k.len() != n * h * d || v.len() != n * h * d {
                candle_core::bail!("a block's buffers do not hold {n} positions");
            }
            for hk in 0..h {
                let base = (row * h + hk) * cap;
                for i in 0..n {
                    let j = at + i;
                    let src = (i * h + hk) * d;
                    let key_block = (base + j / 16 * 16) * d + j % 16;
                    for (dd, &key) in k[src..src + d].iter().enumerate() {
                        keys[key_block + dd * 16] = key;
                    }
                    values[(base + j) * d..][..d].copy_from_slice(&v[src..src + d]);
                }
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A packed cache of `batch` rows whose every key and value is a distinct number.
    fn filled(batch: usize, positions: usize) -> KvCache {
        let mut cache = KvCache::new(3);
        cache.reserve_packed(batch, 2, 8, positions).unwrap();
        let p = cache.packed.as_mut().unwrap();
        for (layer, (k, v)) in p.k.iter_mut().zip(&mut p.v).enumerate() {
            for (i, (k, v)) in k.iter_mut().zip(v.iter_mut()).enumerate() {
                *k = (i * 7 + layer * 13) as u16;
                *v = (i * 11 + layer * 5 + 1) as u16;
            }
        }
        cache
    }

    #[test]
    fn blocks_round_trip_at_any_offset() {
        let source = filled(3, 64);
        let block = source.read_packed(1, 5, 37).unwrap();
        assert_eq!(block.positions, 32);
        assert_eq!(block.bytes(), 2 * 3 * 32 * 2 * 8 * 2);
        for at in [0, 3, 16, 21] {
            let mut target = KvCache::with_capacity(3, 80);
            target.reserve_packed(2, 2, 8, 60).unwrap();
            target.write_packed(1, at, &block).unwrap();
            assert_eq!(
                target.read_packed(1, at, at + 32).unwrap(),
                block,
                "at {at}"
            );
            // Nothing else was written.
            let zero = |row, from, to| {
                let b = target.read_packed(row, from, to).unwrap();
                b.k.iter().chain(&b.v).all(|l| l.iter().all(|&x| x == 0))
            };
            assert!(zero(0, 0, 80) && zero(1, 0, at) && zero(1, at + 32, 80));
        }
    }

    #[test]
    fn blocks_follow_the_packed_layout() {
        let source = filled(2, 32);
        let block = source.read_packed(1, 17, 19).unwrap();
        let p = source.packed.as_ref().unwrap();
        let (h, d, cap) = (2, 8, p.capacity);
        // Layer 2, position 18 (index 1 of the block), KV head 1, dimension 3.
        let (layer, j, hk, dd) = (2, 18, 1, 3);
        let key = p.k[layer][((h + hk) * cap + 16) * d + dd * 16 + j % 16];
        let value = p.v[layer][((h + hk) * cap + j) * d + dd];
        assert_eq!(block.k[layer][(h + hk) * d + dd], key);
        assert_eq!(block.v[layer][(h + hk) * d + dd], value);
    }

    #[test]
    fn spans_outside_the_buffers_are_refused() {
        let mut cache = filled(2, 32);
        assert!(cache.read_packed(2, 0, 1).is_err());
        assert!(cache.read_packed(0, 5, 33).is_err());
        let block = cache.read_packed(0, 0, 16).unwrap();
        assert!(cache.write_packed(0, 17, &block).is_err());
        assert!(cache.write_packed(2, 0, &block).is_err());
        assert!(KvCache::new(3).write_packed(0, 0, &block).is_err());
        let mut other = KvCache::new(2);
        other.reserve_packed(1, 2, 8, 32).unwrap();
        assert!(
            other.write_packed(0, 0, &block).is_err(),
            "layer count differs"
        );
    }
}
