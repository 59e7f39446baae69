//! aarch64 kernels. NEON is part of the base architecture, so [`super::reference`]'s
//! element-wise kernels are already compiled with it; the tile product uses `sdot`.

use super::{reference, Kind, QuantizedRows, MT, TILE_N};

/// See [`super::tile`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile(
    kind: Kind,
    tile: *const u8,
    kb: usize,
    x: &QuantizedRows,
    m0: usize,
    rows: usize,
    out: &mut [[f32; TILE_N]; MT],
) {
    reference::tile(kind, tile, kb, x, m0, rows, out)
}
