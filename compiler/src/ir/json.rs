//! The JSON form of graphs: the same content as the text form, for tools.
//!
//! Values refer to each other by name; attributes use the op's own attribute mapping
//! (shared with the text form). Non-finite floats are written as the strings `"inf"`,
//! `"-inf"` and `"nan"`, since JSON has no literal for them.

use super::{Attr, BuildError, Builder, Def, Graph, Init, Op, TensorType, ValueId, VerifyError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value as Json};
use std::collections::HashMap;
use thiserror::Error;

#[derive(Serialize, Deserialize)]
struct GraphJson {
    graph: String,
    values: Vec<ValueJson>,
    outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    updates: Vec<UpdateJson>,
}

#[derive(Serialize, Deserialize)]
struct UpdateJson {
    target: String,
    value: String,
}

#[derive(Serialize, Deserialize)]
struct ValueJson {
    name: String,
    #[serde(rename = "type")]
    ty: TensorType,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    init: Option<Map<String, Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    operands: Vec<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    attrs: Map<String, Json>,
}

fn float_json(x: f64) -> Json {
    match Number::from_f64(x) {
        Some(n) => Json::Number(n),
        None => Json::String(super::format_float(x)),
    }
}

fn attr_json(a: &Attr) -> Json {
    match a {
        Attr::Int(i) => Json::from(*i),
        Attr::Float(x) => float_json(*x),
        Attr::Bool(b) => Json::Bool(*b),
        Attr::Ints(xs) => Json::Array(xs.iter().map(|&i| Json::from(i)).collect()),
        Attr::Floats(xs) => Json::Array(xs.iter().map(|&x| float_json(x)).collect()),
        Attr::Word(w) => Json::String(w.clone()),
    }
}

