//! The unary op table: one entry per [`UnaryOp`] with everything smelt knows about it.
//!
//! | field | read by |
//! |---|---|
//! | `int` (the dtype rule: floats only, or integers too) | shape rule, interpreter, CPU kernels, both code generators |
//! | `domain` (where the op is finite and smooth) | the tests that sample it |
//! | `reference` (f64) | the interpreter, constant folding in the language and the optimiser |
//! | `f32` | the CPU evaluator and kernels, the Cranelift JIT's scalar calls |
//! | `flops` | the cost model |
//! | `vjp` | autodiff |
//! | `cranelift` | the CPU JIT, scalar and `f32x4` |
//! | `ptx` | the GPU lowering (and so the kernel evaluator) |
//!
//! [`UnaryOp::def`] is an exhaustive match, so a new op does not compile until its
//! entry exists, and every field must be filled. The recipe for a new primitive is in
//! ARCHITECTURE.md ("Adding an elementwise op").
//!
//! Approximations live with their backend (`codegen::cranelift::vector`, `gpu::math`),
//! each with its stated error bound; the entries name them.

use super::{BinaryOp, CompareOp, Op, UnaryOp};
use crate::codegen::cranelift::{const_like, vector};
use crate::gpu::build::KernelBuilder;
use crate::gpu::kir::{BinOp, Cmp, Reg, UnOp};
use crate::gpu::math;
use crate::ir::{Builder, ValueId};
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Everything about one unary op. See the module documentation for who reads what.
pub struct UnaryDef {
    /// The meaning on integers (wrapping), for the ops defined on them; `None`: floats
    /// only.
    pub int: Option<IntUnary>,
    /// Where the op is finite and smooth: where tests sample it.
    pub domain: Domain,
    /// The meaning, in f64: the reference every backend is tested against.
    pub reference: fn(f64) -> f64,
    /// The f32 evaluation the CPU backend uses (and the JIT calls).
    pub f32: extern "C" fn(f32) -> f32,
    /// Cost in multiply-add equivalents per element.
    pub flops: f64,
    /// The vector-Jacobian product: the adjoint of `x` from `x`, the result `y` and
    /// the result's adjoint `g`.
    pub vjp: fn(&mut Builder, Vjp) -> ValueId,
    /// How the Cranelift JIT emits it.
    pub cranelift: Cranelift,
    /// The PTX lowering on f32 registers.
    pub ptx: fn(&mut KernelBuilder, Reg) -> Reg,
}

/// The values a unary gradient may use.
#[derive(Clone, Copy, Debug)]
pub struct Vjp {
    /// The operand.
    pub x: ValueId,
    /// The result.
    pub y: ValueId,
    /// The result's adjoint.
    pub g: ValueId,
}

/// The integer meaning of the ops defined on integers; each backend matches on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntUnary {
    /// Wrapping negation.
    Neg,
    /// Wrapping absolute value (`|i64::MIN|` is `i64::MIN`).
    Abs,
}

impl IntUnary {
    /// The result on `x`, before wrapping to the dtype's width.
    pub fn apply(self, x: i64) -> i64 {
        match self {
            IntUnary::Neg => x.wrapping_neg(),
            IntUnary::Abs => x.wrapping_abs(),
        }
    }
}

/// Where an op may be sampled by tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// Finite and smooth on every real number.
    Real,
    /// Finite everywhere, with a kink at 0 (so gradients are checked away from it).
    NonZero,
    /// Finite only for positive numbers.
    Positive,
}

/// How the Cranelift JIT emits an op.
#[derive(Clone, Copy)]
pub enum Cranelift {
    /// Instructions that work alike on `f32` scalars and `f32x4` vectors.
    Inline(fn(&mut FunctionBuilder, Value) -> Value),
    /// A call of the entry's `f32` per element; on vectors, `vector` when given (an
    /// approximation in vector code), otherwise one call per lane.
    Call {
        /// The vector code, if any.
        vector: Option<fn(&mut FunctionBuilder, Value) -> Value>,
    },
}

/// An `extern "C" fn(f32) -> f32` from a closure body, so the JIT can call it.
macro_rules! c_fn {
    (|$x:ident| $body:expr) => {{
        extern "C" fn f($x: f32) -> f32 {
            $body
        }
        f as extern "C" fn(f32) -> f32
    }};
}

use BinaryOp::{Add, Div, Mul, Sub};

