//! `conv %x, %w {strides, pads, dilations, groups}`: the 2-D convolution of vision
//! models (ONNX's `Conv`, PyTorch's `conv2d`), as a composite.
//!
//! `x` is `[N, C, H, W]`, `w` is `[O, C / groups, KH, KW]`, the result
//! `[N, O, OH, OW]` with `OH = (H + top + bottom − dh·(KH − 1) − 1) / sh + 1` (and
//! likewise `OW`); `pads` is `[top, left, bottom, right]` (ONNX's order), zeros. Output
//! channel `o` of group `g = o / (O / groups)` reads input channels
//! `g·C/groups .. (g+1)·C/groups`. No bias: importers add it.
//!
//! Its decomposition (the definition): pad, then for each kernel tap `(kh, kw)` a
//! strided slice of the padded input, channels last, times the tap's `[C/groups,
//! O/groups]` weights, summed over taps; per group, concatenated along channels. So
//! every backend runs it and autodiff differentiates it with no code of its own; a
//! convolution kernel of its own is a later speed-up, not a new meaning.

use super::{BinaryOp, Op};
use crate::ir::{Builder, Dim, Shape, TensorType, ValueId};

/// The attributes of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// Step along H and W.
    pub strides: [u64; 2],
    /// Zeros added: `[top, left, bottom, right]`.
    pub pads: [u64; 4],
    /// Spacing of the kernel taps along H and W.
    pub dilations: [u64; 2],
    /// Channel groups (1: dense; C: depthwise).
    pub groups: u64,
}

impl Default for Conv2d {
    fn default() -> Conv2d {
        Conv2d {
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            groups: 1,
        }
    }
}

/// The most kernel taps (over all groups) a convolution may have: its decomposition
/// adds a few nodes per tap.
pub const MAX_TAPS: u64 = 1 << 20;

/// Static sizes of one convolution.
struct Sizes {
    channels: u64,
    out_channels: u64,
    kernel: [u64; 2],
    input: [u64; 2],
    output: [u64; 2],
}

impl Conv2d {
    fn sizes(&self, x: &TensorType, w: &TensorType) -> Result<Sizes, String> {
        let shape = |t: &TensorType, what: &str| -> Result<Vec<u64>, String> {
            if t.rank() != 4 {
                return Err(format!("'conv' needs a rank-4 {what}, found {t}"));
            }
            // The batch may be symbolic; every other size must be known.
            t.dims()[1..]
                .iter()
                .map(|d| {
                    d.as_static().ok_or_else(|| {
                        format!("'conv' needs static sizes past the batch, found {t}")
                    })
                })
                .collect()
        };
        let xs = shape(x, "input [N, C, H, W]")?;
        let ws = w
            .dims()
            .iter()
            .map(Dim::as_static)
            .collect::<Option<Vec<u64>>>()
            .filter(|v| v.len() == 4)
            .ok_or_else(|| {
                format!("'conv' needs static weights [O, C/groups, KH, KW], found {w}")
            })?;
        if !x.dtype.is_float() || x.dtype != w.dtype {
            return Err(format!(
                "'conv' needs float input and weights of one dtype, found {x} and {w}"
            ));
        }
        let g = self.groups;
        if g == 0 || self.strides.contains(&0) || self.dilations.contains(&0) {
            return Err("'conv' needs strides, dilations and groups of at least 1".into());
        }
        let (channels, out_channels) = (xs[0], ws[0]);
        if channels % g != 0 || out_channels % g != 0 || ws[1].checked_mul(g) != Some(channels) {
            return Err(format!(
                "'conv' with {g} groups needs weights [O, C/{g}, KH, KW] with O and C multiples of {g}: input {x}, weights {w}"
            ));
        }
        // Attributes come from model files: every size below is checked, and the
        // decomposition's node count (one tap per kernel element and group) is bounded.
        let too_large = || format!("'conv' sizes overflow: input {x}, weights {w}, {self:?}");
        ws[2]
            .checked_mul(ws[3])
            .and_then(|t| t.checked_mul(g))
            .filter(|&t| t <= MAX_TAPS)
            .ok_or_else(|| format!("'conv' has more than {MAX_TAPS} kernel taps over its groups: weights {w}, {g} groups"))?;
        let mut output = [0; 2];
        for a in 0..2 {
            let padded = xs[1 + a]
                .checked_add(self.pads[a])
                .and_then(|p| p.checked_add(self.pads[2 + a]))
                .ok_or_else(too_large)?;
            let reach = self.dilations[a]
                .checked_mul(ws[2 + a].max(1) - 1)
                .and_then(|r| r.checked_add(1))
                .ok_or_else(too_large)?;
            if ws[2 + a] == 0 || padded < reach {
                return Err(format!(
                    "'conv' kernel {w} does not fit the padded input {x}"
                ));
            }
            output[a] = (padded - reach) / self.strides[a] + 1;
        }
        Ok(Sizes {
            channels,
            out_channels,
            kernel: [ws[2], ws[3]],
            input: [xs[1], xs[2]],
            output,
        })
    }

