//! The packed decoder's kernels: quantized matrix products, activation quantization,
//! RMSNorm, SwiGLU and decoding attention, for every instruction set seqit runs on.
//!
//! # One arithmetic on every CPU
//!
//! The portable kernels of [`reference`] define the results; the SIMD kernels of each
//! instruction set ([`Isa`]) compute exactly the same values, bit for bit:
//!
//! * Integer dot products are exact whatever instruction computes them (AVX-512 VNNI
//!   `vpdpbusd`, AVX2 `vpmaddubsw`, NEON `sdot`), because activations are quantized to
//!   `[-127, 127]` and no intermediate saturates.
//! * Every float result is one fixed sequence of IEEE operations: per output, blocks are
//!   accumulated in order with fused multiply-adds; sums across lanes use one fixed tree
//!   ([`reference::sum16`]); nothing is reassociated.
//!
//! So greedy generation gives the same tokens on an AVX-512 server, an AVX2 laptop and an
//! ARM machine, and every kernel is tested for equality against [`reference`].
//!
//! # Why the instruction-set files look alike
//!
//! `reference.rs`, `neon.rs`, `x86/avx2.rs` and `x86/avx512.rs` repeat one loop
//! structure per kernel, each with its own intrinsics and register width (16 rows in one
//! 512-bit register, 8 in a 256-bit one, 4 in a 128-bit one). The repetition is
//! deliberate: the vector types and intrinsics differ per instruction set, and code made
//! generic over them would hide the exact order of operations that the bit-equality
//! contract above depends on. Each file is instead checked against [`reference`] by the
//! tests of this module, on every instruction set the machine running them has.
//!
//! # Weight layout
//!
//! Weights are packed in tiles of 16 output rows × 32 inner values, so that one 512-bit
//! `vpdpbusd` multiplies 4 inner values of 16 rows by 4 activations (a 256-bit register
//! holds 8 rows, a 128-bit one 4). Two block formats:
//!
//! * `Q4`: GGUF `Q4_1` blocks as stored (`w = d·q + m`, `q` in 0..16), nibbles kept packed;
//!   `Q4_0` blocks (`w = d·(q − 8)`) become `Q4` with `m = −8d`, exactly.
//! * `Q8`: GGUF `Q8_0` blocks as stored (`w = d·q`), offset by +128 to be unsigned.
//!   Other types (K-quants, Q5) are re-quantized to `Q8_0` once, when packed.
//!
//! Activations are quantized per 32 values to i8 with an f32 scale (like llama.cpp's
//! `Q8_1`), so a row's dot product is `Σ_blocks d_w·d_a·Σ q_w q_a (+ m_w·d_a·Σ q_a)`. Each
//! output row is computed by the same instruction sequence whatever the batch size, so a
//! sequence's results do not depend on the other sequences in its batch.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result};
use half::f16;

use crate::pool::{parallel, SharedMut};

/// Calls `$f::<R, TWO>(args)` for the run-time row count and level count (the SIMD
/// modules' tile kernels are generic over both; defined before them so they see it).
macro_rules! dispatch_rows {
    ($f:ident, $rows:expr, $two:expr, ($($arg:expr),*)) => {
        match ($rows, $two) {
            (1, false) => $f::<1, false>($($arg),*),
            (2, false) => $f::<2, false>($($arg),*),
            (3, false) => $f::<3, false>($($arg),*),
            (4, false) => $f::<4, false>($($arg),*),
            (5, false) => $f::<5, false>($($arg),*),
            (6, false) => $f::<6, false>($($arg),*),
            (7, false) => $f::<7, false>($($arg),*),
            (_, false) => $f::<8, false>($($arg),*),
            (1, true) => $f::<1, true>($($arg),*),
            (2, true) => $f::<2, true>($($arg),*),
            (3, true) => $f::<3, true>($($arg),*),
            (4, true) => $f::<4, true>($($arg),*),
            (5, true) => $f::<5, true>($($arg),*),
            (6, true) => $f::<6, true>($($arg),*),
            (7, true) => $f::<7, true>($($arg),*),
            (_, true) => $f::<8, true>($($arg),*),
        }
    };
}

