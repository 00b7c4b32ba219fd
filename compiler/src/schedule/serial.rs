//! A schedule as JSON, so a compiled program can be stored and loaded without
//! scheduling again (`smelt compile`, the compile cache).
//!
//! The graph is kept in its canonical text form (parsing it back gives the same value
//! order, so step references by index stay valid). Each step is `{"library": V}`,
//! `{"matmul": {"output": V, "lhs": [V, transposed], "rhs": [V, transposed]}}` or
//! `{"kernel": {...}}`; each kernel expression is a short array such as
//! `["binary", "add", 0, 1]`. Constants are stored as their f64 bit patterns, so NaN and
//! infinities survive JSON. [`from_json`] checks every index, so a well-formed but wrong
//! file gives an error rather than a panic later.

use super::{Schedule, Step};
use crate::ir::ops::{BinaryOp, CompareOp, UnaryOp};
use crate::ir::{text, DType, ValueId};
use crate::kernel::{Expr, PointwiseKernel};
use serde_json::{json, Value};

/// The schedule as a JSON value.
pub fn to_json(s: &Schedule) -> Value {
    let steps: Vec<Value> = s
        .steps
        .iter()
        .map(|step| match step {
            Step::Library(v) => json!({ "library": v.0 }),
            Step::Pointwise(k) => json!({ "kernel": kernel_to_json(k) }),
            Step::MatMul {
                output,
                lhs,
                rhs,
                init,
            } => json!({ "matmul": {
                "output": output.0,
                "lhs": [lhs.value.0, lhs.transposed],
                "rhs": [rhs.value.0, rhs.transposed],
                "init": init.as_deref().map(kernel_to_json),
            }}),
        })
        .collect();
    json!({ "graph": text::print(&s.graph), "steps": steps })
}

fn kernel_to_json(k: &PointwiseKernel) -> Value {
    let exprs: Vec<Value> = k
        .exprs
        .iter()
        .map(|(e, dt)| {
            let e = match e {
                Expr::Load { input, axes } => json!(["load", input, axes]),
                Expr::Const(c) => json!(["const", c.to_bits()]),
                Expr::Index(a) => json!(["index", a]),
                Expr::Unary(op, x) => json!(["unary", op.name(), x]),
                Expr::Binary(op, a, b) => json!(["binary", op.name(), a, b]),
                Expr::Compare(op, a, b) => json!(["compare", op.name(), a, b]),
                Expr::Select(c, a, b) => json!(["select", c, a, b]),
                Expr::Cast(x) => json!(["cast", x]),
            };
            json!([dt.name(), e])
        })
        .collect();
    let inputs: Vec<u32> = k.inputs.iter().map(|v| v.0).collect();
    json!({
        "name": k.name,
        "inputs": inputs,
        "output": k.output.0,
        "rank": k.rank,
        "exprs": exprs,
    })
}

