//! `conv` on f32 as a library step (the schedule keeps it whole; see
//! `compiler::ir::ops::conv` for its meaning). Per image and group, the windows of the
//! input are unfolded into a `[C/groups · KH · KW, OH · OW]` matrix (zeros where a
//! window reads padding), and one `gemm` product with the group's weights, read in
//! place as `[O/groups, C/groups · KH · KW]`, writes the group's output channels
//! directly. Images run in parallel through rayon. The decomposition instead builds
//! one strided copy and one small product per kernel tap, and sums them.

use super::buffers::Out;
use super::kernels::gemm_f32;
use super::{Buf, Val};
use rayon::prelude::*;
use smelt_compiler::ir::ops::conv::Conv2d;

/// Runs `conv x[0], x[1]`; `shape` is the result's `[N, O, OH, OW]`.
pub(super) fn eval(c: &Conv2d, x: &[&Val], shape: &[usize], out: Out) -> Buf {
    let (input, weights) = (x[0].f32(), x[1].f32());
    let [_, channels, height, width] = x[0].shape[..] else {
        unreachable!("conv inputs are [N, C, H, W]")
    };
    let [_, per_group_in, kh, kw] = x[1].shape[..] else {
        unreachable!("conv weights are [O, C/groups, KH, KW]")
    };
    let [images, out_channels, oh, ow] = shape[..] else {
        unreachable!("conv results are [N, O, OH, OW]")
    };
    let groups = c.groups as usize;
    let per_group_out = out_channels / groups;
    let depth = per_group_in * kh * kw;
    let positions = oh * ow;
    let mut out = out.f32_filled(shape.iter().product(), 0.0);
    if out.is_empty() {
        return Buf::F32(out);
    }
    let image_in = channels * height * width;
    let image_out = out_channels * positions;
    let parallelism = if images >= rayon::current_num_threads() {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    };
    out.par_chunks_mut(image_out)
        .enumerate()
        .for_each(|(n, dst)| {
            let image = &input[n * image_in..][..image_in];
            let mut columns = vec![0f32; depth * positions];
            for g in 0..groups {
                unfold(
                    c,
                    image,
                    g * per_group_in,
                    (per_group_in, height, width),
                    (kh, kw),
                    (oh, ow),
                    &mut columns,
                );
                let w = &weights[g * per_group_out * depth..][..per_group_out * depth];
                gemm_f32(
                    (
                        &mut dst[g * per_group_out * positions..][..per_group_out * positions],
                        positions,
                    ),
                    (per_group_out, positions, depth),
                    (w, depth, 1),
                    (&columns, positions, 1),
                    1.0,
                    false,
                    parallelism,
                );
            }
        });
    Buf::F32(out)
}

/// Writes into `columns` (`[channels · KH · KW, OH · OW]`) the input element each output
/// position reads through each tap, for `channels` channels from `first` of one image.
fn unfold(
    c: &Conv2d,
    image: &[f32],
    first: usize,
    (channels, height, width): (usize, usize, usize),
    (kh, kw): (usize, usize),
    (oh, ow): (usize, usize),
    columns: &mut [f32],
) {
    let [sh, sw] = c.strides.map(|s| s as usize);
    let [dh, dw] = c.dilations.map(|d| d as usize);
    let (top, left) = (c.pads[0] as usize, c.pads[1] as usize);
    let mut row = 0;
    for ch in 0..channels {
        let plane = &image[(first + ch) * height * width..][..height * width];
        for p in 0..kh {
            for q in 0..kw {
                let dst = &mut columns[row * oh * ow..][..oh * ow];
                for i in 0..oh {
                    // Input row of output row i through tap p, if inside the image.
                    let r = (i * sh + p * dh).checked_sub(top).filter(|&r| r < height);
                    let line = &mut dst[i * ow..][..ow];
                    let Some(r) = r else {
                        line.fill(0.0);
                        continue;
                    };
                    for (j, v) in line.iter_mut().enumerate() {
                        *v = (j * sw + q * dw)
                            .checked_sub(left)
                            .filter(|&col| col < width)
                            .map_or(0.0, |col| plane[r * width + col]);
                    }
                }
                row += 1;
            }
        }
    }
}
