//! Independent work items spread over threads, results in the items' order: how sweeps and
//! forecasts use every core. Each simulator run is deterministic, so results never depend on
//! which thread ran what.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Every core when `threads` is 0.
pub fn thread_count(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

/// `work` applied to every item on `threads` threads (0: every core); `on_done` is told of
/// each result as it comes.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> R + Sync,
    on_done: impl Fn(&R) + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..thread_count(threads).min(items.len().max(1)) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(index) else {
                    break;
                };
                let result = work(item);
                on_done(&result);
                results
                    .lock()
                    .expect("no thread panics holding the lock")
                    .push((index, result));
            });
        }
    });
    let mut results = results.into_inner().expect("threads joined");
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn results_keep_the_items_order_and_each_is_reported() {
        let items: Vec<u64> = (0..100).collect();
        let told = AtomicU64::new(0);
        let squares = parallel_map(
            &items,
            4,
            |x| x * x,
            |_| {
                told.fetch_add(1, Ordering::Relaxed);
            },
        );
        assert_eq!(squares, items.iter().map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(told.into_inner(), 100);
        assert!(parallel_map(&[] as &[u64], 0, |x| *x, |_| {}).is_empty());
    }
}