/// Why a schedule's JSON form was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleJsonError {
    /// A required field is absent.
    #[error("the schedule has no {0}")]
    Missing(&'static str),
    /// The graph text does not parse.
    #[error("the scheduled graph does not parse: {0}")]
    Graph(#[from] text::ParseError),
    /// A step is malformed or does not fit the graph (a reference out of range, a
    /// step over the wrong op, an unknown expression).
    #[error("{0}")]
    Step(String),
}

/// Reads a schedule written by [`to_json`], checking that every reference is in range.
pub fn from_json(v: &Value) -> Result<Schedule, ScheduleJsonError> {
    let graph_text = v["graph"]
        .as_str()
        .ok_or(ScheduleJsonError::Missing("graph text"))?;
    let graph = text::parse(graph_text)?.graph;
    let n = graph.values.len();
    let value = |x: &Value| -> Result<ValueId, String> {
        match x.as_u64() {
            Some(i) if (i as usize) < n => Ok(ValueId(i as u32)),
            _ => Err(format!(
                "value reference {x} is not one of the graph's {n} values"
            )),
        }
    };
    let mut steps = Vec::new();
    for s in v["steps"]
        .as_array()
        .ok_or(ScheduleJsonError::Missing("steps"))?
    {
        steps.push(step_from_json(&graph, s, &value).map_err(ScheduleJsonError::Step)?);
    }
    Ok(Schedule { graph, steps })
}

/// One step of the JSON form.
fn step_from_json(
    graph: &crate::ir::Graph,
    s: &Value,
    value: &dyn Fn(&Value) -> Result<ValueId, String>,
) -> Result<Step, String> {
    if let Some(l) = s.get("library") {
        let id = value(l)?;
        if !matches!(graph.value(id).def, crate::ir::Def::Node { .. }) {
            return Err(format!(
                "library step %{} is not an op",
                graph.value(id).name
            ));
        }
        Ok(Step::Library(id))
    } else if let Some(k) = s.get("kernel") {
        Ok(Step::Pointwise(kernel_from_json(k, value)?))
    } else if let Some(m) = s.get("matmul") {
        let output = value(&m["output"])?;
        let crate::ir::Def::Node {
            op: crate::ir::Op::MatMul,
            operands,
        } = &graph.value(output).def
        else {
            return Err(format!(
                "matmul step %{} is not a matmul",
                graph.value(output).name
            ));
        };
        // Only what scheduling itself would choose: anything else could make the
        // kernel read out of bounds.
        let (lhs, rhs) = (
            super::transpose::matmul_operand(graph, operands[0]),
            super::transpose::matmul_operand(graph, operands[1]),
        );
        let stored = |x: &Value| (x[0].as_u64(), x[1].as_bool());
        let expect = |o: super::MatMulOperand| (Some(u64::from(o.value.0)), Some(o.transposed));
        if stored(&m["lhs"]) != expect(lhs) || stored(&m["rhs"]) != expect(rhs) {
            return Err(format!(
                "matmul step %{} does not read its operands",
                graph.value(output).name
            ));
        }
        let init = match m.get("init") {
            None | Some(Value::Null) => None,
            Some(k) => Some(Box::new(kernel_from_json(k, value)?)),
        };
        Ok(Step::MatMul {
            output,
            lhs,
            rhs,
            init,
        })
    } else {
        Err(format!("unknown step {s}"))
    }
}

fn kernel_from_json(
    k: &Value,
    value: &dyn Fn(&Value) -> Result<ValueId, String>,
) -> Result<PointwiseKernel, String> {
    let name = k["name"]
        .as_str()
        .ok_or("a kernel has no name")?
        .to_string();
    let inputs = k["inputs"]
        .as_array()
        .ok_or("a kernel has no inputs")?
        .iter()
        .map(value)
        .collect::<Result<Vec<_>, _>>()?;
    let output = value(&k["output"])?;
    let rank = k["rank"].as_u64().ok_or("a kernel has no rank")? as usize;
    let mut exprs = Vec::new();
    for e in k["exprs"].as_array().ok_or("a kernel has no expressions")? {
        let bad = || format!("kernel {name}: malformed expression {e}");
        let dt = e[0].as_str().and_then(DType::from_name).ok_or_else(bad)?;
        let body = &e[1];
        let tag = body[0].as_str().ok_or_else(bad)?;
        // Operands refer to earlier expressions only.
        let earlier = |x: &Value| match x.as_u64() {
            Some(i) if (i as usize) < exprs.len() => Ok(i as usize),
            _ => Err(bad()),
        };
        let axis = |x: &Value| -> Result<Option<usize>, String> {
            match x {
                Value::Null => Ok(None),
                _ => match x.as_u64() {
                    Some(a) if (a as usize) < rank => Ok(Some(a as usize)),
                    _ => Err(bad()),
                },
            }
        };
        let op_name = || body[1].as_str().ok_or_else(bad);
        let expr = match tag {
            "load" => {
                let input = body[1].as_u64().ok_or_else(bad)? as usize;
                if input >= inputs.len() {
                    return Err(bad());
                }
                let axes = body[2]
                    .as_array()
                    .ok_or_else(bad)?
                    .iter()
                    .map(axis)
                    .collect::<Result<Vec<_>, _>>()?;
                Expr::Load { input, axes }
            }
            "const" => Expr::Const(f64::from_bits(body[1].as_u64().ok_or_else(bad)?)),
            "index" => Expr::Index(axis(&body[1])?),
            "unary" => Expr::Unary(
                UnaryOp::from_name(op_name()?).ok_or_else(bad)?,
                earlier(&body[2])?,
            ),
            "binary" => Expr::Binary(
                BinaryOp::from_name(op_name()?).ok_or_else(bad)?,
                earlier(&body[2])?,
                earlier(&body[3])?,
            ),
            "compare" => Expr::Compare(
                CompareOp::from_name(op_name()?).ok_or_else(bad)?,
                earlier(&body[2])?,
                earlier(&body[3])?,
            ),
            "select" => Expr::Select(earlier(&body[1])?, earlier(&body[2])?, earlier(&body[3])?),
            "cast" => Expr::Cast(earlier(&body[1])?),
            _ => return Err(bad()),
        };
        exprs.push((expr, dt));
    }
    if exprs.is_empty() {
        return Err(format!("kernel {name} computes nothing"));
    }
    Ok(PointwiseKernel {
        name,
        inputs,
        output,
        rank,
        exprs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::schedule;

    #[test]
    fn round_trips_a_fused_schedule() {
        let g = text::parse(
            "graph @t {\n  input %x: f32[B, 4]\n  param %w: f32[4, 4] = normal(0.0, 0.02)\n  %y: f32[B, 4] = matmul %x, %w\n  %z: f32[B, 4] = gelu %y {approximate = tanh}\n  output %z\n}\n",
        )
        .unwrap()
        .graph;
        let s = schedule(&g);
        let back = from_json(&to_json(&s)).unwrap();
        assert_eq!(back.steps, s.steps);
        assert_eq!(text::print(&back.graph), text::print(&s.graph));
    }

    #[test]
    fn rejects_references_out_of_range() {
        let g =
            text::parse("graph @t {\n  input %x: f32[4]\n  %y: f32[4] = exp %x\n  output %y\n}\n")
                .unwrap()
                .graph;
        let mut v = to_json(&schedule(&g));
        v["steps"][0]["kernel"]["output"] = json!(99);
        assert!(from_json(&v).unwrap_err().to_string().contains("99"));
    }
}
