//! Matrix products with weights kept in llama.cpp's block formats (Q4_0, Q4_1, Q8_0, and
//! Q4_K unpacked into the 4-bit layout at load),
//! so a quantised model occupies about its file size and each product reads a quarter
//! of the bytes an `f32` weight would need.
//!
//! A weight `W [k, n]` (`k` inputs, `n` outputs) is stored as the file stores it: `n`
//! rows of `k / 32` blocks. For a few rows of activations (a decode step), each row is
//! quantised to 8-bit blocks (one scale per 32 values, as llama.cpp's `Q8_1`), and
//! each block pair is an integer dot product scaled once (`maddubs`/`madd` with
//! AVX2). For many rows (a prompt), tiles of the weight are dequantised once and
//! multiplied in `f32` by `gemm`, which is exact and faster there.
//!
//! **Error bound** of the 8-bit path. Only the activations' rounding adds error to the exact product of
//! the dequantised weights: each `x_i` moves by at most `d_x / 2`, so a result moves
//! by at most `Σ_blocks (d_x / 2) · Σ_i |w_i|` plus `f32` rounding ([`error_bound`]).
//! The `f32` path (`--precision f32` dequantises at load) is the exact one.

use rayon::prelude::*;

/// Values per block in every supported format.
pub const BLOCK: usize = 32;

/// A supported block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantFormat {
    /// `d · (q − 8)`, 4-bit `q`; 18 bytes per block.
    Q4_0,
    /// `d · q + m`, 4-bit `q`; 20 bytes per block.
    Q4_1,
    /// `d · q`, 8-bit signed `q`; 34 bytes per block.
    Q8_0,
    /// Super-blocks of 256: `d · s_j · q − dmin · m_j` with a 6-bit scale `s_j` and
    /// min `m_j` per 32 values, 4-bit `q`; 144 bytes. Unpacked at load into the same
    /// per-32 scale and offset as [`QuantFormat::Q4_1`], so the 4-bit kernels run it.
    Q4K,
}

impl QuantFormat {
    /// Bytes per block of [`QuantFormat::block_values`] values.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q4_0 => 18,
            QuantFormat::Q4_1 => 20,
            QuantFormat::Q8_0 => 34,
            QuantFormat::Q4K => 144,
        }
    }

    /// Values per block.
    pub fn block_values(self) -> usize {
        match self {
            QuantFormat::Q4K => 256,
            _ => BLOCK,
        }
    }

    /// The format the kernels run after unpacking at load.
    fn unpacked(self) -> QuantFormat {
        match self {
            QuantFormat::Q4K => QuantFormat::Q4_1,
            other => other,
        }
    }
}

/// A weight `[k, n]` as `n` rows of quantised blocks along `k`, unpacked at load into
/// what the kernels read: each block's scale (and offset) as `f32`, and its quants.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    format: QuantFormat,
    k: usize,
    n: usize,
    /// `d` per block, row after row.
    scales: Vec<f32>,
    /// The value of quant 0 per block (`m`; `−8d` for Q4_0; unused for Q8_0).
    offsets: Vec<f32>,
    /// The quants: 16 bytes per 4-bit block (low nibbles values 0..16, high 16..32),
    /// 32 per 8-bit block.
    quants: Vec<u8>,
}

impl QuantMatrix {
    /// The weight `[k, n]` whose `n` rows of `k` values are the blocks in `bytes`.
    pub(crate) fn new(
        format: QuantFormat,
        k: usize,
        n: usize,
        bytes: &[u8],
    ) -> Result<QuantMatrix, String> {
        let per = format.block_values();
        if !k.is_multiple_of(per) || k == 0 || n == 0 {
            return Err(format!("a {format:?} weight needs a row length that is a positive multiple of {per}, found [{k}, {n}]"));
        }
        let want = n
            .checked_mul(k / per)
            .and_then(|blocks| blocks.checked_mul(format.block_bytes()));
        if want != Some(bytes.len()) {
            let want = want.map_or("more than 2^64".to_string(), |w| w.to_string());
            return Err(format!(
                "{format:?} weight [{k}, {n}] needs {want} bytes, found {}",
                bytes.len()
            ));
        }
        let blocks = n * (k / BLOCK);
        let mut q = QuantMatrix {
            format: format.unpacked(),
            k,
            n,
            scales: Vec::with_capacity(blocks),
            offsets: Vec::new(),
            quants: Vec::new(),
        };
        for block in bytes.chunks_exact(format.block_bytes()) {
            if format == QuantFormat::Q4K {
                q.push_q4k(block);
                continue;
            }
            let d = f16(block, 0);
            q.scales.push(d);
            let payload = match format {
                QuantFormat::Q8_0 | QuantFormat::Q4K => &block[2..],
                QuantFormat::Q4_0 => {
                    q.offsets.push(-8.0 * d);
                    &block[2..]
                }
                QuantFormat::Q4_1 => {
                    q.offsets.push(f16(block, 2));
                    &block[4..]
                }
            };
            q.quants.extend_from_slice(payload);
        }
        Ok(q)
    }