#[cfg(target_arch = "aarch64")]
mod neon;
pub(crate) mod reference;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Output rows per tile.
pub const TILE_N: usize = 16;
/// Inner values per block.
pub const QK: usize = 32;
/// Activation rows multiplied per pass over a weight tile.
pub(crate) const MT: usize = 8;

/// The instruction sets the packed kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust: the definition of the arithmetic; runs anywhere.
    Scalar,
    /// ARMv8 NEON with the dot-product extension (Apple Silicon, Graviton 2+).
    Neon,
    /// x86-64 AVX2 + FMA + F16C (Intel since Haswell, AMD since Zen).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL + VNNI (Intel since Ice Lake, AMD since Zen 4).
    Avx512Vnni,
}

impl Isa {
    /// Every instruction set, slowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512Vnni];

    /// The name `SEQIT_ISA` takes and benchmarks print.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Neon => "neon",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// Parses a name as [`Isa::name`] gives it (`avx512` is also accepted for
    /// [`Isa::Avx512Vnni`]); `None` for unknown names.
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == name || (name == "avx512" && *isa == Isa::Avx512Vnni))
    }

    /// Whether this CPU runs the kernels of `self`.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                Isa::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The instruction sets this CPU supports, slowest first (always `Scalar`).
    pub fn supported_all() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.supported()).collect()
    }

    /// The fastest supported instruction set.
    pub fn best() -> Isa {
        *Isa::supported_all()
            .last()
            .expect("scalar is always supported")
    }

    /// The instruction set the packed decoder uses: [`Isa::best`], or the one named by
    /// `SEQIT_ISA` (to compare paths on one machine). Naming one this CPU lacks is an
    /// error, never a silent fallback.
    pub fn selected() -> std::result::Result<Isa, String> {
        static SELECTED: std::sync::OnceLock<std::result::Result<Isa, String>> =
            std::sync::OnceLock::new();
        SELECTED
            .get_or_init(|| match std::env::var(ISA_VARIABLE) {
                Err(_) => Ok(Isa::best()),
                Ok(name) if name.is_empty() || name == "auto" => Ok(Isa::best()),
                Ok(name) => {
                    let supported: Vec<&str> =
                        Isa::supported_all().iter().map(|i| i.name()).collect();
                    match Isa::from_name(&name) {
                        Some(isa) if isa.supported() => Ok(isa),
                        Some(_) => Err(format!(
                            "{ISA_VARIABLE}={name}: this CPU does not support it (supported: {})",
                            supported.join(", ")
                        )),
                        None => Err(format!(
                            "{ISA_VARIABLE}={name}: unknown instruction set (supported here: {})",
                            supported.join(", ")
                        )),
                    }
                }
            })
            .clone()
    }
}

/// The instruction set of the packed decoder: the selected one ([`Isa::selected`]), or
/// none when only the portable kernels exist for this CPU and `SEQIT_ISA` does not ask
/// for them (candle's kernels are faster than portable code there).
pub fn decoder_isa() -> std::result::Result<Option<Isa>, String> {
    let isa = Isa::selected()?;
    let forced = std::env::var_os(ISA_VARIABLE).is_some_and(|v| !v.is_empty());
    Ok((isa != Isa::Scalar || forced).then_some(isa))
}

/// Whether the packed decoder will multiply blocks of `dtype` as stored on this CPU
/// (other types are re-quantized to Q8_0 when packed).
pub(crate) fn multiplies_as_stored(dtype: GgmlDType) -> bool {
    matches!(decoder_isa(), Ok(Some(_)))
        && matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q8_0)
}

/// Environment variable that forces the packed kernels' instruction set.
pub const ISA_VARIABLE: &str = "SEQIT_ISA";

