//! ggml's tensor formats and their dequantisation to f32, one block at a time.
//!
//! | type | block | bytes | layout | value |
//! |---|---:|---:|---|---|
//! | F32, F16, BF16 | 1 | 4, 2, 2 | plain | as stored |
//! | Q8_0 | 32 | 34 | d: f16, q: 32 × i8 | d·q |
//! | Q4_0 | 32 | 18 | d: f16, 16 bytes of nibbles | d·(q − 8) |
//! | Q4_1 | 32 | 20 | d, m: f16, 16 bytes of nibbles | d·q + m |
//! | Q5_0 | 32 | 22 | d: f16, high bits: u32, nibbles | d·(q − 16) |
//! | Q5_1 | 32 | 24 | d, m: f16, high bits: u32, nibbles | d·q + m |
//! | Q8_K | 256 | 292 | d: f32, q: 256 × i8, 16 × i16 sums | d·q |
//! | Q4_K | 256 | 144 | d, dmin: f16, 12 bytes of 6-bit scales and mins, nibbles | d·s·q − dmin·m |
//! | Q5_K | 256 | 176 | as Q4_K, plus 32 bytes of fifth bits | d·s·q − dmin·m |
//! | Q6_K | 256 | 210 | low nibbles, high 2-bit pairs, 16 × i8 scales, d: f16 | d·s·(q − 32) |
//!
//! In the 32-element formats, byte `j` of the nibbles holds element `j` (low nibble)
//! and element `j + 16` (high nibble); bit `j` of Q5's high-bit word is element `j`'s
//! fifth bit. The K formats split 256 elements into 8 (Q4_K, Q5_K) or 16 (Q6_K)
//! sub-blocks, each with its own scale. The tests compare every format with the
//! `gguf` Python package's `gguf.quants.dequantize`.

use half::{bf16, f16};

/// A ggml tensor type smelt reads.
/// Variants keep ggml's names (`Q4_K`), as every GGUF tool prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs, non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl GgmlType {
    /// Every type, for tests and listings.
    pub const ALL: [GgmlType; 12] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// The type with ggml's number `id` (`enum ggml_type`).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            15 => GgmlType::Q8_K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// ggml's number for the type.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::BF16 => 30,
        }
    }

    /// Elements per block.
    pub fn block_elems(self) -> u64 {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                32
            }
            GgmlType::Q8_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_K => 292,
            GgmlType::Q4_K => 144,
            GgmlType::Q5_K => 176,
            GgmlType::Q6_K => 210,
        }
    }

    /// Bytes of a tensor of `elements` whose rows have `row` elements; rows must be
    /// whole blocks.
    pub(crate) fn bytes_for(self, row: u64, elements: u64) -> Result<u64, String> {
        let block = self.block_elems();
        if !row.is_multiple_of(block) {
            return Err(format!(
                "{self:?} stores blocks of {block} elements, but its rows have {row}"
            ));
        }
        (elements / block)
            .checked_mul(self.block_bytes())
            .ok_or_else(|| format!("{elements} elements of {self:?} overflow a byte count"))
    }
}

/// Appends the values of `bytes` (whole blocks of `ty`) to `out`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut Vec<f32>) {
    let step = ty.block_bytes() as usize;
    for block in bytes.chunks_exact(step) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes(block.try_into().expect("4 bytes"))),
            GgmlType::F16 => out.push(half16(block, 0)),
            GgmlType::BF16 => out.push(bf16::from_le_bytes([block[0], block[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = half16(block, 0);
                out.extend(block[2..34].iter().map(|&q| d * f32::from(q as i8)));
            }
            GgmlType::Q4_0 => nibbles(half16(block, 0), 0.0, &block[2..18], 0, 8, out),
            GgmlType::Q4_1 => nibbles(half16(block, 0), half16(block, 2), &block[4..20], 0, 0, out),
            GgmlType::Q5_0 => {
                let high = u32::from_le_bytes(block[2..6].try_into().expect("4 bytes"));
                nibbles(half16(block, 0), 0.0, &block[6..22], high, 16, out)
            }
            GgmlType::Q5_1 => {
                let high = u32::from_le_bytes(block[4..8].try_into().expect("4 bytes"));
                nibbles(
                    half16(block, 0),
                    half16(block, 2),
                    &block[8..24],
                    high,
                    0,
                    out,
                )
            }
            GgmlType::Q8_K => {
                let d = f32::from_le_bytes(block[0..4].try_into().expect("4 bytes"));
                out.extend(block[4..260].iter().map(|&q| d * f32::from(q as i8)));
            }
            GgmlType::Q4_K => k_quant(block, None, out),
            GgmlType::Q5_K => k_quant(block, Some(&block[16..48]), out),
            GgmlType::Q6_K => q6_k(block, out),
        }
    }
}