    /// Appends one Q4_K super-block as eight 4-bit blocks of 32: sub-block `j`'s scale
    /// is `d · s_j` and its offset `−dmin · m_j`; its quants are the low (even `j`) or
    /// high (odd `j`) nibbles of 32 bytes, repacked as value `i` low and `i + 16` high.
    fn push_q4k(&mut self, block: &[u8]) {
        let (d, dmin) = (f16(block, 0), f16(block, 2));
        let packed = &block[4..16];
        // 6-bit scale and min of sub-block j (ggml's `get_scale_min_k4`).
        let scale_min = |j: usize| -> (u8, u8) {
            if j < 4 {
                (packed[j] & 63, packed[j + 4] & 63)
            } else {
                (
                    (packed[j + 4] & 15) | ((packed[j - 4] >> 6) << 4),
                    (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
                )
            }
        };
        let qs = &block[16..144];
        for j in 0..8 {
            let (sc, m) = scale_min(j);
            self.scales.push(d * f32::from(sc));
            self.offsets.push(-dmin * f32::from(m));
            let bytes = &qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let value = |i: usize| {
                if j % 2 == 0 {
                    bytes[i] & 15
                } else {
                    bytes[i] >> 4
                }
            };
            self.quants
                .extend((0..16).map(|i| value(i) | (value(i + 16) << 4)));
        }
    }

    /// `(k, n)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.quants.len() + 4 * (self.scales.len() + self.offsets.len())
    }

    /// Row `j`: its scales, offsets (empty for Q8_0) and quants.
    fn row(&self, j: usize) -> Row<'_> {
        let blocks = self.k / BLOCK;
        let per = self.quants.len() / self.scales.len();
        let offsets = if self.offsets.is_empty() {
            &[][..]
        } else {
            &self.offsets[j * blocks..(j + 1) * blocks]
        };
        Row {
            scales: &self.scales[j * blocks..(j + 1) * blocks],
            offsets,
            quants: &self.quants[j * blocks * per..(j + 1) * blocks * per],
        }
    }

    /// The weight as `f32`, `[k, n]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.k * self.n];
        for j in 0..self.n {
            for (i, v) in self.dequantize_row(j).into_iter().enumerate() {
                out[i * self.n + j] = v;
            }
        }
        out
    }

    /// The stored rows as `f32`, `[n, k]` row-major (a lookup table's values).
    pub fn dequantize_rows(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.k * self.n);
        for j in 0..self.n {
            self.append_row(j, &mut out);
        }
        out
    }

    /// Output `j`'s weights (row `j` of the stored matrix) as `f32`.
    pub fn dequantize_row(&self, j: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.k);
        self.append_row(j, &mut out);
        out
    }

    /// Appends stored row `j` as `f32` to `out` (a lookup of a quantised table).
    pub fn append_row(&self, j: usize, out: &mut Vec<f32>) {
        let row = self.row(j);
        for (b, &d) in row.scales.iter().enumerate() {
            match self.format {
                QuantFormat::Q8_0 => out.extend(
                    row.quants[b * 32..(b + 1) * 32]
                        .iter()
                        .map(|&q| d * f32::from(q as i8)),
                ),
                QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q4K => {
                    let (m, qs) = (row.offsets[b], &row.quants[b * 16..(b + 1) * 16]);
                    out.extend(qs.iter().map(|&q| d * f32::from(q & 15) + m));
                    out.extend(qs.iter().map(|&q| d * f32::from(q >> 4) + m));
                }
            }
        }
    }
}

/// One stored row of a [`QuantMatrix`].
struct Row<'a> {
    scales: &'a [f32],
    offsets: &'a [f32],
    quants: &'a [u8],
}

