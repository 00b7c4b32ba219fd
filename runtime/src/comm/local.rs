//! A simulated world: its ranks are threads of one process, meeting at barriers. Tests
//! run any world size with it (each rank's program on its own thread, under
//! [`super::with_world`]), and its sums are the reference the MPI engine is checked
//! against: added in rank order, in the element type.

use super::{Collectives, CommError};
use std::ops::Add;
use std::sync::{Arc, Barrier, Mutex};

/// The shared meeting point of a local world's ranks.
struct Meeting {
    barrier: Barrier,
    f32s: Mutex<Vec<Vec<f32>>>,
    f64s: Mutex<Vec<Vec<f64>>>,
}

/// One rank of a local world.
pub struct LocalWorld {
    rank: usize,
    size: usize,
    meeting: Arc<Meeting>,
}

impl LocalWorld {
    /// A world of `size` ranks (at least 1): hand one to each thread.
    pub fn ranks(size: usize) -> Vec<Arc<LocalWorld>> {
        let size = size.max(1);
        let meeting = Arc::new(Meeting {
            barrier: Barrier::new(size),
            f32s: Mutex::new(vec![Vec::new(); size]),
            f64s: Mutex::new(vec![Vec::new(); size]),
        });
        (0..size)
            .map(|rank| {
                Arc::new(LocalWorld {
                    rank,
                    size,
                    meeting: meeting.clone(),
                })
            })
            .collect()
    }

    /// Every rank leaves its values in `slots`; after the first barrier each reads all
    /// of them, and the second keeps anyone from refilling a slot still being read.
    fn all_reduce<T: Copy + Add<Output = T>>(
        &self,
        slots: &Mutex<Vec<Vec<T>>>,
        values: &mut [T],
    ) -> Result<(), CommError> {
        let lock = || {
            slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        lock()[self.rank] = values.to_vec();
        self.meeting.barrier.wait();
        let all = lock().clone();
        self.meeting.barrier.wait();
        let lens: Vec<usize> = all.iter().map(Vec::len).collect();
        if lens.iter().any(|&n| n != values.len()) {
            return Err(CommError::SizeMismatch(lens));
        }
        for (i, v) in values.iter_mut().enumerate() {
            *v = all[1..].iter().fold(all[0][i], |sum, r| sum + r[i]);
        }
        Ok(())
    }
}

impl Collectives for LocalWorld {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<(), CommError> {
        self.all_reduce(&self.meeting.f32s, values)
    }
    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<(), CommError> {
        self.all_reduce(&self.meeting.f64s, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_gets_the_sum_in_rank_order() {
        let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = LocalWorld::ranks(3)
                .into_iter()
                .map(|w| {
                    s.spawn(move || {
                        let r = w.rank() as f32;
                        let mut v = vec![r, 10.0 * r, 1e8];
                        w.all_reduce_f32(&mut v).unwrap();
                        v
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for s in &sums {
            assert_eq!(s, &vec![3.0, 30.0, 3e8]);
        }
    }

    #[test]
    fn ranks_agree_only_on_equal_keys() {
        let check = |keys: [u64; 3]| -> Vec<bool> {
            std::thread::scope(|s| {
                let handles: Vec<_> = LocalWorld::ranks(3)
                    .into_iter()
                    .map(|w| s.spawn(move || super::super::agree(&*w, keys[w.rank()]).unwrap()))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        };
        assert_eq!(check([u64::MAX, u64::MAX, u64::MAX]), vec![true; 3]);
        assert_eq!(check([7, 7, 7 | 1 << 63]), vec![false; 3]);
        // Equal sums, different values.
        assert_eq!(check([1, 3, 2]), vec![false; 3]);
        assert_eq!(check([0, 0, 1 << 20]), vec![false; 3]);
    }

    #[test]
    fn ranks_with_different_sizes_all_fail() {
        let results: Vec<Result<(), CommError>> = std::thread::scope(|s| {
            let handles: Vec<_> = LocalWorld::ranks(2)
                .into_iter()
                .map(|w| {
                    s.spawn(move || {
                        let mut v = vec![1.0; 2 + w.rank()];
                        w.all_reduce_f64(&mut v)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            assert_eq!(r, Err(CommError::SizeMismatch(vec![2, 3])));
        }
    }
}