/// Quantization of a [`PackedMatrix`]'s blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 4-bit quants with a scale and an offset per block (GGUF Q4_0 and Q4_1).
    Q4,
    /// 8-bit quants with a scale per block (GGUF Q8_0).
    Q8,
}

impl Kind {
    /// Bytes of one tile block: 16 f16 scales, 16 f16 offsets (Q4 only, but kept for
    /// alignment), then the quants.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Kind::Q4 => 64 + TILE_N * QK / 2,
            Kind::Q8 => 64 + TILE_N * QK,
        }
    }
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// A weight matrix `[n, k]` in tiles of 16 rows.
pub struct PackedMatrix {
    n: usize,
    k: usize,
    kind: Kind,
    tiles: usize,
    /// Tiles of two stacked matrices alternate (see [`PackedMatrix::stack`]).
    interleaved: bool,
    lines: Vec<Line>,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Raw GGUF blocks of one matrix in a format the kernels take.
struct Source<'a> {
    kind: Kind,
    n: usize,
    data: Cow<'a, [u8]>,
}

const Q4_0_BYTES: usize = 18;
const Q4_1_BYTES: usize = 20;
const Q8_0_BYTES: usize = 34;

fn source(q: &QTensor) -> Result<Source<'_>> {
    let (n, k) = q.shape().dims2()?;
    if !k.is_multiple_of(QK) {
        candle_core::bail!("inner dimension {k} is not a multiple of {QK}");
    }
    Ok(match q.dtype() {
        GgmlDType::Q4_1 => Source {
            kind: Kind::Q4,
            n,
            data: q.data()?,
        },
        GgmlDType::Q4_0 => {
            // d·(q − 8) = d·q + (−8d): a Q4_1 block with m = −8d (exact in f16).
            let data = q.data()?;
            let mut out = Vec::with_capacity(data.len() / Q4_0_BYTES * Q4_1_BYTES);
            for block in data.chunks_exact(Q4_0_BYTES) {
                let d = f16::from_le_bytes([block[0], block[1]]);
                out.extend_from_slice(&block[0..2]);
                out.extend_from_slice(&(-(d * f16::from_f32(8.0))).to_le_bytes());
                out.extend_from_slice(&block[2..]);
            }
            Source {
                kind: Kind::Q4,
                n,
                data: Cow::Owned(out),
            }
        }
        GgmlDType::Q8_0 => Source {
            kind: Kind::Q8,
            n,
            data: q.data()?,
        },
        _ => {
            // Any other type: the nearest format with a kernel is Q8_0.
            let dense = q.dequantize(&Device::Cpu)?;
            let q8 = QTensor::quantize(&dense, GgmlDType::Q8_0)?;
            Source {
                kind: Kind::Q8,
                n,
                data: Cow::Owned(q8.data()?.into_owned()),
            }
        }
    })
}

/// Re-encodes a Q4 source as Q8_0 blocks (exact up to the Q8_0 rounding), for stacking
/// it with Q8_0 matrices.
fn to_q8(src: Source<'_>, k: usize) -> Source<'static> {
    if src.kind == Kind::Q8 {
        return Source {
            kind: Kind::Q8,
            n: src.n,
            data: Cow::Owned(src.data.into_owned()),
        };
    }
    let kb = k / QK;
    let mut out = Vec::with_capacity(src.n * kb * Q8_0_BYTES);
    for block in src.data.chunks_exact(Q4_1_BYTES) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
        let mut values = [0f32; QK];
        for j in 0..QK / 2 {
            values[j] = d * (block[4 + j] & 0x0F) as f32 + m;
            values[j + QK / 2] = d * (block[4 + j] >> 4) as f32 + m;
        }
        let amax = values.iter().fold(0f32, |a, v| a.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(scale).to_le_bytes());
        out.extend(values.iter().map(|v| (v * inv).round() as i8 as u8));
    }
    Source {
        kind: Kind::Q8,
        n: src.n,
        data: Cow::Owned(out),
    }
}

