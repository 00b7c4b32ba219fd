use crate::ir::{format_float, Def, Graph, Init};
use std::fmt::Write;

/// Prints `graph` in the canonical text form.
pub fn print(graph: &Graph) -> String {
    let mut out = String::new();
    let name = |id: crate::ir::ValueId| format!("%{}", graph.value(id).name);
    writeln!(out, "graph @{} {{", graph.name).unwrap();
    for v in &graph.values {
        match &v.def {
            Def::Input => writeln!(out, "  input %{}: {}", v.name, v.ty),
            Def::State(init) => {
                writeln!(out, "  state %{}: {} = {}", v.name, v.ty, print_init(init))
            }
            Def::Param(init) => {
                writeln!(out, "  param %{}: {} = {}", v.name, v.ty, print_init(init))
            }
            Def::Node { op, operands } => {
                write!(out, "  %{}: {} = {}", v.name, v.ty, op.name()).unwrap();
                let operands: Vec<String> = operands.iter().map(|&o| name(o)).collect();
                if !operands.is_empty() {
                    write!(out, " {}", operands.join(", ")).unwrap();
                }
                let attrs = op.attrs();
                if !attrs.is_empty() {
                    let attrs: Vec<String> =
                        attrs.iter().map(|(k, a)| format!("{k} = {a}")).collect();
                    write!(out, " {{{}}}", attrs.join(", ")).unwrap();
                }
                writeln!(out)
            }
        }
        .unwrap();
    }
    let outputs: Vec<String> = graph.outputs.iter().map(|&o| name(o)).collect();
    writeln!(out, "  output {}", outputs.join(", ")).unwrap();
    for &(target, value) in &graph.updates {
        writeln!(out, "  update {} = {}", name(target), name(value)).unwrap();
    }
    out.push_str("}\n");
    out
}

/// The text of a parameter initialiser: `zeros`, `ones`, `uniform(a, b)`, `normal(m, s)`.
pub fn print_init(init: &Init) -> String {
    match init {
        Init::Zeros => "zeros".into(),
        Init::Ones => "ones".into(),
        Init::Uniform { low, high } => {
            format!("uniform({}, {})", format_float(*low), format_float(*high))
        }
        Init::Normal { mean, std } => {
            format!("normal({}, {})", format_float(*mean), format_float(*std))
        }
    }
}