impl UnaryOp {
    /// The op's entry in the table.
    pub fn def(self) -> &'static UnaryDef {
        match self {
            UnaryOp::Neg => &NEG,
            UnaryOp::Abs => &ABS,
            UnaryOp::Exp => &EXP,
            UnaryOp::Log => &LOG,
            UnaryOp::Sqrt => &SQRT,
            UnaryOp::Rsqrt => &RSQRT,
            UnaryOp::Recip => &RECIP,
            UnaryOp::Tanh => &TANH,
            UnaryOp::Erf => &ERF,
            UnaryOp::Sin => &SIN,
            UnaryOp::Cos => &COS,
            UnaryOp::Softsign => &SOFTSIGN,
            UnaryOp::Sinh => &SINH,
            UnaryOp::Cosh => &COSH,
            UnaryOp::Asinh => &ASINH,
            UnaryOp::Softplus => &SOFTPLUS,
        }
    }

    /// Whether the op is defined on integers (otherwise floats only).
    pub fn accepts_ints(self) -> bool {
        self.def().int.is_some()
    }

    /// The op on an f64, by its reference meaning.
    pub fn eval(self, x: f64) -> f64 {
        (self.def().reference)(x)
    }
}

static NEG: UnaryDef = UnaryDef {
    int: Some(IntUnary::Neg),
    domain: Domain::Real,
    reference: |x| -x,
    f32: c_fn!(|x| -x),
    flops: 1.0,
    vjp: |b, d| b.unary(UnaryOp::Neg, d.g),
    cranelift: Cranelift::Inline(|b, x| b.ins().fneg(x)),
    ptx: |b, x| b.un(UnOp::Neg, x),
};

static ABS: UnaryDef = UnaryDef {
    int: Some(IntUnary::Abs),
    domain: Domain::NonZero,
    reference: f64::abs,
    f32: c_fn!(|x| x.abs()),
    flops: 1.0,
    vjp: |b, d| {
        let zero = b.zeros_like(d.x);
        let nonneg = b.compare(CompareOp::Ge, d.x, zero);
        let ng = b.unary(UnaryOp::Neg, d.g);
        b.add(Op::Select, &[nonneg, d.g, ng])
    },
    cranelift: Cranelift::Inline(|b, x| b.ins().fabs(x)),
    ptx: |b, x| b.un(UnOp::Abs, x),
};

// Transcendentals cost several multiply-adds each.
static EXP: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Real,
    reference: f64::exp,
    f32: c_fn!(|x| x.exp()),
    flops: 10.0,
    vjp: |b, d| b.binary(Mul, d.g, d.y),
    cranelift: Cranelift::Call {
        vector: Some(vector::exp),
    },
    ptx: math::exp,
};

static LOG: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Positive,
    reference: f64::ln,
    f32: c_fn!(|x| x.ln()),
    flops: 10.0,
    vjp: |b, d| b.binary(Div, d.g, d.x),
    cranelift: Cranelift::Call { vector: None },
    ptx: math::log,
};

static SQRT: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Positive,
    reference: f64::sqrt,
    f32: c_fn!(|x| x.sqrt()),
    flops: 4.0,
    vjp: |b, d| {
        let t = b.binary(Div, d.g, d.y);
        b.binary_scalar(Mul, t, 0.5)
    },
    cranelift: Cranelift::Inline(|b, x| b.ins().sqrt(x)),
    ptx: |b, x| b.un(UnOp::Sqrt, x),
};

static RSQRT: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Positive,
    reference: |x| 1.0 / x.sqrt(),
    f32: c_fn!(|x| 1.0 / x.sqrt()),
    flops: 4.0,
    // d/dx x^(-1/2) = -1/2 x^(-3/2) = -1/2 * y / x
    vjp: |b, d| {
        let t = b.binary(Mul, d.g, d.y);
        let t = b.binary(Div, t, d.x);
        b.binary_scalar(Mul, t, -0.5)
    },
    cranelift: Cranelift::Inline(|b, x| {
        let s = b.ins().sqrt(x);
        let one = const_like(b, x, 1.0);
        b.ins().fdiv(one, s)
    }),
    ptx: |b, x| b.un(UnOp::Rsqrt, x),
};

