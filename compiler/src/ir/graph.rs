//! Graphs: a list of values in definition order (SSA), and the outputs.
//!
//! Invariants (checked by [`crate::ir::verify`]): names are unique and valid; every
//! operand is defined before its use, so the value list is a topological order; every
//! stored type is what the op's shape rule gives; parameters have static float types.

use super::ops::Op;
use super::{InitError, TensorType};
use std::fmt;

/// Identifies a value of one graph: its index in [`Graph::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The index into [`Graph::values`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How a parameter gets its first value. The runtime draws random initialisers from a
/// seed derived from the run's seed and the parameter's name, so they are reproducible.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Uniform in `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// Normal with the given mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
}

impl Init {
    /// Checks the initialiser's numbers: `uniform` needs finite `low < high`, `normal` a
    /// finite mean and a finite std above 0 (as the `.smelt` language requires).
    pub fn check(&self) -> Result<(), InitError> {
        match *self {
            Init::Zeros | Init::Ones => Ok(()),
            Init::Uniform { low, high } if low.is_finite() && high.is_finite() && low < high => {
                Ok(())
            }
            Init::Uniform { low, high } => Err(InitError::Uniform { low, high }),
            Init::Normal { mean, std } if mean.is_finite() && std.is_finite() && std > 0.0 => {
                Ok(())
            }
            Init::Normal { mean, std } => Err(InitError::Normal { mean, std }),
        }
    }
}

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Def {
    /// Fed by the caller on every run (data, labels).
    Input,
    /// A trainable parameter with its initialiser; the runtime owns its storage.
    Param(Init),
    /// Persistent state that is not trained (optimiser moments): the runtime keeps it
    /// between runs, and the graph's `updates` assign its next value.
    State(Init),
    /// Computed by an op from earlier values.
    Node {
        /// The operation.
        op: Op,
        /// Its operands, all defined earlier.
        operands: Vec<ValueId>,
    },
}

/// A named, typed value and its definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// Unique name (`x`, `layers.0.attn.wq`, `12`).
    pub name: String,
    /// The value's type.
    pub ty: TensorType,
    /// Where it comes from.
    pub def: Def,
}

/// A dataflow graph: values in definition order and the outputs it returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// The graph's name (the model's).
    pub name: String,
    /// All values; operands always precede their users.
    pub values: Vec<Value>,
    /// The returned values, in order.
    pub outputs: Vec<ValueId>,
    /// In-place updates `(target, value)`: after a run, parameter or state `target`
    /// holds `value` (a training step's new weights and optimiser moments).
    pub updates: Vec<(ValueId, ValueId)>,
}

impl Graph {
    /// The value `id`.
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.index()]
    }

    /// The type of value `id`.
    pub fn ty(&self, id: ValueId) -> &TensorType {
        &self.value(id).ty
    }

    /// The op that computes value `id` (`None` for inputs, parameters and state).
    pub fn op(&self, id: ValueId) -> Option<&Op> {
        match &self.value(id).def {
            Def::Node { op, .. } => Some(op),
            _ => None,
        }
    }

    /// Every value id in definition order.
    pub fn ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        (0..self.values.len() as u32).map(ValueId)
    }

    /// The value named `name`.
    pub fn find(&self, name: &str) -> Option<ValueId> {
        self.ids().find(|&id| self.value(id).name == name)
    }

    /// The inputs, in order.
    pub fn inputs(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.ids()
            .filter(|&id| matches!(self.value(id).def, Def::Input))
    }

    /// The parameters, in order.
    pub fn params(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.ids()
            .filter(|&id| matches!(self.value(id).def, Def::Param(_)))
    }

    /// The persistent state values, in order.
    pub fn states(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.ids()
            .filter(|&id| matches!(self.value(id).def, Def::State(_)))
    }

    /// The graph with only what its outputs and updates need: unused nodes, inputs,
    /// parameters and state are dropped (an inference graph made from a training
    /// model loses its labels and loss). Returns the new graph and, for each old
    /// value, its id in the new one.
    pub fn pruned(&self) -> (Graph, Vec<Option<ValueId>>) {
        self.keeping(|_| false)
    }

    /// The graph without the ops that no output or update needs; its interface (inputs,
    /// parameters, state) is unchanged.
    pub fn without_unused_ops(&self) -> Graph {
        self.keeping(|v| !matches!(v.def, Def::Node { .. })).0
    }

    /// The graph with what its outputs and updates need and the values `always` keeps.
    fn keeping(&self, always: impl Fn(&Value) -> bool) -> (Graph, Vec<Option<ValueId>>) {
        let mut needed: Vec<bool> = self.values.iter().map(always).collect();
        for &id in self
            .outputs
            .iter()
            .chain(self.updates.iter().flat_map(|(t, v)| [t, v]))
        {
            needed[id.index()] = true;
        }
        for i in (0..self.values.len()).rev() {
            if let (true, Def::Node { operands, .. }) = (needed[i], &self.values[i].def) {
                for o in operands {
                    needed[o.index()] = true;
                }
            }
        }
        let mut map = vec![None; self.values.len()];
        let mut values = Vec::new();
        for (i, v) in self.values.iter().enumerate() {
            if !needed[i] {
                continue;
            }
            let mut v = v.clone();
            if let Def::Node { operands, .. } = &mut v.def {
                for o in operands {
                    *o = map[o.index()].expect("operands precede their users");
                }
            }
            map[i] = Some(ValueId(values.len() as u32));
            values.push(v);
        }
        let at = |id: &ValueId| map[id.index()].expect("kept above");
        let graph = Graph {
            name: self.name.clone(),
            values,
            outputs: self.outputs.iter().map(at).collect(),
            updates: self.updates.iter().map(|(t, v)| (at(t), at(v))).collect(),
        };
        (graph, map)
    }

    /// Number of op nodes.
    pub fn node_count(&self) -> usize {
        self.values
            .iter()
            .filter(|v| matches!(v.def, Def::Node { .. }))
            .count()
    }
}

impl Def {
    /// The initialiser of a parameter or state value.
    pub fn init(&self) -> Option<&Init> {
        match self {
            Def::Param(init) | Def::State(init) => Some(init),
            _ => None,
        }
    }
}

/// True if `name` can name a value: letters, digits, `_` and `.` (`layers.0.wq`, `12`).
pub fn is_value_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}
