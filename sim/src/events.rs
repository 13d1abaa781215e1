//! The event queue: ordered by (time, sequence), so that events at one instant run in the
//! order they were scheduled and every run of a seed takes them in the same order.

use drover_engine::core::Time;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// An event with its place in line: time in the high 64 bits, sequence in the low 64, so that
/// ordering is one integer comparison (the heap compares on every sift).
struct Entry<E> {
    key: u128,
    event: E,
}

impl<E> Entry<E> {
    fn at(&self) -> Time {
        Time((self.key >> 64) as u64)
    }
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<Entry<E>>>,
    seq: u64,
    now: Time,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            now: Time::ZERO,
        }
    }
}

impl<E> EventQueue<E> {
    pub fn now(&self) -> Time {
        self.now
    }

    /// Schedules `event` at `at`; a time in the past means now.
    pub fn schedule(&mut self, at: Time, event: E) {
        self.seq += 1;
        let at = at.max(self.now);
        let key = (at.0 as u128) << 64 | self.seq as u128;
        self.heap.push(Reverse(Entry { key, event }));
    }

    pub fn pop(&mut self) -> Option<(Time, E)> {
        let Reverse(entry) = self.heap.pop()?;
        let at = entry.at();
        debug_assert!(at >= self.now);
        self.now = at;
        Some((at, entry.event))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_then_insertion_order() {
        let mut q = EventQueue::default();
        q.schedule(Time(5), "b");
        q.schedule(Time(1), "a");
        q.schedule(Time(5), "c");
        let order: Vec<&str> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!["a", "b", "c"]);
        q.schedule(Time(0), "late");
        assert_eq!(q.pop(), Some((Time(5), "late")), "the past is now");
    }
}
