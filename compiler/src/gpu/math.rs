//! The IR's float functions in terms of PTX's fast instructions, with their accuracy.
//!
//! Each is a short kernel-IR sequence, so the evaluator runs the same formula the GPU
//! does (with exact `ex2`/`lg2`); the hardware's `.approx` instructions add at most
//! 2 ulp. Stated errors are for f32 inputs against the exact function.

use super::build::KernelBuilder;
use super::kir::{BinOp, Cmp, Reg, UnOp};
use crate::ir::ops::{BinaryOp, UnaryOp};

const LOG2_E: f32 = std::f32::consts::LOG2_E;
const LN_2: f32 = std::f32::consts::LN_2;

/// `op x` on f32, by the op's table entry ([`UnaryOp::def`]).
pub fn unary(b: &mut KernelBuilder, op: UnaryOp, x: Reg) -> Reg {
    (op.def().ptx)(b, x)
}

/// `ln x = lg2(x)·ln 2`.
pub fn log(b: &mut KernelBuilder, x: Reg) -> Reg {
    let l = b.un(UnOp::Lg2, x);
    b.mul(l, LN_2)
}

/// `sin x`, the argument first reduced to [-π, π].
pub fn sin(b: &mut KernelBuilder, x: Reg) -> Reg {
    let r = reduce_to_pi(b, x);
    b.un(UnOp::Sin, r)
}

/// `cos x`, the argument first reduced to [-π, π].
pub fn cos(b: &mut KernelBuilder, x: Reg) -> Reg {
    let r = reduce_to_pi(b, x);
    b.un(UnOp::Cos, r)
}

/// `x − 2π·round(x / 2π)`, in [-π, π], where `sin.approx`/`cos.approx` are accurate
/// (absolute error 2^-20.9 there; outside it grows without bound). `round` adds and
/// subtracts 1.5·2^23, which rounds to the nearest integer for |x| < 2^22·2π; 2π is
/// split Cody–Waite style into 6.28125 (8 significant bits, so k·6.28125 is exact for
/// |k| < 2^16) and the rest. Added absolute error: about |x|·2^-24.
fn reduce_to_pi(b: &mut KernelBuilder, x: Reg) -> Reg {
    const INV_TWO_PI: f32 = 0.5 * std::f32::consts::FRAC_1_PI;
    const TWO_PI_HI: f32 = 6.28125;
    const TWO_PI_LO: f32 = (std::f64::consts::TAU - 6.28125) as f32;
    const ROUNDER: f32 = 12_582_912.0; // 1.5 · 2^23
    let shifted = b.fma(x, INV_TWO_PI, ROUNDER);
    let k = b.bin(BinOp::Sub, shifted, ROUNDER);
    let nk = b.un(UnOp::Neg, k);
    let r = b.fma(nk, TWO_PI_HI, x);
    b.fma(nk, TWO_PI_LO, r)
}

/// `e^x = 2^(x·log2 e)`: relative error about |x|·2^-24 from rounding the product.
pub fn exp(b: &mut KernelBuilder, x: Reg) -> Reg {
    let s = b.mul(x, LOG2_E);
    b.un(UnOp::Ex2, s)
}

/// `tanh x = sign(x)·(1 − e^(−2|x|)) / (1 + e^(−2|x|))`: absolute error below 1e-7
/// (relative error grows near 0, where tanh x ≈ x is tiny).
pub fn tanh(b: &mut KernelBuilder, x: Reg) -> Reg {
    let a = b.un(UnOp::Abs, x);
    let m = b.mul(a, -2.0f32);
    let t = exp(b, m);
    let num = b.bin(BinOp::Sub, 1.0f32, t);
    let den = b.add(t, 1.0f32);
    let r = b.div(num, den);
    let neg = b.setp(Cmp::Lt, x, 0.0f32);
    let nr = b.un(UnOp::Neg, r);
    b.selp(neg, nr, r)
}

/// erf by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7), odd-extended.
pub fn erf(b: &mut KernelBuilder, x: Reg) -> Reg {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = b.un(UnOp::Abs, x);
    let d = b.fma(a, P, 1.0f32);
    let t = b.un(UnOp::Rcp, d);
    // Horner: ((((a5 t + a4) t + a3) t + a2) t + a1) t
    let mut poly = b.mov(A[4]);
    for &c in A[..4].iter().rev() {
        poly = b.fma(poly, t, c);
    }
    let poly = b.mul(poly, t);
    let sq = b.mul(a, a);
    let nsq = b.un(UnOp::Neg, sq);
    let e = exp(b, nsq);
    let tail = b.mul(poly, e);
    let r = b.bin(BinOp::Sub, 1.0f32, tail);
    let neg = b.setp(Cmp::Lt, x, 0.0f32);
    let nr = b.un(UnOp::Neg, r);
    b.selp(neg, nr, r)
}

/// `a op b` on f32.
pub fn binary(b: &mut KernelBuilder, op: BinaryOp, x: Reg, y: Reg) -> Reg {
    match op {
        BinaryOp::Add => b.add(x, y),
        BinaryOp::Sub => b.bin(BinOp::Sub, x, y),
        BinaryOp::Mul => b.mul(x, y),
        BinaryOp::Div => b.div(x, y),
        BinaryOp::Max => b.bin(BinOp::Max, x, y),
        BinaryOp::Min => b.bin(BinOp::Min, x, y),
        BinaryOp::Pow => pow(b, x, y),
    }
}

/// `x^y = 2^(y·log2|x|)`, with `x^0 = 1`, the sign of a negative base with an odd
/// integer exponent, and NaN for a negative base with a fractional one (as `powf`).
fn pow(b: &mut KernelBuilder, x: Reg, y: Reg) -> Reg {
    let a = b.un(UnOp::Abs, x);
    let l = b.un(UnOp::Lg2, a);
    let p = b.mul(l, y);
    let mag = b.un(UnOp::Ex2, p);
    // Integer exponent? Truncate and compare.
    let yi = b.cvt(super::kir::Ty::I64, y);
    let yf = b.cvt(super::kir::Ty::F32, yi);
    let is_int = b.setp(Cmp::Eq, yf, y);
    let odd_bit = b.bin(BinOp::And, yi, super::kir::Operand::I64(1));
    let odd = b.setp(Cmp::Ne, odd_bit, super::kir::Operand::I64(0));
    let neg_mag = b.un(UnOp::Neg, mag);
    let signed = b.selp(odd, neg_mag, mag);
    let negative_base = b.selp(is_int, signed, f32::NAN);
    let below = b.setp(Cmp::Lt, x, 0.0f32);
    let r = b.selp(below, negative_base, mag);
    let zero_exp = b.setp(Cmp::Eq, y, 0.0f32);
    b.selp(zero_exp, 1.0f32, r)
}