static RECIP: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Positive,
    reference: |x| 1.0 / x,
    f32: c_fn!(|x| 1.0 / x),
    flops: 4.0,
    vjp: |b, d| {
        let yy = b.binary(Mul, d.y, d.y);
        let t = b.binary(Mul, d.g, yy);
        b.unary(UnaryOp::Neg, t)
    },
    cranelift: Cranelift::Inline(|b, x| {
        let one = const_like(b, x, 1.0);
        b.ins().fdiv(one, x)
    }),
    ptx: |b, x| b.un(UnOp::Rcp, x),
};

static TANH: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Real,
    reference: f64::tanh,
    f32: c_fn!(|x| x.tanh()),
    flops: 10.0,
    vjp: |b, d| {
        let yy = b.binary(Mul, d.y, d.y);
        let one = b.splat(1.0, b.ty(d.y).clone());
        let dydx = b.binary(Sub, one, yy);
        b.binary(Mul, d.g, dydx)
    },
    cranelift: Cranelift::Call {
        vector: Some(vector::tanh),
    },
    ptx: math::tanh,
};

static ERF: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Real,
    // musl's implementation, through the `libm` crate.
    reference: libm::erf,
    f32: c_fn!(|x| libm::erff(x)),
    flops: 10.0,
    vjp: |b, d| {
        let xx = b.binary(Mul, d.x, d.x);
        let nxx = b.unary(UnaryOp::Neg, xx);
        let e = b.unary(UnaryOp::Exp, nxx);
        let dydx = b.binary_scalar(Mul, e, std::f64::consts::FRAC_2_SQRT_PI);
        b.binary(Mul, d.g, dydx)
    },
    cranelift: Cranelift::Call { vector: None },
    ptx: math::erf,
};

static SIN: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Real,
    reference: f64::sin,
    f32: c_fn!(|x| x.sin()),
    flops: 10.0,
    vjp: |b, d| {
        let c = b.unary(UnaryOp::Cos, d.x);
        b.binary(Mul, d.g, c)
    },
    cranelift: Cranelift::Call { vector: None },
    ptx: math::sin,
};

static COS: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Real,
    reference: f64::cos,
    f32: c_fn!(|x| x.cos()),
    flops: 10.0,
    vjp: |b, d| {
        let s = b.unary(UnaryOp::Sin, d.x);
        let t = b.binary(Mul, d.g, s);
        b.unary(UnaryOp::Neg, t)
    },
    cranelift: Cranelift::Call { vector: None },
    ptx: math::cos,
};

// softsign x = x / (1 + |x|), ONNX's `Softsign`; d/dx = 1 / (1 + |x|)^2.
static SOFTSIGN: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Real,
    reference: |x| x / (1.0 + x.abs()),
    f32: c_fn!(|x| x / (1.0 + x.abs())),
    flops: 3.0,
    vjp: |b, d| {
        let a = b.unary(UnaryOp::Abs, d.x);
        let den = b.binary_scalar(Add, a, 1.0);
        let t = b.binary(Div, d.g, den);
        b.binary(Div, t, den)
    },
    cranelift: Cranelift::Inline(|b, x| {
        let a = b.ins().fabs(x);
        let one = const_like(b, x, 1.0);
        let den = b.ins().fadd(a, one);
        b.ins().fdiv(x, den)
    }),
    ptx: |b, x| {
        let a = b.un(UnOp::Abs, x);
        let den = b.add(a, 1.0f32);
        b.div(x, den)
    },
};

// sinh x = (eˣ − e⁻ˣ) / 2. On the GPU from two exponentials: absolute error about
// 1e-7 (relative error grows near 0, where sinh x ≈ x is small).
static SINH: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Real,
    reference: f64::sinh,
    f32: c_fn!(|x| x.sinh()),
    flops: 20.0,
    vjp: |b, d| {
        let c = b.unary(UnaryOp::Cosh, d.x);
        b.binary(Mul, d.g, c)
    },
    cranelift: Cranelift::Call { vector: None },
    ptx: |b, x| {
        let (up, down) = exp_pair(b, x);
        let diff = b.bin(BinOp::Sub, up, down);
        b.mul(diff, 0.5f32)
    },
};

// cosh x = (eˣ + e⁻ˣ) / 2.
static COSH: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Real,
    reference: f64::cosh,
    f32: c_fn!(|x| x.cosh()),
    flops: 20.0,
    vjp: |b, d| {
        let s = b.unary(UnaryOp::Sinh, d.x);
        b.binary(Mul, d.g, s)
    },
    cranelift: Cranelift::Call { vector: None },
    ptx: |b, x| {
        let (up, down) = exp_pair(b, x);
        let sum = b.add(up, down);
        b.mul(sum, 0.5f32)
    },
};

