//! First-fit placement of step intervals into slots, in O(log slots) per query.
//!
//! The memory plan puts each chain of values, given as the step interval it is alive,
//! into the lowest-numbered slot of its kind that no earlier chain occupies anywhere in
//! that interval. Scanning every slot per chain is quadratic in depth: a training step
//! keeps one slot per saved activation, and most chains look at all of them. Here a
//! sweep over the chains' first steps keeps, per slot, one number that decides whether
//! the slot is free from the current step up to any last step, and a max-tree over
//! slots finds the leftmost free one.
//!
//! Invariant (checked against the scan by the tests below): [`FirstFit::find`] answers
//! exactly what scanning the slots in order would. The sweep restarts when a query's
//! first step goes backwards, so it is fast when queries mostly come in step order, as
//! the memory plan's do within each size of buffer.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Slots of kind `K`, each holding disjoint step intervals.
pub(super) struct FirstFit<K> {
    /// Per slot: its kind and its intervals, `first -> last`, inclusive and disjoint.
    slots: Vec<(K, BTreeMap<usize, usize>)>,
    /// Per kind: a max-tree over slot numbers of each slot's [`FirstFit::free_until`]
    /// (0 for slots of other kinds).
    trees: Vec<(K, MaxTree)>,
    /// The sweep's step: every free-until value is as seen from here.
    at: usize,
    /// Steps at which a slot's free-until value changes, soonest first; an entry counts
    /// only while it equals the slot's `next_change`.
    changes: BinaryHeap<Reverse<(usize, usize)>>,
    next_change: Vec<Option<usize>>,
    capacity: usize,
}

impl<K: Copy + PartialEq> FirstFit<K> {
    /// Room for at most `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        FirstFit {
            slots: Vec::new(),
            trees: Vec::new(),
            at: 0,
            changes: BinaryHeap::new(),
            next_change: Vec::new(),
            capacity,
        }
    }

    /// The lowest-numbered slot of `kind` free over steps `first..=last`, if any.
    pub fn find(&mut self, kind: K, first: usize, last: usize) -> Option<usize> {
        self.sweep_to(first);
        let tree = &self.trees.iter().find(|(k, _)| *k == kind)?.1;
        tree.leftmost_above(last)
    }

    /// A new empty slot of `kind`; its number.
    pub fn add_slot(&mut self, kind: K) -> usize {
        assert!(self.slots.len() < self.capacity, "more slots than planned");
        if !self.trees.iter().any(|(k, _)| *k == kind) {
            self.trees.push((kind, MaxTree::new(self.capacity)));
        }
        self.slots.push((kind, BTreeMap::new()));
        self.next_change.push(None);
        let slot = self.slots.len() - 1;
        self.refresh(slot);
        slot
    }

    /// Marks `first..=last` taken in `slot` (free there: [`FirstFit::find`] said so).
    pub fn occupy(&mut self, slot: usize, first: usize, last: usize) {
        self.slots[slot].1.insert(first, last);
        self.refresh(slot);
    }

    /// Moves the sweep to `step`: from scratch if it goes back, else by the changes due.
    fn sweep_to(&mut self, step: usize) {
        if step < self.at {
            self.at = step;
            self.changes.clear();
            for slot in 0..self.slots.len() {
                self.refresh(slot);
            }
            return;
        }
        self.at = step;
        while let Some(&Reverse((when, slot))) = self.changes.peek() {
            if when > step {
                break;
            }
            self.changes.pop();
            if self.next_change[slot] == Some(when) {
                self.refresh(slot);
            }
        }
    }

    /// Recomputes `slot`'s free-until value at the sweep's step and when it next changes.
    fn refresh(&mut self, slot: usize) {
        let (value, change) = self.free_until(slot);
        let kind = self.slots[slot].0;
        let tree = &mut self
            .trees
            .iter_mut()
            .find(|(k, _)| *k == kind)
            .expect("made")
            .1;
        tree.set(slot, value);
        self.next_change[slot] = change;
        if let Some(when) = change {
            self.changes.push(Reverse((when, slot)));
        }
    }

    /// Seen from the sweep's step `at`: 0 if `slot` is taken at `at`, else the first
    /// step after `at` it is taken (`usize::MAX`: never). The slot is free over
    /// `at..=last` exactly when this exceeds `last`. Also the step at which the value
    /// next changes.
    fn free_until(&self, slot: usize) -> (usize, Option<usize>) {
        let held = &self.slots[slot].1;
        if let Some((_, &end)) = held.range(..=self.at).next_back() {
            if end >= self.at {
                return (0, end.checked_add(1));
            }
        }
        match held.range(self.at + 1..).next() {
            Some((&start, _)) => (start, Some(start)),
            None => (usize::MAX, None),
        }
    }
}

/// A complete binary tree of maxima over `0..capacity` leaves (all 0 at first).
struct MaxTree {
    leaves: usize,
    nodes: Vec<usize>,
}

impl MaxTree {
    fn new(capacity: usize) -> Self {
        let leaves = capacity.max(1).next_power_of_two();
        MaxTree {
            leaves,
            nodes: vec![0; 2 * leaves],
        }
    }

    fn set(&mut self, leaf: usize, value: usize) {
        let mut n = leaf + self.leaves;
        self.nodes[n] = value;
        while n > 1 {
            n /= 2;
            self.nodes[n] = self.nodes[2 * n].max(self.nodes[2 * n + 1]);
        }
    }

    /// The lowest leaf whose value exceeds `bound`.
    fn leftmost_above(&self, bound: usize) -> Option<usize> {
        if self.nodes[1] <= bound {
            return None;
        }
        let mut n = 1;
        while n < self.leaves {
            n = if self.nodes[2 * n] > bound {
                2 * n
            } else {
                2 * n + 1
            };
        }
        Some(n - self.leaves)
    }
}

#[cfg(test)]
mod tests {
    use super::FirstFit;
    use std::collections::BTreeMap;

    /// The scan the sweep replaces: every slot in order, each checked on its own.
    fn scan(
        slots: &[(u8, BTreeMap<usize, usize>)],
        kind: u8,
        first: usize,
        last: usize,
    ) -> Option<usize> {
        slots.iter().position(|(k, held)| {
            *k == kind
                && held
                    .range(..=last)
                    .next_back()
                    .is_none_or(|(_, &end)| end < first)
        })
    }

    /// Random intervals of two kinds, placed by both; queries in runs of rising first
    /// steps (as the memory plan asks) and in no order at all.
    #[test]
    fn placements_equal_the_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for case in 0..200 {
            let count = 1 + next(300);
            let steps = 1 + next(400);
            let mut queries: Vec<(u8, usize, usize)> = (0..count)
                .map(|_| {
                    let first = next(steps);
                    (next(2) as u8, first, first + next(steps - first + 1))
                })
                .collect();
            if case % 2 == 0 {
                queries.sort_by_key(|&(_, first, last)| (last - first) % 5 * 1000 + first);
            }
            let mut fast = FirstFit::new(count);
            let mut slow: Vec<(u8, BTreeMap<usize, usize>)> = Vec::new();
            for (kind, first, last) in queries {
                let expected = scan(&slow, kind, first, last);
                assert_eq!(fast.find(kind, first, last), expected, "case {case}");
                let slot = expected.unwrap_or_else(|| {
                    slow.push((kind, BTreeMap::new()));
                    fast.add_slot(kind)
                });
                slow[slot].1.insert(first, last);
                fast.occupy(slot, first, last);
            }
        }
    }
}
