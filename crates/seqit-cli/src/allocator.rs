//! The process's allocator: mimalloc, serving large blocks from a reserved arena and
//! keeping freed memory for reuse.
//!
//! A training step creates and drops tensors of tens to hundreds of megabytes (activations,
//! logits, gradients) hundreds of times. glibc maps each such block fresh from the kernel
//! and unmaps it on free, so every page of it faults and is zeroed again: measured, more
//! than half of a LoRA step's CPU time went to page faults (docs/benchmarks.md). Blocks
//! reused from an arena make the same step 2.5x faster. The cost: memory freed after the
//! peak is not returned to the OS until exit.

use libmimalloc_sys::mi_option_t;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v2): milliseconds before freed memory is
/// returned to the OS, -1 for never.
const PURGE_DELAY: mi_option_t = 15;

/// Reserves an arena as large as the machine's memory (address space only: nothing is
/// committed until touched) and turns off purging. Call before any thread starts.
pub fn configure() {
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