// asinh x = sign(x) · ln(|x| + √(x² + 1)) (odd, so no cancellation for x < 0);
// d/dx = 1 / √(x² + 1).
static ASINH: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Real,
    reference: f64::asinh,
    f32: c_fn!(|x| x.asinh()),
    flops: 20.0,
    vjp: |b, d| {
        let xx = b.binary(Mul, d.x, d.x);
        let t = b.binary_scalar(Add, xx, 1.0);
        let r = b.unary(UnaryOp::Rsqrt, t);
        b.binary(Mul, d.g, r)
    },
    cranelift: Cranelift::Call { vector: None },
    ptx: |b, x| {
        let a = b.un(UnOp::Abs, x);
        let t = b.fma(a, a, 1.0f32);
        let root = b.un(UnOp::Sqrt, t);
        let sum = b.add(a, root);
        let l = math::log(b, sum);
        let negative = b.setp(Cmp::Lt, x, 0.0f32);
        let nl = b.un(UnOp::Neg, l);
        b.selp(negative, nl, l)
    },
};

// softplus x = ln(1 + eˣ), as max(x, 0) + ln(1 + e^−|x|) so that it neither
// overflows nor loses small values; d/dx = sigmoid(x) = 1 / (1 + e⁻ˣ).
static SOFTPLUS: UnaryDef = UnaryDef {
    int: None,
    domain: Domain::Real,
    reference: |x| x.max(0.0) + (-x.abs()).exp().ln_1p(),
    f32: c_fn!(|x| x.max(0.0) + (-x.abs()).exp().ln_1p()),
    flops: 22.0,
    vjp: |b, d| {
        let nx = b.unary(UnaryOp::Neg, d.x);
        let e = b.unary(UnaryOp::Exp, nx);
        let den = b.binary_scalar(Add, e, 1.0);
        b.binary(Div, d.g, den)
    },
    cranelift: Cranelift::Call { vector: None },
    ptx: |b, x| {
        let a = b.un(UnOp::Abs, x);
        let na = b.un(UnOp::Neg, a);
        let e = math::exp(b, na);
        let one_plus = b.add(e, 1.0f32);
        let l = math::log(b, one_plus);
        let positive = b.bin(BinOp::Max, x, 0.0f32);
        b.add(positive, l)
    },
};

/// `(eˣ, e⁻ˣ)` on the GPU.
fn exp_pair(b: &mut KernelBuilder, x: Reg) -> (Reg, Reg) {
    let up = math::exp(b, x);
    let nx = b.un(UnOp::Neg, x);
    let down = math::exp(b, nx);
    (up, down)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sample points of `domain`, away from where an op is not smooth.
    fn samples(domain: Domain) -> Vec<f64> {
        let grid = (1..=40).map(|i| f64::from(i) * 0.1);
        match domain {
            Domain::Positive => grid.collect(),
            Domain::Real | Domain::NonZero => grid.flat_map(|x| [x, -x]).collect(),
        }
    }

    #[test]
    fn every_f32_entry_agrees_with_its_reference() {
        for &op in UnaryOp::ALL {
            let def = op.def();
            for x in samples(def.domain) {
                let want = (def.reference)(x);
                let got = f64::from((def.f32)(x as f32));
                // f32 rounding of the input and the result, amplified by the slope.
                let tol = 1e-6 * want.abs().max(1.0) * (1.0 + x.abs());
                assert!(
                    (got - want).abs() <= tol,
                    "{}({x}) = {got}, want {want}",
                    op.name()
                );
            }
        }
    }

    #[test]
    fn integer_meanings_wrap() {
        assert_eq!(IntUnary::Neg.apply(i64::MIN), i64::MIN);
        assert_eq!(IntUnary::Abs.apply(-3), 3);
        let on_ints: Vec<&str> = UnaryOp::ALL
            .iter()
            .filter(|op| op.accepts_ints())
            .map(|op| op.name())
            .collect();
        assert_eq!(on_ints, ["neg", "abs"]);
    }

    #[test]
    fn erf_reference_matches_known_values() {
        let cases = [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.5, -0.966_105_146_475_310_8),
        ];
        for (x, want) in cases {
            let got = UnaryOp::Erf.eval(x);
            assert!((got - want).abs() < 1e-15, "erf({x}) = {got}, want {want}");
        }
    }
}
