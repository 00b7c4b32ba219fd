//! `take_along(x, ids)` picks `x[r, ids[r, j]]` row by row, in the interpreter and on the
//! CPU backend; an id outside its row is an error, never a read of the neighbouring row.

mod common;

use common::compile;
use smelt_compiler::ir::DType;
use smelt_runtime::cpu::CpuProgram;
use smelt_runtime::{interp, Precision, Tensor};
use std::collections::HashMap;

const SOURCE: &str = "input x: f32[2, 4]\ninput ids: i32[2, 3]\noutput y = take_along(x, ids)";

fn feeds(ids: &[i64]) -> HashMap<String, Tensor> {
    let x: Vec<f64> = (0..8).map(|i| 0.5 + f64::from(i) * 1.25).collect();
    HashMap::from([
        ("x".to_string(), Tensor::from_f64(DType::F32, vec![2, 4], x)),
        (
            "ids".to_string(),
            Tensor::from_i64(DType::I32, vec![2, 3], ids.to_vec()),
        ),
    ])
}

#[test]
fn picks_along_each_row_on_every_backend() {
    let g = compile(SOURCE).unwrap();
    let f = feeds(&[3, 0, 0, 1, 3, 2]);
    let x = |r: usize, c: usize| 0.5 + (r * 4 + c) as f64 * 1.25;
    let want = vec![x(0, 3), x(0, 0), x(0, 0), x(1, 1), x(1, 3), x(1, 2)];
    let interp = interp::execute(&g, &f, Precision::F64).unwrap();
    assert_eq!(interp.outputs[0].to_f64_vec(), want);
    let cpu = CpuProgram::compile(&g).unwrap().run(&f).unwrap();
    assert_eq!(cpu.outputs[0].to_f64_vec(), want);
}

#[test]
fn an_id_outside_its_row_is_an_error_on_every_backend() {
    let g = compile(SOURCE).unwrap();
    // 4 would be row 1's first element, and -1 row 0's last, in the flat gather.
    for ids in [[0, 1, 4, 0, 0, 0], [0, 0, 0, -1, 0, 0]] {
        let f = feeds(&ids);
        let e = interp::execute(&g, &f, Precision::F64).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{ids:?}: {e}");
        let e = CpuProgram::compile(&g).unwrap().run(&f).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{ids:?}: {e}");
    }
}