/// An `f16` stored little-endian at `at`.
fn f16(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// One activation row in 8-bit blocks: per block a scale `d`, `d · Σ q`, and the `q`s.
struct Q8Row {
    scales: Vec<f32>,
    sums: Vec<f32>,
    qs: Vec<i8>,
}

fn quantize_row(x: &[f32]) -> Q8Row {
    let blocks = x.len() / BLOCK;
    let mut row = Q8Row {
        scales: Vec::with_capacity(blocks),
        sums: Vec::with_capacity(blocks),
        qs: Vec::with_capacity(x.len()),
    };
    for block in x.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for &v in block {
            let q = (v * inv).round() as i8;
            sum += i32::from(q);
            row.qs.push(q);
        }
        row.scales.push(d);
        row.sums.push(d * sum as f32);
    }
    row
}

/// Rows of activations from which a product dequantises tiles of the weight and
/// multiplies them in `f32` (a long prompt), rather than rounding the activations to 8
/// bits (decode steps, batches of them, short prompts): unpacking a tile once pays for
/// itself over this many rows. Measured on SmolLM2's 576 × 1536 Q4_1 product, both
/// paths on 2 threads (`quant_paths` below): 8 bits 0.95 ms and tiles 1.34 ms at 32
/// rows, about even (2.0 ms) at 64.
const F32_TILES_FROM_ROWS: usize = 64;

/// Block products below which a product runs on one thread: waking the other costs
/// more than it saves. Measured on SmolLM2: running the 576 × 576 and 576 × 192
/// decode-step products (10,368 and 3,456 blocks) on one thread was slower.
const PARALLEL_FROM_BLOCKS: usize = 2_048;

/// Weight columns per dequantised tile: `64 × k` floats stay in the L2 cache.
const TILE_COLUMNS: usize = 64;

/// `out = a · w` (`out += a · w` when `accumulate`) for row-major `a [m, k]` and
/// `out [m, n]`. Rows are rounded to 8 bits and multiplied one by one (each row's
/// result the same whatever the others are) unless there are many and they need not
/// be `rows_independent`; then tiles of dequantised weights are multiplied in `f32`.
pub fn matmul(
    a: &[f32],
    m: usize,
    w: &QuantMatrix,
    out: &mut [f32],
    accumulate: bool,
    rows_independent: bool,
) {
    let (k, n) = (w.k, w.n);
    debug_assert_eq!((a.len(), out.len()), (m * k, m * n));
    if m >= F32_TILES_FROM_ROWS && !rows_independent {
        return matmul_f32_tiles(a, m, w, out, accumulate);
    }
    let rows: Vec<Q8Row> = a.chunks_exact(k).map(quantize_row).collect();
    let dot = kernel(w.format);
    // Columns `cols` of the product for every row: each weight row is read (and
    // unpacked) once for all `m` activation rows.
    let columns = |cols: std::ops::Range<usize>| {
        let width = cols.len();
        let mut part = vec![0.0f32; m * width];
        dot(w, cols.clone(), &rows, &mut part);
        (cols.start, part)
    };
    if m * n * (k / BLOCK) < PARALLEL_FROM_BLOCKS {
        return scatter_columns(vec![columns(0..n)], m, n, out, accumulate);
    }
    // Runs of columns in parallel.
    let tile = (n / (4 * rayon::current_num_threads())).clamp(16, 256);
    let results: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(tile))
        .into_par_iter()
        .map(|t| columns(t * tile..((t + 1) * tile).min(n)))
        .collect();
    scatter_columns(results, m, n, out, accumulate);
}

/// [`matmul`] for many rows: tiles of `TILE_COLUMNS` weight columns are dequantised
/// and multiplied in `f32` by `gemm`, in parallel over tiles (the exact product of the
/// dequantised weights, up to `f32` rounding).
fn matmul_f32_tiles(a: &[f32], m: usize, w: &QuantMatrix, out: &mut [f32], accumulate: bool) {
    let (k, n) = (w.k, w.n);
    let results: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(TILE_COLUMNS))
        .into_par_iter()
        .map(|t| {
            let cols = t * TILE_COLUMNS..((t + 1) * TILE_COLUMNS).min(n);
            let width = cols.len();
            let mut tile = Vec::with_capacity(width * k);
            for j in cols.clone() {
                w.append_row(j, &mut tile);
            }
            let mut part = vec![0.0f32; m * width];
            // part [m, width] = a [m, k] · tile viewed as [k, width] (column j contiguous).
            super::kernels::gemm_f32(
                (&mut part, width),
                (m, width, k),
                (a, k, 1),
                (&tile, 1, k),
                1.0,
                false,
                gemm::Parallelism::None,
            );
            (cols.start, part)
        })
        .collect();
    scatter_columns(results, m, n, out, accumulate);
}

