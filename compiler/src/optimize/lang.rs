//! The e-graph language: one node kind per IR op, with the op's attributes (and, for
//! ops whose result type cannot be derived, the declared type) carried in the node.
//!
//! Two nodes are the same operation exactly when their canonical keys are equal. The
//! key is the op's text form (`permute{perm=[1, 0]}`, `reshape:f32[4, 8]`), interned as
//! an egg [`Symbol`], so hashing and comparing nodes stays cheap while the structured
//! [`Op`] travels alongside for the analysis and for converting back to the IR.

use crate::ir::{Op, TensorType};
use egg::{FromOp, Id, Language, Symbol};
use rustc_hash::FxHashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// What a node stands for: a graph leaf (input, parameter or state) or an op.
#[derive(Debug, PartialEq)]
pub enum Kind {
    /// A value fed from outside the graph, by name, with its type.
    Leaf {
        /// The value's name in the source graph.
        name: String,
        /// The value's type.
        ty: TensorType,
    },
    /// An op; `declared` holds the result type for ops that need it written out.
    Op {
        /// The operation with its attributes.
        op: Op,
        /// The result type, for ops where [`Op::needs_declared_type`] holds.
        declared: Option<TensorType>,
    },
}

/// An interned, canonical description of a node's operation (children excluded).
#[derive(Clone, Debug)]
pub struct OpKey {
    text: Symbol,
    kind: Arc<Kind>,
}

impl OpKey {
    /// The key of an op. `declared` is kept only for ops that need a declared type, so
    /// that equal operations always get equal keys.
    pub fn op(op: Op, declared: Option<TensorType>) -> OpKey {
        let declared = if op.needs_declared_type() {
            declared
        } else {
            None
        };
        let attrs: Vec<String> = op
            .attrs()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut text = op.name().to_string();
        if !attrs.is_empty() {
            text.push_str(&format!("{{{}}}", attrs.join(", ")));
        }
        if let Some(t) = &declared {
            text.push_str(&format!(":{t}"));
        }
        let text = Symbol::from(text);
        OpKey {
            text,
            kind: interned_kind(text, || Kind::Op { op, declared }),
        }
    }

    /// The key of a graph leaf named `name`.
    pub fn leaf(name: &str, ty: TensorType) -> OpKey {
        OpKey {
            text: Symbol::from(format!("%{name}")),
            kind: Arc::new(Kind::Leaf {
                name: name.to_string(),
                ty,
            }),
        }
    }

    /// A splat constant of type `ty` holding `value`.
    pub fn splat(value: f64, ty: TensorType) -> OpKey {
        OpKey::op(
            Op::Constant {
                values: vec![value],
            },
            Some(ty),
        )
    }

    /// The canonical text.
    pub fn text(&self) -> Symbol {
        self.text
    }

    /// What the key stands for.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The op, unless this is a leaf.
    pub fn as_op(&self) -> Option<&Op> {
        match &*self.kind {
            Kind::Op { op, .. } => Some(op),
            Kind::Leaf { .. } => None,
        }
    }

    /// The declared result type, for ops that need one.
    pub fn declared(&self) -> Option<&TensorType> {
        match &*self.kind {
            Kind::Op { declared, .. } => declared.as_ref(),
            Kind::Leaf { .. } => None,
        }
    }
}

/// The one shared [`Kind`] of every op key with text `text`. Rules read a node's op for
/// every node of every class in every iteration; with one allocation per node those
/// reads missed the cache once per node in deep models, while a model has only a few
/// thousand distinct operations. The table only grows, like egg's symbol table that
/// already keeps every key's text.
fn interned_kind(text: Symbol, kind: impl FnOnce() -> Kind) -> Arc<Kind> {
    static KINDS: Mutex<Option<FxHashMap<Symbol, Arc<Kind>>>> = Mutex::new(None);
    let mut kinds = KINDS.lock().unwrap_or_else(|e| e.into_inner());
    kinds
        .get_or_insert_with(FxHashMap::default)
        .entry(text)
        .or_insert_with(|| Arc::new(kind()))
        .clone()
}

impl PartialEq for OpKey {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for OpKey {}
impl Hash for OpKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}
impl PartialOrd for OpKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OpKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.as_str().cmp(other.text.as_str())
    }
}

/// One e-node: an operation and its operand e-classes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorNode {
    /// The operation.
    pub key: OpKey,
    /// The operand e-classes, in operand order.
    pub children: Vec<Id>,
}

impl TensorNode {
    /// A node of `key` over `children`.
    pub fn new(key: OpKey, children: Vec<Id>) -> TensorNode {
        TensorNode { key, children }
    }

    /// The op, unless this is a leaf.
    pub fn op(&self) -> Option<&Op> {
        self.key.as_op()
    }
}

impl Language for TensorNode {
    type Discriminant = Symbol;

    fn discriminant(&self) -> Symbol {
        self.key.text
    }

    fn matches(&self, other: &Self) -> bool {
        self.key == other.key && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

impl fmt::Display for TensorNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key.text.as_str())
    }
}

impl FromOp for TensorNode {
    type Error = String;

    /// Parses the ops of rule patterns: attribute-free ops with derived types only
    /// (`matmul`, `add`), since a pattern names no attributes or types.
    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, Self::Error> {
        let parsed = Op::from_parts(op, vec![])?;
        if parsed.needs_declared_type() {
            return Err(format!(
                "'{op}' needs a declared type, so patterns cannot name it"
            ));
        }
        Ok(TensorNode::new(OpKey::op(parsed, None), children))
    }
}