/// The f16 at byte `at`.
fn half16(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// A 32-element block of 4-bit values (with a fifth bit from `high` for Q5):
/// `d · (q − offset) + m`.
fn nibbles(d: f32, m: f32, qs: &[u8], high: u32, offset: i32, out: &mut Vec<f32>) {
    let value = |q: u8, bit: u32| {
        let fifth = ((high >> bit) & 1) as i32;
        d * (i32::from(q) + (fifth << 4) - offset) as f32 + m
    };
    out.extend((0..16).map(|j| value(qs[j] & 0x0f, j as u32)));
    out.extend((0..16).map(|j| value(qs[j] >> 4, j as u32 + 16)));
}

/// Sub-block `j`'s 6-bit scale and min among the 12 packed bytes of Q4_K and Q5_K:
/// sub-blocks 0–3 keep theirs in the low 6 bits of bytes `j` and `j + 4`; 4–7 take
/// 4 bits from byte `j + 4` and their top 2 bits from the unused high bits of bytes
/// `j − 4` and `j`.
fn scale_and_min(packed: &[u8], j: usize) -> (f32, f32) {
    let (s, m) = if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    };
    (f32::from(s), f32::from(m))
}

/// Q4_K (no fifth bits) and Q5_K: four chunks of 64 elements; a chunk's 32 bytes of
/// nibbles hold sub-block `2c` in the low and `2c + 1` in the high nibbles, and bits
/// `2c` and `2c + 1` of each fifth-bit byte are theirs.
fn k_quant(block: &[u8], fifth: Option<&[u8]>, out: &mut Vec<f32>) {
    let (d, dmin) = (half16(block, 0), half16(block, 2));
    let packed = &block[4..16];
    let qs = match fifth {
        None => &block[16..144],
        Some(_) => &block[48..176],
    };
    for chunk in 0..4 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        for half in 0..2 {
            let sub = chunk * 2 + half;
            let (s, m) = scale_and_min(packed, sub);
            let (scale, min) = (d * s, dmin * m);
            out.extend((0..32).map(|l| {
                let low = if half == 0 { q[l] & 0x0f } else { q[l] >> 4 };
                let high = fifth.map_or(0, |h| ((h[l] >> sub) & 1) << 4);
                scale * f32::from(low | high) - min
            }));
        }
    }
}

/// Q6_K: two halves of 128 elements; in each, element `l + 32·i` (i = 0..4) takes its
/// low nibble from byte `l` (i even) or `l + 32` (i odd) of the half's 64 low bytes
/// (low nibble for i < 2, high for i ≥ 2) and its top two bits from bits `2i, 2i+1` of
/// byte `l` of the half's 32 high bytes; each 16 elements share an i8 scale.
fn q6_k(block: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, scales) = (&block[0..128], &block[128..192], &block[192..208]);
    let d = half16(block, 208);
    for half in 0..2 {
        let (ql, qh) = (
            &ql[half * 64..half * 64 + 64],
            &qh[half * 32..half * 32 + 32],
        );
        let sc = &scales[half * 8..half * 8 + 8];
        for i in 0..4 {
            out.extend((0..32).map(|l| {
                let low = ql[l + 32 * (i % 2)];
                let low = if i < 2 { low & 0x0f } else { low >> 4 };
                let top = (qh[l] >> (2 * i)) & 3;
                let q = i32::from(low | (top << 4)) - 32;
                let scale = f32::from(sc[l / 16 + 2 * i] as i8);
                d * scale * q as f32
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn ids_round_trip_and_sizes_are_ggmls() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None); // Q4_2, removed from ggml
        assert_eq!(
            GgmlType::Q4_1.bytes_for(576, 576 * 1536),
            Ok(576 * 1536 / 32 * 20)
        );
        assert!(
            GgmlType::Q4_K.bytes_for(576, 576).is_err(),
            "576 is not a multiple of 256"
        );
        assert!(GgmlType::F32.bytes_for(1, u64::MAX).is_err());
    }

    /// Blocks made by hand from the formats' definitions.
    #[test]
    fn simple_blocks_by_hand() {
        // Q8_0: d = 0.5, q = -16..16.
        let mut b = f16_bytes(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut out = Vec::new();
        dequantize(GgmlType::Q8_0, &b, &mut out);
        assert_eq!(
            out,
            (0..32).map(|i| (i - 16) as f32 * 0.5).collect::<Vec<_>>()
        );
        // Q4_1: d = 2, m = -1; byte j holds j % 16 low and 15 - j % 16 high.
        let mut b = [f16_bytes(2.0), f16_bytes(-1.0)].concat();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = Vec::new();
        dequantize(GgmlType::Q4_1, &b, &mut out);
        let want: Vec<f32> = (0..16)
            .map(|j| 2.0 * j as f32 - 1.0)
            .chain((0..16).map(|j| 2.0 * (15 - j) as f32 - 1.0))
            .collect();
        assert_eq!(out, want);
        // Q5_0: every fifth bit set for element 3 and element 20 only.
        let mut b = f16_bytes(1.0).to_vec();
        b.extend(((1u32 << 3) | (1u32 << 20)).to_le_bytes());
        b.extend([0u8; 16]);
        let mut out = Vec::new();
        dequantize(GgmlType::Q5_0, &b, &mut out);
        for (i, v) in out.iter().enumerate() {
            let want = if i == 3 || i == 20 { 0.0 } else { -16.0 };
            assert_eq!(*v, want, "element {i}");
        }
    }
}
