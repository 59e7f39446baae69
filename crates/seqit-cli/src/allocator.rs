//! The process's allocator: mimalloc, serving large blocks from a reserved arena and
//! keeping freed memory for reuse.
//!
//! A training step creates and drops tensors of tens to hundreds of megabytes (activations,
//! logits, gradients) hundreds of times. glibc serves blocks this large with fresh
//! mappings and unmaps them on free, so every page of every such tensor faults and is
//! zeroed again: measured, 45% of a LoRA step's CPU time went to the kernel for that.
//! Blocks reused from an arena made the same step 3.6x faster (41 → 150 tokens/s,
//! docs/benchmarks.md), with freed memory kept for reuse (memory freed after the peak
//! goes back to the OS only at exit). Other commands keep mimalloc's defaults: generation
//! is faster with them than with glibc (b1 +10%), its peak RSS 16% higher.

use libmimalloc_sys::mi_option_t;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v2): milliseconds before freed memory is
/// returned to the OS, -1 for never.
const PURGE_DELAY: mi_option_t = 15;

/// Sets mimalloc up for training, whose peak memory recurs every step: reserves an arena
/// as large as the machine's memory (address space only: nothing is committed until
/// touched) and stops returning freed memory to the OS. Call before the command starts
/// any thread.
pub fn tune_for_training() {
    // SAFETY: mimalloc's option setter is not thread-safe; no other thread exists yet.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
    let Some(bytes) = physical_memory() else {
        return;
    };
    let mut arena = std::mem::MaybeUninit::uninit();
    // SAFETY: plain FFI call writing the new arena's id. If the reservation fails,
    // mimalloc goes on allocating from the OS directly: slower, still correct.
    unsafe {
        libmimalloc_sys::mi_reserve_os_memory_ex(bytes, false, false, false, arena.as_mut_ptr());
    }
}

/// Returns the memory freed so far to the OS now instead of after mimalloc's purge
/// delay, which only runs when the freeing thread allocates again: a model load frees
/// hundreds of megabytes at once (candle's copies of weights the packed decoder holds).
pub fn return_freed_memory() {
    // SAFETY: plain FFI call; mimalloc collects the calling thread's heap and purges
    // the memory every thread has freed back to its arenas.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

fn physical_memory() -> Option<usize> {
    // SAFETY: sysconf has no preconditions.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && page_size > 0).then(|| pages as usize * page_size as usize)
}
