//! Random well-typed graphs from a list of random choices, shared by the round-trip
//! properties (`roundtrip.rs`) and the optimiser's soundness property
//! (`tests/optimize_random.rs` at the workspace root, which includes this file).

use smelt_compiler::ir::ops::{BinaryOp, CompareOp, Composite, ReduceOp, UnaryOp};
use smelt_compiler::ir::{Builder, DType, Dim, Graph, Init, Op, Shape, TensorType, ValueId};

/// Interprets a list of random choices as graph-building steps. Steps whose op rejects
/// the chosen operands are skipped, so every produced graph is well-typed.
pub fn build(choices: &[(u8, u8, u8, f64)]) -> Graph {
    let mut b = Builder::new("random");
    let dims = [Dim::sym("B"), Dim::fixed(3), Dim::fixed(4)];
    let x = b
        .input(
            "x",
            TensorType::new(DType::F32, Shape(vec![dims[0].clone(), dims[1].clone()])),
        )
        .unwrap();
    let w = b
        .param(
            "layer.0.w",
            TensorType::fixed(DType::F32, &[3, 4]),
            Init::Uniform {
                low: -0.5,
                high: 0.5,
            },
        )
        .unwrap();
    b.param(
        "bias",
        TensorType::fixed(DType::F32, &[4]),
        Init::Normal {
            mean: 0.0,
            std: 0.02,
        },
    )
    .unwrap();
    let idx = b
        .input(
            "idx",
            TensorType::new(DType::I32, Shape(vec![dims[0].clone()])),
        )
        .unwrap();
    let y = b.node(None, Op::MatMul, &[x, w], None).unwrap();
    // The routing ops: indices, a grouped product and its weight gradient.
    let experts = b
        .param(
            "experts.w",
            TensorType::fixed(DType::F32, &[2, 3, 4]),
            Init::Zeros,
        )
        .unwrap();
    b.node(None, Op::TopK { k: 2 }, &[x], None).unwrap();
    b.node(None, Op::GroupedMatMul, &[x, experts, idx], None)
        .unwrap();
    b.node(
        None,
        Op::GroupedMatMulWeightGrad { groups: 2 },
        &[x, y, idx],
        None,
    )
    .unwrap();
    let moment = b
        .state(
            "layer.0.w.m",
            TensorType::fixed(DType::F32, &[3, 4]),
            Init::Zeros,
        )
        .unwrap();
    let next = b
        .node(
            Some("layer.0.w.m.next"),
            Op::Binary(BinaryOp::Add),
            &[moment, w],
            None,
        )
        .unwrap();
    b.update(moment, next).unwrap();
    let mut last = ValueId(0);
    for &(kind, a, c, f) in choices {
        let n = b.graph().values.len() as u32;
        let pick = |i: u8| ValueId(u32::from(i) % n);
        let (va, vc) = (pick(a), pick(c));
        let ta = b.ty(va).clone();
        let rank = ta.rank();
        let axis = usize::from(c) % rank.max(1);
        let (op, operands, declared): (Op, Vec<ValueId>, Option<TensorType>) = match kind % 18 {
            0 => (
                Op::Unary(UnaryOp::ALL[usize::from(c) % UnaryOp::ALL.len()]),
                vec![va],
                None,
            ),
            1 => (
                Op::Binary(BinaryOp::ALL[usize::from(a) % BinaryOp::ALL.len()]),
                vec![va, vc],
                None,
            ),
            2 => (
                Op::Compare(CompareOp::ALL[usize::from(c) % CompareOp::ALL.len()]),
                vec![va, va],
                None,
            ),
            3 => (
                Op::Reduce {
                    op: ReduceOp::ALL[usize::from(a) % 3],
                    axes: vec![axis],
                },
                vec![va],
                None,
            ),
            4 => (Op::MatMul, vec![va, vc], None),
            5 => {
                let mut perm: Vec<usize> = (0..rank).collect();
                perm.rotate_left(axis);
                (Op::Permute { perm }, vec![va], None)
            }
            6 => {
                let mut dims = vec![Dim::fixed(2)];
                dims.extend(ta.dims().iter().cloned());
                (
                    Op::Broadcast {
                        dims: (1..=rank).collect(),
                    },
                    vec![va],
                    Some(ta.with_shape(Shape(dims))),
                )
            }
            7 => (
                Op::Reshape,
                vec![va],
                Some(ta.with_shape(Shape(vec![
                    ta.shape.numel().expect("random test shapes are small"),
                ]))),
            ),
            8 => (
                Op::Slice {
                    axis,
                    start: 1,
                    end: 3,
                    step: 1 + u64::from(a % 2),
                },
                vec![va],
                None,
            ),
            9 => (Op::Concat { axis }, vec![va, va], None),
            10 => (
                Op::Pad {
                    axis,
                    low: 1,
                    high: u64::from(a % 3),
                    value: f,
                },
                vec![va],
                None,
            ),
            // The constants rules look for (0, 1, -1, powers of two) as often as others.
            11 => {
                let value = [0.0, 1.0, -1.0, 0.25, f][usize::from(a) % 5];
                (
                    Op::Constant {
                        values: vec![value],
                    },
                    vec![],
                    Some(ta.clone()),
                )
            }
            12 => (Op::Iota { axis }, vec![], Some(ta.with_dtype(DType::I32))),
            13 => (
                Op::RandomNormal {
                    mean: f,
                    std: 0.5,
                    seed: u64::from(a),
                },
                vec![],
                Some(ta.clone()),
            ),
            // An op with a constant operand, the shape most algebra rules look for.
            14 if ta.dtype.is_float() => {
                let value = [0.0, 1.0, -1.0, 0.25, f][usize::from(c) % 5];
                let constant = Op::Constant {
                    values: vec![value],
                };
                let Ok(k) = b.node(None, constant, &[], Some(ta.clone())) else {
                    continue;
                };
                let op = Op::Binary(BinaryOp::ALL[usize::from(a) % BinaryOp::ALL.len()]);
                let operands = if a % 2 == 0 { vec![va, k] } else { vec![k, va] };
                (op, operands, None)
            }
            17 => (Op::Composite(Composite::Softmax { axis }), vec![va], None),
            15 => (
                Op::Composite(Composite::SoftmaxGrad { axis }),
                vec![va, va],
                None,
            ),
            _ => (
                Op::Composite(Composite::Gelu { tanh: a % 2 == 0 }),
                vec![va],
                None,
            ),
        };
        if let Ok(id) = b.node(None, op, &operands, declared) {
            last = id;
        }
    }
    b.output(last).unwrap();
    b.finish()
}