    /// The result type of `conv x, w`.
    pub(super) fn infer(&self, x: &TensorType, w: &TensorType) -> Result<TensorType, String> {
        let s = self.sizes(x, w)?;
        Ok(TensorType::new(
            x.dtype,
            Shape(vec![
                x.dims()[0].clone(),
                Dim::from(s.out_channels),
                Dim::from(s.output[0]),
                Dim::from(s.output[1]),
            ]),
        ))
    }

    /// Adds the decomposition of `conv x, w` to `b` (see the module documentation).
    pub(super) fn decompose(&self, b: &mut Builder, x: ValueId, w: ValueId) -> ValueId {
        let s = self
            .sizes(b.ty(x), b.ty(w))
            .expect("conv operands were type-checked");
        let dtype = b.ty(x).dtype;
        let batch = b.ty(x).dims()[0].clone();
        let mut padded = x;
        for (a, axis) in [2usize, 3].into_iter().enumerate() {
            let (low, high) = (self.pads[a], self.pads[2 + a]);
            if low + high > 0 {
                padded = b.add(
                    Op::Pad {
                        axis,
                        low,
                        high,
                        value: 0.0,
                    },
                    &[padded],
                );
            }
        }
        let padded_size = [
            s.input[0] + self.pads[0] + self.pads[2],
            s.input[1] + self.pads[1] + self.pads[3],
        ];
        let slice = |b: &mut Builder, v: ValueId, axis: usize, start: u64, end: u64, step: u64| {
            b.add(
                Op::Slice {
                    axis,
                    start,
                    end,
                    step,
                },
                &[v],
            )
        };
        let (cg, og) = (s.channels / self.groups, s.out_channels / self.groups);
        let [oh, ow] = s.output;
        let rows = batch.mul(&Dim::from(oh * ow)).expect("checked sizes");
        let mut per_group = Vec::new();
        for g in 0..self.groups {
            let xg = if self.groups == 1 {
                padded
            } else {
                slice(b, padded, 1, g * cg, (g + 1) * cg, 1)
            };
            let wg = if self.groups == 1 {
                w
            } else {
                slice(b, w, 0, g * og, (g + 1) * og, 1)
            };
            let mut sum: Option<ValueId> = None;
            for kh in 0..s.kernel[0] {
                for kw in 0..s.kernel[1] {
                    // The input each output position reads through tap (kh, kw).
                    let mut tap = xg;
                    for (a, k) in [kh, kw].into_iter().enumerate() {
                        let start = k * self.dilations[a];
                        let end =
                            (start + self.strides[a] * (s.output[a] - 1) + 1).min(padded_size[a]);
                        tap = slice(b, tap, 2 + a, start, end, self.strides[a]);
                    }
                    let tap = b.add(
                        Op::Permute {
                            perm: vec![0, 2, 3, 1],
                        },
                        &[tap],
                    );
                    let tap = b.add_typed(
                        Op::Reshape,
                        &[tap],
                        TensorType::new(dtype, Shape(vec![rows.clone(), Dim::from(cg)])),
                    );
                    let wk = slice(b, wg, 2, kh, kh + 1, 1);
                    let wk = slice(b, wk, 3, kw, kw + 1, 1);
                    let wk = b.add_typed(
                        Op::Reshape,
                        &[wk],
                        TensorType::new(dtype, Shape(vec![Dim::from(og), Dim::from(cg)])),
                    );
                    let wk = b.add(Op::Permute { perm: vec![1, 0] }, &[wk]);
                    let term = b.add(Op::MatMul, &[tap, wk]);
                    sum = Some(match sum {
                        Some(acc) => b.binary(BinaryOp::Add, acc, term),
                        None => term,
                    });
                }
            }
            let y = b.add_typed(
                Op::Reshape,
                &[sum.expect("a kernel has at least one tap")],
                TensorType::new(
                    dtype,
                    Shape(vec![
                        batch.clone(),
                        Dim::from(oh),
                        Dim::from(ow),
                        Dim::from(og),
                    ]),
                ),
            );
            per_group.push(b.add(
                Op::Permute {
                    perm: vec![0, 3, 1, 2],
                },
                &[y],
            ));
        }
        if per_group.len() == 1 {
            per_group[0]
        } else {
            b.add(Op::Concat { axis: 1 }, &per_group)
        }
    }
}
