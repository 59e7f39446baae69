//! x86-64 kernels: AVX-512 VNNI and AVX2 (+FMA, F16C).

pub(crate) mod avx2;
pub(crate) mod avx512;

use super::QK;
use std::arch::x86_64::*;

/// The 4 activation bytes `j..j+4` of `a` in every 32-bit lane.
macro_rules! bcast4 {
    ($set1:ident, $a:expr, $j:expr) => {
        $set1(std::ptr::read_unaligned(($a as *const i32).add($j)))
    };
}
pub(crate) use bcast4;

/// Runs `$body!(i)` for the rows `i < R`, unrolled so that the accumulators stay in
/// registers.
macro_rules! for_rows {
    ($R:ident, $body:ident) => {
        $body!(0);
        if $R > 1 {
            $body!(1);
        }
        if $R > 2 {
            $body!(2);
        }
        if $R > 3 {
            $body!(3);
        }
        if $R > 4 {
            $body!(4);
        }
        if $R > 5 {
            $body!(5);
        }
        if $R > 6 {
            $body!(6);
        }
        if $R > 7 {
            $body!(7);
        }
    };
}
pub(crate) use for_rows;

/// Sums the 16 lanes of two 8-lane halves (`lo` = lanes 0..8) in the order of
/// [`super::reference::sum16`].
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn sum16(lo: __m256, hi: __m256) -> f32 {
    let mut lanes = [0f32; 16];
    _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
    super::reference::sum16(lanes)
}

const _: () = assert!(QK == 32);