/// Writes (or adds) per-tile results `[m, width]` into their columns of `out [m, n]`.
fn scatter_columns(
    results: Vec<(usize, Vec<f32>)>,
    m: usize,
    n: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    for (start, part) in results {
        let width = part.len() / m;
        for i in 0..m {
            let dst = &mut out[i * n + start..i * n + start + width];
            let src = &part[i * width..(i + 1) * width];
            if accumulate {
                dst.iter_mut().zip(src).for_each(|(o, s)| *o += s);
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
}

/// A bound on `|matmul(a, w) − a · dequantised(w)|` for output `(i, j)` (see the
/// module comment), with room for `f32` rounding.
pub fn error_bound(a: &[f32], w: &QuantMatrix, i: usize, j: usize) -> f32 {
    let x = &a[i * w.k..(i + 1) * w.k];
    let wrow = w.dequantize_row(j);
    let mut bound = 0.0f32;
    let mut magnitude = 0.0f32;
    for (xb, wb) in x.chunks_exact(BLOCK).zip(wrow.chunks_exact(BLOCK)) {
        let d = xb.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
        let wsum: f32 = wb.iter().map(|v| v.abs()).sum();
        bound += 0.5 * d * wsum;
        magnitude += xb.iter().zip(wb).map(|(a, b)| (a * b).abs()).sum::<f32>();
    }
    bound * 1.01 + magnitude * 1e-5
}

/// Dot products of the weight's stored rows `cols` with every activation row:
/// `part[i · width + c] = w[cols.start + c] · xs[i]`. Each pair's arithmetic is the
/// same whatever the number of rows or columns, so a sequence's results do not depend
/// on the batch it runs in.
type DotRows = fn(&QuantMatrix, std::ops::Range<usize>, &[Q8Row], &mut [f32]);

/// [`DotRows`] from a kernel for one weight row.
fn by_weight_row(
    w: &QuantMatrix,
    cols: std::ops::Range<usize>,
    xs: &[Q8Row],
    part: &mut [f32],
    dot: fn(&Row, &Q8Row) -> f32,
) {
    let width = cols.len();
    for (c, j) in cols.enumerate() {
        let row = w.row(j);
        for (i, x) in xs.iter().enumerate() {
            part[i * width + c] = dot(&row, x);
        }
    }
}

fn kernel(format: QuantFormat) -> DotRows {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let q8 = format == QuantFormat::Q8_0;
        if is_x86_feature_detected!("avxvnni") {
            // SAFETY: the CPU has AVX2, FMA and AVX-VNNI (checked just above).
            return match q8 {
                true => |w, c, xs, out| unsafe { avx2::dot_rows_vnni::<true>(w, c, xs, out) },
                false => |w, c, xs, out| unsafe { avx2::dot_rows_vnni::<false>(w, c, xs, out) },
            };
        }
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return match q8 {
            true => |w, c, xs, out| unsafe { avx2::dot_rows::<true>(w, c, xs, out) },
            false => |w, c, xs, out| unsafe { avx2::dot_rows::<false>(w, c, xs, out) },
        };
    }
    match format {
        QuantFormat::Q8_0 => |w, c, xs, out| by_weight_row(w, c, xs, out, scalar_dot_q8),
        QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q4K => {
            |w, c, xs, out| by_weight_row(w, c, xs, out, scalar_dot_q4)
        }
    }
}

/// The portable dot product of an 8-bit weight row with a quantised activation row.
fn scalar_dot_q8(w: &Row, x: &Q8Row) -> f32 {
    let mut acc = 0.0f32;
    for (b, d) in w.scales.iter().enumerate() {
        let (qw, qx) = (
            &w.quants[b * 32..(b + 1) * 32],
            &x.qs[b * BLOCK..(b + 1) * BLOCK],
        );
        let integer: i32 = qw
            .iter()
            .zip(qx)
            .map(|(&q, &v)| i32::from(q as i8) * i32::from(v))
            .sum();
        acc += d * x.scales[b] * integer as f32;
    }
    acc
}

/// The portable dot product of a 4-bit weight row with a quantised activation row.
fn scalar_dot_q4(w: &Row, x: &Q8Row) -> f32 {
    let mut acc = 0.0f32;
    for (b, d) in w.scales.iter().enumerate() {
        let (qw, qx) = (
            &w.quants[b * 16..(b + 1) * 16],
            &x.qs[b * BLOCK..(b + 1) * BLOCK],
        );
        let integer: i32 = qw
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                i32::from(q & 15) * i32::from(qx[i]) + i32::from(q >> 4) * i32::from(qx[i + 16])
            })
            .sum();
        acc += d * x.scales[b] * integer as f32 + w.offsets[b] * x.sums[b];
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Q8Row, QuantMatrix, Row, BLOCK};
    use std::arch::x86_64::*;
    use std::ops::Range;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Runs `block(b, acc)` over `blocks` blocks into two sets of `N` accumulators,
    /// even blocks into one and odd into the other (so additions do not wait on each
    /// other), and returns their sums: the one order every kernel uses.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn two_chains<const N: usize>(
        blocks: usize,
        mut block: impl FnMut(usize, &mut [__m256; N]),
    ) -> [__m256; N] {
        let (mut even, mut odd) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
        let mut b = 0;
        while b + 2 <= blocks {
            block(b, &mut even);
            block(b + 1, &mut odd);
            b += 2;
        }
        if b < blocks {
            block(b, &mut even);
        }
        std::array::from_fn(|i| _mm256_add_ps(even[i], odd[i]))
    }

    /// Block `b` of weight row `w` as the unsigned bytes the products take, with the
    /// signs to give the activations ([`signed_as`]). 8-bit weights use
    /// `|w| · sign(x, w)` to keep the unsigned-by-signed form; 4-bit weights
    /// (`d · q + offset`) hold values 0..16 of a block in low nibbles, 16..32 in high
    /// ones, and need no signs.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn weight_block<const Q8: bool>(w: &Row, b: usize) -> (__m256i, __m256i) {
        if Q8 {
            let q = _mm256_loadu_si256(w.quants.as_ptr().add(b * 32) as *const __m256i);
            (_mm256_sign_epi8(q, q), q)
        } else {
            let low = _mm_set1_epi8(15);
            let packed = _mm_loadu_si128(w.quants.as_ptr().add(b * 16) as *const __m128i);
            let lo = _mm_and_si128(packed, low);
            let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
            (_mm256_set_m128i(hi, lo), _mm256_setzero_si256())
        }
    }

    /// An activation block with the signs of [`weight_block`] (8-bit weights), or as is.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn signed_as<const Q8: bool>(x: __m256i, sign: __m256i) -> __m256i {
        if Q8 {
            _mm256_sign_epi8(x, sign)
        } else {
            x
        }
    }

    /// The integer sums of an unsigned-by-signed byte product, four bytes per lane:
    /// `maddubs` then `madd` on AVX2 (exact here: no pair of products reaches the
    /// 16-bit limit, as weights are below 2^7 in magnitude after the sign trick, or
    /// 4-bit), or one `vpdpbusd` where the CPU has AVX-VNNI. Both give the same sums.
    macro_rules! byte_sums {
        (avx2, $w:expr, $x:expr) => {
            _mm256_madd_epi16(_mm256_maddubs_epi16($w, $x), _mm256_set1_epi16(1))
        };
        (vnni, $w:expr, $x:expr) => {
            _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), $w, $x)
        };
    }

    /// [`super::DotRows`] kernels for 8-bit weights (`Q8`) or 4-bit ones, four
    /// activation rows at a time (the rest one by one), for one instruction set.
    macro_rules! dot_kernels {
        ($dot_rows:ident, $group:ident, $cols:ident, $features:literal, $isa:ident) => {
            /// Fewer than four activation rows: four weight rows at a time for each;
            /// else four activation rows at a time for each weight row.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $dot_rows<const Q8: bool>(
                w: &QuantMatrix,
                cols: Range<usize>,
                xs: &[Q8Row],
                part: &mut [f32],
            ) {
                let width = cols.len();
                if xs.len() < 4 {
                    for (i, x) in xs.iter().enumerate() {
                        let out = &mut part[i * width..(i + 1) * width];
                        let mut c = 0;
                        while c + 4 <= width {
                            let ws = std::array::from_fn(|d| w.row(cols.start + c + d));
                            out[c..c + 4].copy_from_slice(&$cols::<Q8, 4>(&ws, x));
                            c += 4;
                        }
                        while c < width {
                            out[c] = $cols::<Q8, 1>(&[w.row(cols.start + c)], x)[0];
                            c += 1;
                        }
                    }
                    return;
                }
                for (c, j) in cols.enumerate() {
                    let row = w.row(j);
                    let mut i = 0;
                    while i + 4 <= xs.len() {
                        let r = $group::<Q8, 4>(&row, &xs[i..i + 4]);
                        for (d, v) in r.into_iter().enumerate() {
                            part[(i + d) * width + c] = v;
                        }
                        i += 4;
                    }
                    while i < xs.len() {
                        part[i * width + c] = $group::<Q8, 1>(&row, &xs[i..i + 1])[0];
                        i += 1;
                    }
                }
            }

            /// `C` weight rows with one activation row: the activation block is loaded
            /// once for the `C` rows; each pair's arithmetic is that of `$group`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn $cols<const Q8: bool, const C: usize>(ws: &[Row; C], x: &Q8Row) -> [f32; C] {
                let block = |b: usize, acc: &mut [__m256; C]| {
                    let qx0 = _mm256_loadu_si256(x.qs.as_ptr().add(b * BLOCK) as *const __m256i);
                    let dx = *x.scales.get_unchecked(b);
                    for c in 0..C {
                        let w = &ws[c];
                        let (qw, sign) = weight_block::<Q8>(w, b);
                        let qx = signed_as::<Q8>(qx0, sign);
                        let sums = _mm256_cvtepi32_ps(byte_sums!($isa, qw, qx));
                        let d = *w.scales.get_unchecked(b);
                        acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), sums, acc[c]);
                    }
                };
                let sums = two_chains::<C>(x.scales.len(), block);
                let mut out = [0.0f32; C];
                for c in 0..C {
                    out[c] = hsum(sums[c]);
                    if !Q8 {
                        out[c] += offsets(&ws[c], x);
                    }
                }
                out
            }

            /// The weight row's blocks are unpacked once for the `R` rows
            /// ([`weight_block`]). Each row has two accumulators taking alternate
            /// blocks, so additions do not wait on each other.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn $group<const Q8: bool, const R: usize>(w: &Row, xs: &[Q8Row]) -> [f32; R] {
                let qs: [*const i8; R] = std::array::from_fn(|r| xs[r].qs.as_ptr());
                let scales: [*const f32; R] = std::array::from_fn(|r| xs[r].scales.as_ptr());
                // Block `b` of every row into `acc` (plain arrays indexed by constants,
                // so the accumulators stay in registers).
                let block = |b: usize, acc: &mut [__m256; R]| {
                    let (qw, sign) = weight_block::<Q8>(w, b);
                    let d = *w.scales.get_unchecked(b);
                    for r in 0..R {
                        let qx = _mm256_loadu_si256(qs[r].add(b * BLOCK) as *const __m256i);
                        let qx = signed_as::<Q8>(qx, sign);
                        let sums = _mm256_cvtepi32_ps(byte_sums!($isa, qw, qx));
                        acc[r] =
                            _mm256_fmadd_ps(_mm256_set1_ps(d * *scales[r].add(b)), sums, acc[r]);
                    }
                };
                let sums = two_chains::<R>(w.scales.len(), block);
                let mut out = [0.0f32; R];
                for r in 0..R {
                    out[r] = hsum(sums[r]);
                    if !Q8 {
                        out[r] += offsets(w, &xs[r]);
                    }
                }
                out
            }
        };
    }

    dot_kernels!(dot_rows, group, cols, "avx2,fma", avx2);
    dot_kernels!(
        dot_rows_vnni,
        group_vnni,
        cols_vnni,
        "avx2,fma,avxvnni",
        vnni
    );

    /// `Σ offset · (d_x Σ q_x)` over the blocks, eight at a time.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn offsets(w: &Row, x: &Q8Row) -> f32 {
        let blocks = w.scales.len();
        let mut shift = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= blocks {
            let m = _mm256_loadu_ps(w.offsets.as_ptr().add(i));
            let s = _mm256_loadu_ps(x.sums.as_ptr().add(i));
            shift = _mm256_fmadd_ps(m, s, shift);
            i += 8;
        }
        let mut tail = 0.0;
        while i < blocks {
            tail += w.offsets[i] * x.sums[i];
            i += 1;
        }
        hsum(shift) + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    /// Random blocks of `format` for a `[k, n]` weight, with scales like real ones.
    fn random_matrix(format: QuantFormat, k: usize, n: usize, seed: u64) -> QuantMatrix {
        let mut bytes = Vec::new();
        let mut i = 0u64;
        let mut next = || {
            i += 1;
            rng::uniform01(seed, i)
        };
        for _ in 0..n * (k / BLOCK) {
            let d = half::f16::from_f32((0.01 + 0.05 * next()) as f32).to_le_bytes();
            bytes.extend(d);
            if format == QuantFormat::Q4_1 {
                bytes.extend(half::f16::from_f32((-0.2 * next()) as f32).to_le_bytes());
            }
            let payload = if format == QuantFormat::Q8_0 { 32 } else { 16 };
            bytes.extend((0..payload).map(|_| (next() * 256.0) as u8));
        }
        QuantMatrix::new(format, k, n, &bytes).unwrap()
    }

    /// Every kernel (AVX2 where the machine has it, and the portable one) against the
    /// exact product of the dequantised weights, within [`error_bound`].
    #[test]
    fn products_match_the_dequantised_weights_within_the_bound() {
        for format in [QuantFormat::Q4_0, QuantFormat::Q4_1, QuantFormat::Q8_0] {
            let (m, k, n) = (7, 96, 40);
            let w = random_matrix(format, k, n, 11);
            let a: Vec<f32> = (0..m * k)
                .map(|i| rng::normal01(5, i as u64) as f32)
                .collect();
            let mut fast = vec![1.0f32; m * n];
            matmul(&a, m, &w, &mut fast, true, false);
            let rows: Vec<Q8Row> = a.chunks_exact(k).map(quantize_row).collect();
            for j in 0..n {
                let wj = w.dequantize_row(j);
                for i in 0..m {
                    let exact: f32 = a[i * k..(i + 1) * k]
                        .iter()
                        .zip(&wj)
                        .map(|(x, y)| x * y)
                        .sum();
                    let bound = error_bound(&a, &w, i, j);
                    let got = fast[i * n + j] - 1.0;
                    assert!(
                        (got - exact).abs() <= bound,
                        "{format:?} ({i}, {j}): {got} vs exact {exact}, bound {bound}"
                    );
                    let portable = match format {
                        QuantFormat::Q8_0 => scalar_dot_q8(&w.row(j), &rows[i]),
                        _ => scalar_dot_q4(&w.row(j), &rows[i]),
                    };
                    assert!(
                        (portable - got).abs() <= 1e-4 * exact.abs().max(1.0),
                        "{format:?}: portable {portable} vs {got}"
                    );
                }
            }
        }
    }

    /// A row's product is the same, bit for bit, whatever rows run beside it (a
    /// sequence's tokens do not depend on the batch it is decoded in).
    #[test]
    fn a_rows_product_does_not_depend_on_the_other_rows() {
        for format in [QuantFormat::Q4_1, QuantFormat::Q8_0] {
            let (k, n) = (96, 40);
            let w = random_matrix(format, k, n, 3);
            // Past the tile threshold too, when rows must be independent.
            let m = F32_TILES_FROM_ROWS + 2;
            let a: Vec<f32> = (0..m * k)
                .map(|i| rng::normal01(9, i as u64) as f32)
                .collect();
            let mut batch = vec![0.0f32; m * n];
            matmul(&a, m, &w, &mut batch, false, true);
            for i in [0, 5, m - 1] {
                let mut alone = vec![0.0f32; n];
                matmul(&a[i * k..(i + 1) * k], 1, &w, &mut alone, false, true);
                assert_eq!(alone, batch[i * n..(i + 1) * n], "{format:?}, row {i}");
            }
            // Every instruction set this machine has gives the same sums, and the
            // kernels for few rows (by weight rows) and for many (by activation rows)
            // the same products.
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("fma") {
                let rows: Vec<Q8Row> = a.chunks_exact(k).map(quantize_row).collect();
                let (mut plain, mut vnni) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
                let mut few = vec![0.0f32; 2 * n];
                let q8 = format == QuantFormat::Q8_0;
                // SAFETY: AVX2, FMA and AVX-VNNI were detected.
                unsafe {
                    match q8 {
                        true => avx2::dot_rows::<true>(&w, 0..n, &rows, &mut plain),
                        false => avx2::dot_rows::<false>(&w, 0..n, &rows, &mut plain),
                    }
                    match q8 {
                        true => avx2::dot_rows_vnni::<true>(&w, 0..n, &rows, &mut vnni),
                        false => avx2::dot_rows_vnni::<false>(&w, 0..n, &rows, &mut vnni),
                    }
                    match q8 {
                        true => avx2::dot_rows_vnni::<true>(&w, 0..n, &rows[..2], &mut few),
                        false => avx2::dot_rows_vnni::<false>(&w, 0..n, &rows[..2], &mut few),
                    }
                }
                assert_eq!(few, vnni[..2 * n], "{format:?}");
                assert_eq!(plain, vnni, "{format:?}");
            }
        }
    }

    /// Prompts take the dequantised-tile path: the exact product up to f32 rounding.
    #[test]
    fn many_rows_multiply_the_dequantised_weights() {
        let (m, k, n) = (F32_TILES_FROM_ROWS + 3, 96, TILE_COLUMNS + 9);
        let w = random_matrix(QuantFormat::Q4_0, k, n, 4);
        let a: Vec<f32> = (0..m * k)
            .map(|i| rng::normal01(9, i as u64) as f32)
            .collect();
        let mut out = vec![0.5f32; m * n];
        matmul(&a, m, &w, &mut out, true, false);
        let dense = w.dequantize();
        for i in 0..m {
            for j in 0..n {
                let exact: f32 = (0..k).map(|p| a[i * k + p] * dense[p * n + j]).sum::<f32>() + 0.5;
                assert!(
                    (out[i * n + j] - exact).abs() <= 1e-4 * exact.abs().max(1.0),
                    "({i}, {j})"
                );
            }
        }
    }

    #[test]
    fn a_table_row_is_the_matrix_column() {
        let w = random_matrix(QuantFormat::Q4_1, 64, 5, 3);
        let (columns, rows) = (w.dequantize(), w.dequantize_rows());
        for j in 0..5 {
            for i in 0..64 {
                assert_eq!(rows[j * 64 + i], columns[i * 5 + j]);
            }
        }
    }

    #[test]
    fn a_wrong_byte_count_is_refused() {
        assert!(QuantMatrix::new(QuantFormat::Q4_1, 64, 2, &[0; 79]).is_err());
        assert!(QuantMatrix::new(QuantFormat::Q8_0, 48, 2, &[0; 102]).is_err());
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::rng;

    /// `cargo test --release -p smelt-runtime quant_paths -- --ignored --nocapture`:
    /// the 8-bit path against dequantised tiles at each row count (SmolLM2's MLP shape).
    #[test]
    #[ignore]
    fn quant_paths() {
        let (k, n) = (576, 1536);
        let mut bytes = Vec::new();
        for i in 0..n * (k / BLOCK) {
            bytes.extend(half::f16::from_f32(0.02).to_le_bytes());
            bytes.extend(half::f16::from_f32(-0.1).to_le_bytes());
            bytes.extend((0..16).map(|j| ((i * 7 + j * 13) % 256) as u8));
        }
        let w = QuantMatrix::new(QuantFormat::Q4_1, k, n, &bytes).unwrap();
        for m in [1, 2, 4, 8, 16, 32, 64, 128] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| rng::normal01(1, i as u64) as f32)
                .collect();
            let mut out = vec![0.0f32; m * n];
            let time = |f: &dyn Fn(&mut [f32])| {
                let mut out = vec![0.0f32; m * n];
                f(&mut out);
                let t = std::time::Instant::now();
                let reps = 20;
                for _ in 0..reps {
                    f(&mut out);
                }
                t.elapsed().as_secs_f64() / reps as f64 * 1e3
            };
            let int8 = time(&|o| {
                let rows: Vec<Q8Row> = a.chunks_exact(k).map(quantize_row).collect();
                kernel(w.format)(&w, 0..n, &rows, o);
            });
            let tiles = time(&|o| matmul_f32_tiles(&a, m, &w, o, false));
            matmul(&a, m, &w, &mut out, false, false);
            println!(
                "m {m:4}: 8-bit {int8:7.3} ms ({:.3}/row), f32 tiles {tiles:7.3} ms ({:.3}/row)",
                int8 / m as f64,
                tiles / m as f64
            );
        }
    }
}