fn json_float(j: &Json) -> Option<f64> {
    match j {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn json_attr(key: &str, j: &Json) -> Result<Attr, String> {
    let bad = || format!("attribute '{key}' has an unsupported JSON value {j}");
    Ok(match j {
        Json::Bool(b) => Attr::Bool(*b),
        Json::Number(n) if n.is_i64() => Attr::Int(n.as_i64().ok_or_else(bad)?),
        Json::String(s) if s.parse::<f64>().is_ok() => Attr::Float(s.parse().map_err(|_| bad())?),
        Json::String(s) => Attr::Word(s.clone()),
        Json::Array(xs) if xs.iter().all(|x| x.as_i64().is_some()) => {
            Attr::Ints(xs.iter().filter_map(Json::as_i64).collect())
        }
        Json::Array(xs) => Attr::Floats(
            xs.iter()
                .map(|x| json_float(x).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
        ),
        _ => Attr::Float(json_float(j).ok_or_else(bad)?),
    })
}

fn init_json(init: &Init) -> Map<String, Json> {
    let mut m = Map::new();
    let (kind, args): (&str, &[(&str, f64)]) = match init {
        Init::Zeros => ("zeros", &[]),
        Init::Ones => ("ones", &[]),
        Init::Uniform { low, high } => ("uniform", &[("low", *low), ("high", *high)]),
        Init::Normal { mean, std } => ("normal", &[("mean", *mean), ("std", *std)]),
    };
    m.insert("kind".into(), Json::String(kind.into()));
    for (k, v) in args {
        m.insert((*k).into(), float_json(*v));
    }
    m
}

fn json_init(m: &Map<String, Json>) -> Result<Init, String> {
    let num = |k: &str| {
        m.get(k)
            .and_then(json_float)
            .ok_or_else(|| format!("initialiser needs a number '{k}'"))
    };
    match m.get("kind").and_then(Json::as_str) {
        Some("zeros") => Ok(Init::Zeros),
        Some("ones") => Ok(Init::Ones),
        Some("uniform") => Ok(Init::Uniform {
            low: num("low")?,
            high: num("high")?,
        }),
        Some("normal") => Ok(Init::Normal {
            mean: num("mean")?,
            std: num("std")?,
        }),
        Some(other) => Err(format!(
            "unknown initialiser kind '{other}' (expected zeros, ones, uniform or normal)"
        )),
        None => Err("an initialiser needs a text 'kind' (zeros, ones, uniform or normal)".into()),
    }
}

/// The JSON form of `graph`, pretty-printed (deterministic: same graph, same bytes).
pub fn to_json(graph: &Graph) -> String {
    let name = |id: ValueId| graph.value(id).name.clone();
    let values = graph
        .values
        .iter()
        .map(|v| {
            let mut j = ValueJson {
                name: v.name.clone(),
                ty: v.ty.clone(),
                kind: String::new(),
                init: None,
                op: None,
                operands: Vec::new(),
                attrs: Map::new(),
            };
            match &v.def {
                Def::Input => j.kind = "input".into(),
                Def::Param(init) | Def::State(init) => {
                    j.kind = if matches!(v.def, Def::Param(_)) {
                        "param"
                    } else {
                        "state"
                    }
                    .into();
                    j.init = Some(init_json(init));
                }
                Def::Node { op, operands } => {
                    j.kind = "node".into();
                    j.op = Some(op.name().into());
                    j.operands = operands.iter().map(|&o| name(o)).collect();
                    j.attrs = op
                        .attrs()
                        .iter()
                        .map(|(k, a)| (k.to_string(), attr_json(a)))
                        .collect();
                }
            }
            j
        })
        .collect();
    let g = GraphJson {
        graph: graph.name.clone(),
        values,
        outputs: graph.outputs.iter().map(|&o| name(o)).collect(),
        updates: graph
            .updates
            .iter()
            .map(|&(t, v)| UpdateJson {
                target: name(t),
                value: name(v),
            })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&g).expect("graph JSON has only string keys");
    s.push('\n');
    s
}

/// Why a graph's JSON form was rejected.
#[derive(Debug, Error)]
pub enum JsonError {
    /// Not JSON of the expected layout.
    #[error("{}:{}: {source}", .source.line(), .source.column())]
    Syntax {
        /// The parser's error (with its line and column).
        #[from]
        source: serde_json::Error,
    },
    /// An entry of `values` is malformed or ill-typed.
    #[error("value '%{value}': {message}")]
    Value {
        /// The entry's name.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// An output or update names no value.
    #[error("value '%{0}' is not defined")]
    Undefined(String),
    /// An output or update is rejected.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The graph read does not verify.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

/// Reads the JSON form back, type-checking every value and verifying the graph.
pub fn from_json(text: &str) -> Result<Graph, JsonError> {
    let g: GraphJson = serde_json::from_str(text)?;
    let mut b = Builder::new(&g.graph);
    let mut ids: HashMap<String, ValueId> = HashMap::new();
    let lookup = |ids: &HashMap<String, ValueId>, n: &str| {
        ids.get(n)
            .copied()
            .ok_or_else(|| JsonError::Undefined(n.to_string()))
    };
    for v in &g.values {
        let at = |e: &dyn std::fmt::Display| JsonError::Value {
            value: v.name.clone(),
            message: e.to_string(),
        };
        let id = match v.kind.as_str() {
            "input" => b.input(&v.name, v.ty.clone()),
            "param" | "state" => {
                let init = v
                    .init
                    .as_ref()
                    .ok_or_else(|| at(&format!("a {} needs 'init'", v.kind)))?;
                let init = json_init(init).map_err(|e| at(&e))?;
                if v.kind == "param" {
                    b.param(&v.name, v.ty.clone(), init)
                } else {
                    b.state(&v.name, v.ty.clone(), init)
                }
            }
            "node" => {
                let op_name = v.op.as_deref().ok_or_else(|| at(&"a node needs 'op'"))?;
                let attrs = v
                    .attrs
                    .iter()
                    .map(|(k, j)| json_attr(k, j).map(|a| (k.clone(), a)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| at(&e))?;
                let op = Op::from_parts(op_name, attrs).map_err(|e| at(&e))?;
                let operands = v
                    .operands
                    .iter()
                    .map(|n| lookup(&ids, n))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| at(&e))?;
                b.node(Some(&v.name), op, &operands, Some(v.ty.clone()))
            }
            other => {
                return Err(at(&format!(
                    "unknown kind '{other}' (expected input, param, state or node)"
                )))
            }
        }
        .map_err(|e| at(&e))?;
        ids.insert(v.name.clone(), id);
    }
    for o in &g.outputs {
        b.output(lookup(&ids, o)?)?;
    }
    for u in &g.updates {
        b.update(lookup(&ids, &u.target)?, lookup(&ids, &u.value)?)?;
    }
    let graph = b.finish();
    super::verify(&graph)?;
    Ok(graph)
}
