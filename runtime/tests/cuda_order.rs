//! The device work of a CUDA run, checked without a GPU: `run_order` is the exact list
//! `CudaProgram` issues (fills, event records and waits, launches, each with its
//! stream), and `check_order` proves every launch happens after the writes it reads and
//! the reads its output overwrites. The host-synchronous fills smelt used to issue are
//! not ordered with non-blocking streams, and the checker says so.

use smelt_compiler::gpu::plan::SmPlan;
use smelt_compiler::gpu::{schedule, GpuProgram, GpuTarget};
use smelt_compiler::ir::text;
use smelt_runtime::cuda::order::{check_order, run_order, DeviceOp, RunOrder};

fn program(body: &str) -> GpuProgram {
    let g = text::parse(&format!("graph @t {{\n{body}\n}}\n"))
        .unwrap()
        .graph;
    let bindings = [("B".to_string(), 64)].into();
    GpuProgram::new(&schedule(&g), &bindings).unwrap()
}

const GRAPHS: [&str; 4] = [
    // Compute only.
    "input %a: f32[B, 33]\ninput %b: f32[33, 65]\n%y = matmul %a, %b\n%z = exp %y\n%s = reduce_sum %z {axes = [1]}\noutput %s",
    // Communication on stream 1 between compute kernels on stream 0, both ways.
    "input %x: f32[B, 8]\n%y = all_to_all %x {axis = 0}\n%z = exp %y\n%w = all_to_all %z {axis = 0}\noutput %w",
    // A communication kernel that reads an input straight from its fill.
    "input %x: bf16[3, 5]\n%y = all_to_all %x {axis = 1}\noutput %y",
    // A constant and a computed buffer that starts at zero.
    "input %x: f32[B, 4]\n%c: f32[B, 4] = constant {value = 2.0}\n%y = add %x, %c\n%z = all_to_all %y {axis = 0}\n%w = mul %z, %z\noutput %w",
];

fn order_of(p: &GpuProgram) -> RunOrder {
    let plan = SmPlan::new(p, &GpuTarget::h100(), 20).unwrap();
    run_order(p, &plan)
}

#[test]
fn every_launch_follows_its_fills_and_producers() {
    for body in GRAPHS {
        let p = program(body);
        let order = order_of(&p);
        check_order(&p, &order).unwrap_or_else(|e| panic!("{e}\n{body}"));
        // Every buffer is filled on a stream, then the other stream is told.
        let fills = order
            .fills
            .iter()
            .filter(|op| {
                matches!(
                    op,
                    DeviceOp::Fill {
                        stream: Some(0),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(fills, p.buffers.len(), "{body}");
        assert!(order.fills.contains(&DeviceOp::Wait {
            stream: 1,
            event: p.calls.len()
        }));
    }
}

#[test]
fn host_synchronous_fills_are_caught() {
    for body in GRAPHS {
        let p = program(body);
        let mut order = order_of(&p);
        for op in &mut order.fills {
            if let DeviceOp::Fill { stream, .. } = op {
                *stream = None;
            }
        }
        let err = check_order(&p, &order).unwrap_err().to_string();
        assert!(err.contains("host-synchronous"), "{err}");
    }
}

#[test]
fn a_missing_wait_is_caught() {
    // Without the fills' event, the communication stream may read an input early.
    let p = program(GRAPHS[2]);
    let mut order = order_of(&p);
    order
        .fills
        .retain(|op| !matches!(op, DeviceOp::Wait { stream: 1, .. }));
    let err = check_order(&p, &order).unwrap_err().to_string();
    assert!(err.contains("may run before"), "{err}");
    // Without the waits between the streams' kernels, a consumer may run early.
    let p = program(GRAPHS[1]);
    let mut order = order_of(&p);
    order
        .launches
        .retain(|op| !matches!(op, DeviceOp::Wait { .. }));
    let err = check_order(&p, &order).unwrap_err().to_string();
    assert!(err.contains("may run before"), "{err}");
}