impl PackedMatrix {
    /// Stacks the rows of `parts` (which share the inner dimension). With `interleave`,
    /// the tiles of two parts alternate (`a0 b0 a1 b1 ...`), as [`matmul_swiglu`]
    /// expects. Every part but the last must have a multiple of 16 rows.
    pub fn stack(parts: &[&QTensor], interleave: bool) -> Result<Self> {
        let k = parts[0].shape().dims2()?.1;
        let mut sources = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let (n, pk) = part.shape().dims2()?;
            if pk != k {
                candle_core::bail!("stacked matrices differ in their inner dimension");
            }
            if !n.is_multiple_of(TILE_N) && i + 1 < parts.len() {
                candle_core::bail!("stacked matrix with {n} rows (not a multiple of {TILE_N})");
            }
            sources.push(source(part)?);
        }
        let kind = if sources.iter().all(|s| s.kind == Kind::Q4) {
            Kind::Q4
        } else {
            Kind::Q8
        };
        if kind == Kind::Q8 {
            sources = sources.into_iter().map(|s| to_q8(s, k)).collect();
        }
        if interleave && (sources.len() != 2 || sources[0].n != sources[1].n) {
            candle_core::bail!("only two matrices of equal shape interleave");
        }
        let kb = k / QK;
        let n: usize = sources.iter().map(|s| s.n).sum();
        let tiles = n.div_ceil(TILE_N);
        let block_lines = kind.block_bytes() / 64;
        let mut lines = vec![Line([0; 64]); tiles * kb * block_lines];
        // (source, first row) of each output tile, in packed order.
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(tiles);
        if interleave {
            for t in 0..sources[0].n.div_ceil(TILE_N) {
                order.push((0, t * TILE_N));
                order.push((1, t * TILE_N));
            }
        } else {
            for (si, s) in sources.iter().enumerate() {
                for t in 0..s.n.div_ceil(TILE_N) {
                    order.push((si, t * TILE_N));
                }
            }
        }
        let block_bytes = kind.block_bytes();
        let src_block = match kind {
            Kind::Q4 => Q4_1_BYTES,
            Kind::Q8 => Q8_0_BYTES,
        };
        // SAFETY: `Line` is 64 plain bytes.
        let bytes: &mut [u8] = unsafe {
            std::slice::from_raw_parts_mut(lines.as_mut_ptr() as *mut u8, lines.len() * 64)
        };
        for (tile, &(si, row0)) in order.iter().enumerate() {
            let s = &sources[si];
            for b in 0..kb {
                let dst = &mut bytes[(tile * kb + b) * block_bytes..][..block_bytes];
                for r in 0..TILE_N.min(s.n - row0) {
                    let blk = &s.data[((row0 + r) * kb + b) * src_block..][..src_block];
                    dst[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
                    match kind {
                        Kind::Q4 => {
                            dst[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&blk[2..4]);
                            // Line g holds bytes 4g..4g+4 of every row: low nibbles are
                            // values 4g.., high nibbles 16+4g...
                            for g in 0..4 {
                                let o = 64 + g * 64 + r * 4;
                                dst[o..o + 4].copy_from_slice(&blk[4 + 4 * g..8 + 4 * g]);
                            }
                        }
                        Kind::Q8 => {
                            for g in 0..8 {
                                let o = 64 + g * 64 + r * 4;
                                for j in 0..4 {
                                    dst[o + j] = (blk[2 + 4 * g + j] as i8 as i16 + 128) as u8;
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(Self {
            n,
            k,
            kind,
            tiles,
            interleaved: interleave,
            lines,
        })
    }

    /// Number of rows (`n`, output features).
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Row `row`'s weights as f32, computed as candle dequantizes the GGUF blocks they
    /// came from (`d·q + m` for Q4, `q·d` for Q8), so a row of a packed GGUF matrix
    /// gives the same bits as candle's dequantization.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(
            row < self.n && out.len() == self.k && !self.interleaved,
            "row {row} of a {}x{} matrix (interleaved: {})",
            self.n,
            self.k,
            self.interleaved
        );
        let kb = self.k / QK;
        let (tile, r) = (row / TILE_N, row % TILE_N);
        let block_bytes = self.kind.block_bytes();
        // SAFETY: `Line` is 64 plain bytes.
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.lines.len() * 64)
        };
        for (b, values) in out.chunks_exact_mut(QK).enumerate() {
            let blk = &bytes[(tile * kb + b) * block_bytes..][..block_bytes];
            let d = f16::from_le_bytes([blk[2 * r], blk[2 * r + 1]]).to_f32();
            match self.kind {
                Kind::Q4 => {
                    let m = f16::from_le_bytes([blk[32 + 2 * r], blk[33 + 2 * r]]).to_f32();
                    for g in 0..4 {
                        for j in 0..4 {
                            let q = blk[64 + g * 64 + r * 4 + j];
                            values[4 * g + j] = (q & 0x0F) as f32 * d + m;
                            values[QK / 2 + 4 * g + j] = (q >> 4) as f32 * d + m;
                        }
                    }
                }
                Kind::Q8 => {
                    for g in 0..8 {
                        for j in 0..4 {
                            let q = blk[64 + g * 64 + r * 4 + j] as i16 - 128;
                            values[4 * g + j] = q as f32 * d;
                        }
                    }
                }
            }
        }
    }

    fn tile_ptr(&self, tile: usize) -> *const u8 {
        let kb = self.k / QK;
        // SAFETY: in bounds for tile < self.tiles.
        unsafe { (self.lines.as_ptr() as *const u8).add(tile * kb * self.kind.block_bytes()) }
    }
}

/// Activation rows quantized per 32 values, in one or two levels.
///
/// One level: `x ≈ d·q` with `q` in `[-127, 127]` (llama.cpp's arithmetic). Two levels:
/// the rounding residual is quantized again on the scale `d/256`, `x ≈ d·q₁ + (d/256)·q₂`,
/// and the kernels accumulate `256·Σq_w·q₁ + Σq_w·q₂` in one integer: products come
/// within ~1e-5 of f32 arithmetic on the same weights, for twice the integer work.
#[derive(Debug)]
pub struct QuantizedRows {
    pub(crate) levels: usize,
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) qs: Vec<i8>,
    pub(crate) qs2: Vec<i8>,
    /// Per block: the scale of one unit of the integer sums (`d`, or `d/256` with two
    /// levels), the Q8_0 offset correction `128·Σq` (in the same units) and the sum of
    /// the quantized values.
    pub(crate) d: Vec<f32>,
    pub(crate) sum128: Vec<i32>,
    pub(crate) sum: Vec<f32>,
}

impl QuantizedRows {
    /// Empty rows quantized in `levels` levels (1 or 2; panics otherwise).
    pub fn new(levels: usize) -> Self {
        assert!(levels == 1 || levels == 2, "one or two quantization levels");
        Self {
            levels,
            m: 0,
            k: 0,
            qs: Vec::new(),
            qs2: Vec::new(),
            d: Vec::new(),
            sum128: Vec::new(),
            sum: Vec::new(),
        }
    }

    /// Quantizes `x` (`m` rows of `k` values, `k` a multiple of 32), reusing buffers.
    pub fn quantize(&mut self, isa: Isa, x: &[f32], k: usize) {
        assert!(k.is_multiple_of(QK) && x.len().is_multiple_of(k));
        let m = x.len() / k;
        let kb = k / QK;
        self.m = m;
        self.k = k;
        let two = self.levels == 2;
        self.qs.resize(m * k, 0);
        self.qs2.resize(if two { m * k } else { 0 }, 0);
        self.d.resize(m * kb, 0.0);
        self.sum128.resize(m * kb, 0);
        self.sum.resize(m * kb, 0.0);
        let blocks = m * kb;
        let out = SharedMut(self as *mut QuantizedRows);
        // Rows are independent: quantize many of them in parallel (prompt processing).
        let per_unit = 64usize;
        parallel(blocks.div_ceil(per_unit), |range| {
            let (from, to) = (range.start * per_unit, (range.end * per_unit).min(blocks));
            // SAFETY: units write disjoint blocks of the buffers, which were sized above.
            unsafe { dispatch_quantize(isa, &x[from * QK..to * QK], &mut *out.get(), from) };
        });
    }
}

/// Quantizes `x` into the blocks from `first_block` of `rows`, with `isa`'s instructions.
///
/// # Safety
/// `isa` must be supported, and no other thread may write the same blocks.
unsafe fn dispatch_quantize(isa: Isa, x: &[f32], rows: &mut QuantizedRows, first_block: usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Avx2 => x86::avx2::quantize_blocks(x, rows, first_block),
        _ => reference::quantize_blocks(x, rows, first_block),
    }
}

/// One 16-row weight tile against `rows` (≤ [`MT`]) activation rows from `m0`.
///
/// # Safety
/// `isa` must be supported; `tile` must point at a whole tile of `kind` with `kb` blocks.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile(
    isa: Isa,
    kind: Kind,
    tile: *const u8,
    kb: usize,
    x: &QuantizedRows,
    m0: usize,
    rows: usize,
    out: &mut [[f32; TILE_N]; MT],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::avx512::tile(kind, tile, kb, x, m0, rows, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::avx2::tile(kind, tile, kb, x, m0, rows, out),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::tile(kind, tile, kb, x, m0, rows, out),
        _ => reference::tile(kind, tile, kb, x, m0, rows, out),
    }
}

