//! A small thread pool for the model's kernels (packed matmuls, decoding attention,
//! training ops).
//!
//! The caller publishes a job and works on it too; workers claim chunks with an
//! atomic counter, and the caller waits only for chunks that were claimed. A worker
//! that wakes late (descheduled on a busy machine) finds nothing left and is never
//! waited for, so a loaded machine degrades towards single-thread speed instead of
//! stalling at every barrier. Workers spin briefly between jobs, then park.
//!
//! A worker descheduled while holding a chunk still makes the caller wait; when a
//! wait lasts much longer than chunks take (the machine is oversubscribed), the
//! pool runs jobs on the caller alone for a while, then tries again.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_micros(300);
/// How long the pool runs jobs single-threaded after a stall; doubled (up to
/// `SOLO_MAX`) while stalls keep coming, halved after a job without one.
const SOLO_MIN: Duration = Duration::from_millis(50);
const SOLO_MAX: Duration = Duration::from_secs(2);

type Task = dyn Fn(Range<usize>) + Sync;

struct Job {
    units: usize,
    chunk: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
    /// The caller's closure, lifetime erased. Only called for a claimed chunk,
    /// and the caller does not return before every claimed chunk is done.
    task: *const Task,
}

// SAFETY: `task` is only dereferenced under the claiming protocol above.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// Runs chunks until none is left; returns how many this thread ran.
    fn work(&self) -> usize {
        let mut ran = 0;
        loop {
            let start = self.next.fetch_add(self.chunk, Ordering::AcqRel);
            if start >= self.units {
                return ran;
            }
            ran += 1;
            let end = (start + self.chunk).min(self.units);
            // SAFETY: a chunk was claimed, so the caller is still waiting.
            let task = unsafe { &*self.task };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(start..end))).is_err()
            {
                self.panicked.store(true, Ordering::Release);
            }
            self.done.fetch_add(end - start, Ordering::AcqRel);
        }
    }
}

struct Shared {
    job: Mutex<Option<Arc<Job>>>,
    epoch: AtomicU64,
    sleeping: Vec<AtomicBool>,
    threads: OnceLock<Vec<std::thread::Thread>>,
    /// Serializes callers (a caller that finds the pool busy runs alone), and
    /// holds the single-threaded spell.
    busy: Mutex<Solo>,
}

#[derive(Default)]
struct Solo {
    until: Option<Instant>,
    spell: Duration,
}

thread_local! {
    static IS_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<&'static Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let workers = threads().saturating_sub(1);
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            job: Mutex::new(None),
            epoch: AtomicU64::new(0),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            threads: OnceLock::new(),
            busy: Mutex::new(Solo::default()),
        }));
        let handles = (0..workers)
            .filter_map(|i| {
                std::thread::Builder::new()
                    .name(format!("seqit-worker-{i}"))
                    .spawn(move || worker(shared, i))
                    .ok()
                    .map(|h| h.thread().clone())
            })
            .collect();
        let _ = shared.threads.set(handles);
        shared
    })
}

/// Threads used (the caller included): `CANDLE_NUM_THREADS` or
/// `RAYON_NUM_THREADS` as candle reads them, else the available parallelism.
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"]
            .iter()
            .find_map(|v| {
                std::env::var(v)
                    .ok()?
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
            })
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

fn worker(shared: &'static Shared, index: usize) {
    IS_WORKER.with(|w| w.set(true));
    let mut seen = shared.epoch.load(Ordering::Acquire);
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = shared.epoch.load(Ordering::Acquire);
            if epoch != seen {
                seen = epoch;
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) || since.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            shared.sleeping[index].store(true, Ordering::SeqCst);
            if shared.epoch.load(Ordering::SeqCst) == seen {
                std::thread::park();
            }
            shared.sleeping[index].store(false, Ordering::SeqCst);
            since = Instant::now();
        }
        let job = shared.job.lock().map(|j| j.clone()).unwrap_or(None);
        if let Some(job) = job {
            job.work();
        }
    }
}

/// Runs `task` over `0..units`.
fn run<'a>(units: usize, task: &'a (dyn Fn(Range<usize>) + Sync + 'a)) {
    if units == 0 {
        return;
    }
    let threads = threads();
    if units == 1 || threads == 1 || IS_WORKER.with(|w| w.get()) {
        return task(0..units);
    }
    let shared = shared();
    let Ok(mut solo) = shared.busy.try_lock() else {
        return task(0..units);
    };
    let started = Instant::now();
    if solo.until.is_some_and(|until| started < until) {
        return task(0..units);
    }
    // ~8 chunks per thread: fast threads absorb a slow one's share.
    let chunk = units.div_ceil(threads * 8).max(1);
    // SAFETY: only the lifetime is erased; see `Job::task`.
    let task: *const Task = unsafe {
        std::mem::transmute::<&'a (dyn Fn(Range<usize>) + Sync + 'a), &'static Task>(task)
    };
    let job = Arc::new(Job {
        units,
        chunk,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
        task,
    });
    *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.clone());
    shared.epoch.fetch_add(1, Ordering::SeqCst);
    if let Some(threads) = shared.threads.get() {
        for (thread, sleeping) in threads.iter().zip(&shared.sleeping) {
            if sleeping.load(Ordering::SeqCst) {
                thread.unpark();
            }
        }
    }
    let ran = job.work();
    let worked = started.elapsed();
    let mut spins = 0u32;
    while job.done.load(Ordering::Acquire) < units {
        spins = spins.saturating_add(1);
        if spins < 4096 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let waited = started.elapsed().saturating_sub(worked);
    let chunk_time = worked / ran.max(1) as u32;
    if waited > Duration::from_micros(500) && waited > 4 * chunk_time {
        solo.spell = (solo.spell * 2).clamp(SOLO_MIN, SOLO_MAX);
        solo.until = Some(Instant::now() + solo.spell);
    } else {
        solo.spell /= 2;
    }
    if job.panicked.load(Ordering::Acquire) {
        panic!("a packed-kernel task panicked");
    }
}

/// Runs `f` over `0..units` in chunks of consecutive items, on the calling thread and
/// the workers of the pool.
pub(crate) fn parallel(units: usize, f: impl Fn(Range<usize>) + Sync) {
    run(units, &f);
}

/// A buffer shared by parallel units that write disjoint parts of it.
#[derive(Debug)]
pub(crate) struct SharedMut<T>(pub *mut T);
impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
// SAFETY: every parallel unit writes a disjoint part of the buffer.
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}
