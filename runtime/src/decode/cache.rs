//! The KV cache of a batch of sequences, laid out as the decode program reads it: for
//! each cached attention and part (keys, values) one buffer `[rows, heads, capacity,
//! head_dim]`, row `r` holding its sequence's first `len[r]` positions. Positions at or
//! after a row's length are never read (the program masks them), so rows of different
//! lengths share one buffer.

/// Cache positions are allocated this many at a time: a decode step writes its rows in
/// place, and the decode program sees a new `past` size (and makes a new memory plan)
/// only when the cache grows.
pub(crate) const CACHE_STEP: usize = 64;

/// The sizes every buffer shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// Key/value heads.
    pub heads: usize,
    /// Values per head and position.
    pub head_dim: usize,
    /// Buffers: two per cached attention (keys, then values).
    pub buffers: usize,
}

/// The cached keys and values of `rows` sequences.
#[derive(Clone, Debug, Default)]
pub(crate) struct Caches {
    /// One buffer per attention and part, in [`Geometry::buffers`] order.
    pub buffers: Vec<Vec<f32>>,
    pub rows: usize,
    /// Positions allocated per row and head (a multiple of [`CACHE_STEP`]).
    pub capacity: usize,
}

impl Caches {
    /// The shape of each buffer.
    pub fn shape(&self, geo: Geometry) -> Vec<usize> {
        vec![self.rows, geo.heads, self.capacity, geo.head_dim]
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.buffers.iter().map(|b| b.len() * 4).sum()
    }

    /// Appends `n` new positions to every row: `new[i]` holds buffer `i`'s new rows
    /// `[rows, heads, n, head_dim]`, and row `r` has `lens[r]` positions filled. Written
    /// in place unless a row would outgrow the capacity; then every buffer is copied
    /// into a larger one.
    pub fn append(&mut self, geo: Geometry, new: &[&[f64]], lens: &[usize], n: usize) {
        let rows = lens.len();
        let needed = lens.iter().map(|&l| l + n).max().unwrap_or(0);
        if needed > self.capacity || self.rows != rows || self.buffers.len() != geo.buffers {
            let capacity = needed.next_multiple_of(CACHE_STEP).max(self.capacity);
            let old = std::mem::take(self);
            *self = Caches::gather(
                geo,
                (0..rows).map(|r| (&old, if old.rows == rows { r } else { usize::MAX }, lens[r])),
                capacity,
            );
        }
        let (heads, d, capacity) = (geo.heads, geo.head_dim, self.capacity);
        for (buffer, new) in self.buffers.iter_mut().zip(new) {
            for (r, &len) in lens.iter().enumerate() {
                for h in 0..heads {
                    let at = ((r * heads + h) * capacity + len) * d;
                    let from = ((r * heads + h) * n) * d;
                    for (c, &x) in buffer[at..at + n * d]
                        .iter_mut()
                        .zip(&new[from..from + n * d])
                    {
                        *c = x as f32;
                    }
                }
            }
        }
    }

    /// A cache whose rows copy the first `len` positions of row `row` of a source
    /// (a row of `usize::MAX`, or a source without buffers, gives an empty row), with
    /// at least `capacity` positions per row.
    pub fn gather<'a>(
        geo: Geometry,
        sources: impl ExactSizeIterator<Item = (&'a Caches, usize, usize)> + Clone,
        capacity: usize,
    ) -> Caches {
        let rows = sources.len();
        let longest = sources.clone().map(|(_, _, len)| len).max().unwrap_or(0);
        let capacity = capacity.max(longest).max(1).next_multiple_of(CACHE_STEP);
        let (heads, d) = (geo.heads, geo.head_dim);
        let mut buffers = vec![vec![0.0f32; rows * heads * capacity * d]; geo.buffers];
        for (r, (source, row, len)) in sources.enumerate() {
            if row >= source.rows || source.buffers.len() != geo.buffers {
                continue;
            }
            for (to, from) in buffers.iter_mut().zip(&source.buffers) {
                for h in 0..heads {
                    let at = (r * heads + h) * capacity * d;
                    let src = (row * heads + h) * source.capacity * d;
                    to[at..at + len * d].copy_from_slice(&from[src..src + len * d]);
                }
            }
        }
        Caches {
            buffers,
            rows,
            capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEO: Geometry = Geometry {
        heads: 2,
        head_dim: 3,
        buffers: 2,
    };

    /// Row `r`'s values at head `h`, position `p`, as written by [`fill`].
    fn value(buffer: usize, r: usize, h: usize, p: usize, i: usize) -> f64 {
        (buffer * 10_000 + r * 1000 + h * 100 + p * 10 + i) as f64
    }

    /// New positions `lens[r]..lens[r] + n` for every row.
    fn fill(lens: &[usize], n: usize) -> Vec<Vec<f64>> {
        (0..GEO.buffers)
            .map(|b| {
                let mut v = Vec::new();
                for (r, &len) in lens.iter().enumerate() {
                    for h in 0..GEO.heads {
                        for p in len..len + n {
                            v.extend((0..GEO.head_dim).map(|i| value(b, r, h, p, i)));
                        }
                    }
                }
                v
            })
            .collect()
    }

    fn check(c: &Caches, r: usize, source_row: usize, len: usize) {
        for (b, buffer) in c.buffers.iter().enumerate() {
            for h in 0..GEO.heads {
                for p in 0..len {
                    for i in 0..GEO.head_dim {
                        let at = ((r * GEO.heads + h) * c.capacity + p) * GEO.head_dim + i;
                        assert_eq!(f64::from(buffer[at]), value(b, source_row, h, p, i));
                    }
                }
            }
        }
    }

    #[test]
    fn ragged_rows_append_grow_and_regather() {
        let mut c = Caches::default();
        let new = fill(&[0, 0], 5);
        c.append(GEO, &[&new[0], &new[1]], &[0, 0], 5);
        assert_eq!((c.rows, c.capacity), (2, CACHE_STEP));
        // Row 1 is 5 long, row 0 grows one position at a time past the capacity.
        let mut lens = [5, 5];
        for _ in 0..CACHE_STEP {
            let new = fill(&[lens[0], lens[1]], 1);
            c.append(GEO, &[&new[0], &new[1]], &[lens[0], lens[1]], 1);
            lens[0] += 1;
            lens[1] += 1;
        }
        assert_eq!(c.capacity, 2 * CACHE_STEP);
        check(&c, 0, 0, lens[0]);
        check(&c, 1, 1, lens[1]);
        // Rows swapped, one dropped, one empty added.
        let g = Caches::gather(GEO, [(&c, 1, lens[1]), (&c, usize::MAX, 0)].into_iter(), 0);
        assert_eq!((g.rows, g.capacity), (2, 2 * CACHE_STEP));
        check(&g, 0, 1, lens[1]);
    }
}