/// Activation rows per cache block of a product: a block's quantized rows (64 × k bytes,
/// twice with two levels) stay in L2 while every weight tile passes over them. Without
/// blocking, each tile would stream all activations of a long prompt (a 16-prompt batch
/// ran 2× slower per token than 4-prompt batches).
const M_BLOCK: usize = 64;

/// Runs `f(tile, m0, rows)` for every weight tile and every pass of at most [`MT`]
/// activation rows, in parallel: units are (row block, tile) pairs, row block major.
fn for_each_tile_pass(m: usize, tiles: usize, f: impl Fn(usize, usize, usize) + Sync) {
    let m_blocks = m.div_ceil(M_BLOCK);
    parallel(m_blocks * tiles, |range| {
        for unit in range {
            let (block, tile_index) = (unit / tiles, unit % tiles);
            let end = (block * M_BLOCK + M_BLOCK).min(m);
            for m0 in (block * M_BLOCK..end).step_by(MT) {
                f(tile_index, m0, (end - m0).min(MT));
            }
        }
    });
}

/// `out[m, n] = x[m, :] · W[n, :]`, `out` row-major with `w.rows()` columns.
pub fn matmul(isa: Isa, w: &PackedMatrix, x: &QuantizedRows, out: &mut [f32]) {
    assert!(isa.supported(), "{isa:?} kernels on a CPU without them");
    assert_eq!(x.k, w.k, "inner dimensions differ");
    let (m, n) = (x.m, w.n);
    assert!(out.len() >= m * n);
    let dst = SharedMut(out.as_mut_ptr());
    for_each_tile_pass(m, w.tiles, |tile_index, m0, rows| {
        let cols = (n - tile_index * TILE_N).min(TILE_N);
        let mut acc = [[0f32; TILE_N]; MT];
        // SAFETY: the instruction set was checked above; passes write disjoint
        // [rows, 16-column] blocks of `out`.
        unsafe {
            let kb = w.k / QK;
            tile(
                isa,
                w.kind,
                w.tile_ptr(tile_index),
                kb,
                x,
                m0,
                rows,
                &mut acc,
            );
            for (r, row) in acc.iter().enumerate().take(rows) {
                let p = dst.get().add((m0 + r) * n + tile_index * TILE_N);
                std::ptr::copy_nonoverlapping(row.as_ptr(), p, cols);
            }
        }
    });
}

