//! The data layouts of Hopper's `wgmma.mma_async` (m64nNk16, 16-bit inputs, f32
//! accumulators), written down once: the lowering places tiles by them, the PTX
//! printer encodes descriptors by them, and the evaluator decodes descriptors and
//! fragments by them, so a kernel that disagrees with the hardware fails its tests.
//! Sources: the PTX ISA, "Asynchronous Warpgroup Level Matrix Shared Memory Layout"
//! (matrix descriptor, canonical layouts) and "Register Fragments" (matrix D), as also
//! encoded by CUTLASS's `GmmaDescriptor` and `CLayout_64xN`.
//!
//! **Shared-memory operands, no swizzle ("interleave").** An operand is made of *core
//! matrices*: 8 rows of 16 bytes (8 16-bit elements), the 128 bytes contiguous.
//! - K-major (A stored m × k, B stored n × k, i.e. k fastest): a core-matrix row is
//!   one m (or n) with 8 consecutive k. Element (mn, k) lies at
//!   `start + (mn / 8)·SBO + (mn % 8)·16 + (k / 8)·LBO + (k % 8)·2`.
//! - MN-major (`imm-trans` = 1: A stored k × m, B stored k × n, m or n fastest): a
//!   core-matrix row is one k with 8 consecutive m (or n). Element (mn, k) lies at
//!   `start + (mn / 8)·SBO + (mn % 8)·2 + (k / 8)·LBO + (k % 8)·16`.
//!
//! In both, the *leading dimension byte offset* (LBO) steps between core matrices
//! adjacent along K and the *stride dimension byte offset* (SBO) between core matrices
//! adjacent along M or N (the swizzled MN-major layouts swap the two; they are not
//! used here).
//!
//! **Descriptor** (64 bits): bits 0–13 = start address >> 4 (shared window, so the
//! address must be 16-byte aligned and below 2^18), bits 16–29 = LBO >> 4, bits 32–45
//! = SBO >> 4, bits 49–51 = base offset (0: only swizzled layouts use it), bits 62–63 =
//! layout type (0 no swizzle, 1 128-byte, 2 64-byte, 3 32-byte swizzle).
//!
//! **Accumulators.** Thread `t` of the warpgroup (warp `w = t / 32`, lane group
//! `g = (t % 32) / 4`, `q = t % 4`) holds N/2 f32 registers; register `r` is element
//! (row, col) = (16·w + g + 8·((r / 2) % 2), 8·(r / 4) + 2·q + r % 2) of the 64 × N
//! tile: each warp owns 16 rows, laid out like `mma.sync`'s C fragment repeated over
//! N/8 column blocks.

use super::kir::DescLayout;

/// Rows of A (and of the accumulator tile) per wgmma.
pub const M: usize = 64;
/// K per wgmma.
pub const K: usize = 16;
/// Threads of a warpgroup.
pub const WARPGROUP: usize = 128;
/// Bytes of one core-matrix row.
pub const CORE_ROW_BYTES: u32 = 16;
/// Rows of one core matrix.
pub const CORE_ROWS: u32 = 8;

/// The descriptor bits that do not depend on the start address (LBO, SBO, layout
/// type 0 = no swizzle, base offset 0).
pub fn descriptor_fields(layout: DescLayout) -> u64 {
    (u64::from(layout.lbo >> 4) << 16) | (u64::from(layout.sbo >> 4) << 32)
}

/// The descriptor of an operand starting at shared byte address `start`.
pub fn encode(start: u32, layout: DescLayout) -> u64 {
    (u64::from(start >> 4) & 0x3FFF) | descriptor_fields(layout)
}

/// A descriptor's start address and core-matrix offsets; an error for swizzled
/// layouts or a base offset, which the evaluator does not model.
pub(crate) fn decode(desc: u64) -> Result<(u32, DescLayout), String> {
    let field = |lo: u32, bits: u32| (desc >> lo) & ((1 << bits) - 1);
    let layout_type = field(62, 2);
    if layout_type != 0 {
        return Err(format!(
            "wgmma descriptor {desc:#x} has layout type {layout_type} (a swizzle); only the unswizzled layout is modelled"
        ));
    }
    if field(49, 3) != 0 {
        return Err(format!(
            "wgmma descriptor {desc:#x} has a base offset, which only swizzled layouts use"
        ));
    }
    let bytes = |lo: u32| (field(lo, 14) as u32) << 4;
    Ok((
        bytes(0),
        DescLayout {
            lbo: bytes(16),
            sbo: bytes(32),
        },
    ))
}

/// The byte offset, from the descriptor's start, of operand element (`mn`, `k`): `mn`
/// is A's row or B's column.
pub fn element_offset(layout: DescLayout, mn_major: bool, mn: u32, k: u32) -> u32 {
    let cores = (mn / CORE_ROWS) * layout.sbo + (k / 8) * layout.lbo;
    if mn_major {
        cores + (mn % 8) * 2 + (k % 8) * CORE_ROW_BYTES
    } else {
        cores + (mn % CORE_ROWS) * CORE_ROW_BYTES + (k % 8) * 2
    }
}

/// The (row, column) of the 64 × N accumulator tile that register `r` of warpgroup
/// thread `t` holds.
pub fn accumulator_position(t: usize, r: usize) -> (usize, usize) {
    let (w, g, q) = (t / 32, (t % 32) / 4, t % 4);
    (16 * w + g + 8 * ((r / 2) % 2), 8 * (r / 4) + 2 * q + r % 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip() {
        let layout = DescLayout {
            lbo: 1024,
            sbo: 128,
        };
        let d = encode(0x2480, layout);
        assert_eq!(d & 0x3FFF, 0x248);
        assert_eq!(decode(d).unwrap(), (0x2480, layout));
        assert!(decode(d | 1 << 62).unwrap_err().contains("swizzle"));
    }

    #[test]
    fn every_accumulator_element_has_one_owner() {
        let n = 24;
        let mut seen = vec![0; M * n];
        for t in 0..WARPGROUP {
            for r in 0..n / 2 {
                let (row, col) = accumulator_position(t, r);
                seen[row * n + col] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
        // Thread 37: warp 1, lane group 1, q 1; register 6 is in the second column
        // block, second row half, even column.
        assert_eq!(accumulator_position(37, 6), (16 + 1 + 8, 8 + 2));
        assert_eq!(accumulator_position(37, 5), (16 + 1, 8 + 2 + 1));
    }

    #[test]
    fn element_offsets_follow_the_core_matrices() {
        let layout = DescLayout {
            lbo: 1024,
            sbo: 128,
        };
        // K-major (m, k) = (9, 10): core (1, 1), row 1, element 2 of the row.
        assert_eq!(element_offset(layout, false, 9, 10), 128 + 1024 + 16 + 4);
        // MN-major (n, k) = (9, 10): core (1, 1), row k % 8 = 2, element n % 8 = 1.
        assert_eq!(element_offset(layout, true, 9, 10), 128 + 1024 + 2 * 16 + 2);
    }
}
