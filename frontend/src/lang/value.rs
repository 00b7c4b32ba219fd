//! What expressions evaluate to while a program is lowered, and the scopes that hold them.
//!
//! Everything that is not a tensor is known when the program is lowered: configs, loop
//! indices, literals and dimension sizes. Such values fold at compile time and become
//! graph constants only where they meet a tensor.

use smelt_compiler::ir::{DType, Dim, ValueId};
use std::collections::HashMap;

/// A value of the language.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A compile-time integer (literal, config, loop index, static dimension).
    Int(i64),
    /// A compile-time float.
    Float(f64),
    /// A compile-time boolean.
    Bool(bool),
    /// A string (keyword-argument values such as `"tanh"`).
    Str(String),
    /// A dimension only known at run time (`B`); usable in shapes, not as a number.
    Dim(Dim),
    /// An element type (`f32`), as an argument of `cast`.
    DType(DType),
    /// A list (`[B, 128]`, `[x, y]`).
    List(Vec<Val>),
    /// A tensor in the graph being built.
    Tensor(ValueId),
}

impl Val {
    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Val::Int(_) => "an integer",
            Val::Float(_) => "a float",
            Val::Bool(_) => "a boolean",
            Val::Str(_) => "a string",
            Val::Dim(_) => "a run-time dimension",
            Val::DType(_) => "a dtype",
            Val::List(_) => "a list",
            Val::Tensor(_) => "a tensor",
        }
    }

    /// The number, for compile-time numbers.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Val::Int(n) => Some(n as f64),
            Val::Float(x) => Some(x),
            _ => None,
        }
    }
}

/// Nested scopes of names: the innermost is searched first.
#[derive(Debug, Default)]
pub struct Env {
    scopes: Vec<HashMap<String, Val>>,
}

impl Env {
    /// An environment with one (outermost) scope.
    pub fn new() -> Env {
        Env {
            scopes: vec![HashMap::new()],
        }
    }

    /// Opens an inner scope.
    pub fn push(&mut self) {
        self.scopes.push(HashMap::new());
    }

    /// Closes the innermost scope.
    pub fn pop(&mut self) {
        self.scopes.pop();
    }

    /// The value bound to `name`, innermost first.
    pub fn get(&self, name: &str) -> Option<&Val> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    /// Binds `name` in the innermost scope (shadowing outer bindings).
    pub fn define(&mut self, name: &str, value: Val) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name.to_string(), value);
        }
    }

    /// True if the innermost scope binds `name`.
    pub fn defines_here(&self, name: &str) -> bool {
        self.scopes.last().is_some_and(|s| s.contains_key(name))
    }

    /// Rebinds `name` where it is bound; false if it is not bound anywhere.
    pub fn assign(&mut self, name: &str, value: Val) -> bool {
        match self.scopes.iter_mut().rev().find(|s| s.contains_key(name)) {
            Some(scope) => {
                scope.insert(name.to_string(), value);
                true
            }
            None => false,
        }
    }

    /// Every bound name (for "did you mean" hints).
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.scopes.iter().flat_map(|s| s.keys())
    }
}