/// SwiGLU over gate/up weights stacked with [`PackedMatrix::stack`]`(.., true)`:
/// `out[m, j] = silu(x·gate_j) · (x·up_j)`, `out` row-major with `w.rows() / 2` columns.
pub fn matmul_swiglu(isa: Isa, w: &PackedMatrix, x: &QuantizedRows, out: &mut [f32]) {
    assert!(isa.supported(), "{isa:?} kernels on a CPU without them");
    assert_eq!(x.k, w.k, "inner dimensions differ");
    let (m, n) = (x.m, w.n / 2);
    assert!(out.len() >= m * n && w.tiles.is_multiple_of(2));
    let dst = SharedMut(out.as_mut_ptr());
    for_each_tile_pass(m, w.tiles / 2, |pair, m0, rows| {
        let cols = (n - pair * TILE_N).min(TILE_N);
        let mut gate = [[0f32; TILE_N]; MT];
        let mut up = [[0f32; TILE_N]; MT];
        let kb = w.k / QK;
        // SAFETY: as in `matmul`.
        unsafe {
            tile(
                isa,
                w.kind,
                w.tile_ptr(2 * pair),
                kb,
                x,
                m0,
                rows,
                &mut gate,
            );
            tile(
                isa,
                w.kind,
                w.tile_ptr(2 * pair + 1),
                kb,
                x,
                m0,
                rows,
                &mut up,
            );
            for r in 0..rows {
                swiglu16(isa, &mut gate[r], &up[r]);
                let p = dst.get().add((m0 + r) * n + pair * TILE_N);
                std::ptr::copy_nonoverlapping(gate[r].as_ptr(), p, cols);
            }
        }
    });
}

