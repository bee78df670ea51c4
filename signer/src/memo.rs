//! Bounded memo tables for the hot path's pure computations on public inputs.
//!
//! A commitment round asks for the same BOLT 3 keys several times (the commitment's layout,
//! then its HTLC transactions; the counterparty's commitment, then its HTLC signatures), and
//! each derivation is one or two elliptic-curve multiplications (25–30 µs each). A [`Memo`]
//! remembers the last results of a function of public values only (basepoints and
//! per-commitment points, never a secret), keyed by the complete input, so a hit returns
//! exactly what the computation would. The table is bounded and forgets its oldest entries
//! first: a requester sending endless fresh points costs itself the computation, nothing more.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

/// A bounded table of `f(key)` for one pure function `f`.
pub struct Memo<K, V> {
    capacity: usize,
    inner: Mutex<Table<K, V>>,
}

struct Table<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Eq + Hash + Clone, V: Clone> Memo<K, V> {
    /// An empty table keeping at most `capacity` results.
    pub fn new(capacity: usize) -> Memo<K, V> {
        Memo {
            capacity: capacity.max(1),
            inner: Mutex::new(Table {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// `f(key)`: remembered if it was computed lately, computed (outside the lock) otherwise.
    pub fn get_or(&self, key: K, f: impl FnOnce() -> V) -> V {
        if let Some(v) = self.lock().map.get(&key) {
            return v.clone();
        }
        let v = f();
        let mut t = self.lock();
        if !t.map.contains_key(&key) {
            if t.order.len() >= self.capacity {
                if let Some(old) = t.order.pop_front() {
                    t.map.remove(&old);
                }
            }
            t.order.push_back(key.clone());
            t.map.insert(key, v.clone());
        }
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table<K, V>> {
        // A panic elsewhere cannot leave the table inconsistent with the function: every
        // entry is a finished result.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many results are kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_hit_returns_the_computed_value_and_the_oldest_is_forgotten_first() {
        let memo: Memo<u32, u64> = Memo::new(3);
        let calls = Cell::new(0);
        let square = |k: u32| {
            calls.set(calls.get() + 1);
            u64::from(k) * u64::from(k)
        };
        for k in [1, 2, 3] {
            assert_eq!(memo.get_or(k, || square(k)), u64::from(k * k));
        }
        assert_eq!(calls.get(), 3);
        assert_eq!(memo.get_or(2, || square(2)), 4);
        assert_eq!(calls.get(), 3, "a hit computes nothing");
        assert_eq!(memo.get_or(4, || square(4)), 16);
        assert_eq!(memo.len(), 3, "bounded");
        assert_eq!(memo.get_or(1, || square(1)), 1);
        assert_eq!(
            calls.get(),
            5,
            "the oldest (1) was forgotten and computed again"
        );
        assert_eq!(memo.get_or(3, || square(3)), 9);
        assert_eq!(calls.get(), 5, "3 was kept");
    }
}
