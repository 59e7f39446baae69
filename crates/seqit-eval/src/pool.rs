//! A bounded pool of worker threads that maps a function over items and returns the
//! results in input order, whatever order they finish in.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// The number of workers to use when none is given: the available cores.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Applies `work` to every item on at most `workers` threads (0 means
/// [`default_workers`]). `on_done(index, &result)` runs on the calling thread as each
/// result arrives (for progress and incremental writes) and may stop the run early by
/// returning `false`; items not started by then are skipped and come back as `None`.
pub fn map_ordered<T, R, W, D>(items: &[T], workers: usize, work: W, on_done: D) -> Vec<Option<R>>
where
    T: Sync,
    R: Send,
    W: Fn(usize, &T) -> R + Sync,
    D: FnMut(usize, &R) -> bool,
{
    map_ordered_with(
        items,
        workers,
        || (),
        |_, index, item| work(index, item),
        on_done,
    )
}

/// [`map_ordered`] with per-worker state: each worker thread calls `init` once and
/// passes the state to every `work` call it makes (a sandbox session, say).
pub fn map_ordered_with<T, S, R, I, W, D>(
    items: &[T],
    workers: usize,
    init: I,
    work: W,
    mut on_done: D,
) -> Vec<Option<R>>
where
    T: Sync,
    R: Send,
    I: Fn() -> S + Sync,
    W: Fn(&mut S, usize, &T) -> R + Sync,
    D: FnMut(usize, &R) -> bool,
{
    let workers = if workers == 0 {
        default_workers()
    } else {
        workers
    }
    .clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::channel::<(usize, R)>();
        for _ in 0..workers {
            let sender = sender.clone();
            let (next, stop, init, work) = (&next, &stop, &init, &work);
            scope.spawn(move || {
                let mut state = None;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else { break };
                    let state = state.get_or_insert_with(init);
                    if sender.send((index, work(state, index, item))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        for (index, result) in receiver {
            if !on_done(index, &result) {
                stop.store(true, Ordering::Relaxed);
            }
            results[index] = Some(result);
        }
    });
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_input_order() {
        let items: Vec<u64> = (0..200).collect();
        let mut seen = 0;
        let out = map_ordered(
            &items,
            4,
            |_, &x| {
                std::thread::sleep(std::time::Duration::from_micros((x * 37) % 300));
                x * 2
            },
            |_, _| {
                seen += 1;
                true
            },
        );
        assert_eq!(seen, 200);
        assert_eq!(
            out.into_iter().map(Option::unwrap).collect::<Vec<_>>(),
            (0..200).map(|x| x * 2).collect::<Vec<_>>()
        );
    }

    #[test]
    fn stops_early() {
        let items: Vec<u32> = (0..1000).collect();
        let slow = |_: usize, &x: &u32| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            x
        };
        let out = map_ordered(&items, 2, slow, |_, &r| r < 10);
        assert!(out.iter().filter(|r| r.is_some()).count() < 1000);
    }

    #[test]
    fn state_is_per_worker() {
        let items: Vec<u32> = (0..100).collect();
        let inits = AtomicUsize::new(0);
        let out = map_ordered_with(
            &items,
            3,
            || {
                inits.fetch_add(1, Ordering::Relaxed);
                0u32
            },
            |calls: &mut u32, _, &x| {
                *calls += 1;
                x
            },
            |_, _| true,
        );
        assert!(inits.load(Ordering::Relaxed) <= 3);
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn empty_input() {
        let out = map_ordered(&Vec::<u8>::new(), 3, |_, &x| x, |_, _| true);
        assert!(out.is_empty());
    }
}