/// `gate = silu(gate) * up` for 16 values.
pub(crate) fn swiglu16(isa: Isa, gate: &mut [f32; TILE_N], up: &[f32; TILE_N]) {
    match isa {
        // SAFETY: the instruction set was checked by the caller's entry point.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { x86::avx512::swiglu16(gate, up) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::avx2::swiglu16(gate, up) },
        _ => reference::swiglu16(gate, up),
    }
}

/// `out = x / sqrt(mean(x²) + eps) * weight` for every row of `x` (rows of `weight.len()`).
pub fn rms_norm_rows(isa: Isa, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(isa.supported(), "{isa:?} kernels on a CPU without them");
    let n = weight.len();
    for (row, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        match isa {
            // SAFETY: checked above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { x86::avx512::rms_norm(row, weight, eps, dst) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::avx2::rms_norm(row, weight, eps, dst) },
            _ => reference::rms_norm(row, weight, eps, dst),
        }
    }
}

/// `dst[i] = f16(src[i])` (round to nearest even), as raw bits.
pub(crate) fn to_f16(isa: Isa, src: &[f32], dst: &mut [u16]) {
    match isa {
        // SAFETY: the instruction set was checked by the caller's entry point.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Avx2 => unsafe { x86::avx2::to_f16(src, dst) },
        _ => reference::to_f16(src, dst),
    }
}

/// Positions `from..to` of the cache and the score scale.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttendSpan {
    pub from: usize,
    pub to: usize,
    pub scale: f32,
}

/// `o_h = softmax(scale · q_h·K[from..to]) · V[from..to]` for `heads` (1..=4) query heads
/// sharing a KV head (`q`, `o`: `heads × head_dim`; keys in blocks of 16 positions,
/// transposed within a block, and values, as f16 bits, laid out as the packed KV cache
/// describes). `scores` needs `heads · (to − from + 32)` values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    isa: Isa,
    heads: usize,
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    span: AttendSpan,
    scores: &mut [f32],
    o: &mut [f32],
) {
    assert!((1..=4).contains(&heads));
    match isa {
        // SAFETY: the instruction set was checked by the caller's entry point.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { x86::avx512::attend(heads, q, keys, values, span, scores, o) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::avx2::attend(heads, q, keys, values, span, scores, o) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::attend(heads, q, keys, values, span, scores, o),
        _ => reference::attend(heads, q, keys, values, span, scores, o),
    }
}
