//! smelt's compiler: the graph IR and the passes over it.
//!
//! The IR lives in [`ir`]: element types, shapes with symbolic dimensions, the op set,
//! graphs with a builder, the verifier, and two serial forms (the canonical text form
//! of `*.sir` files and a JSON form). Later stages (autodiff, the e-graph optimiser,
//! scheduling and code generation) take a verified [`ir::Graph`] and return their own
//! output type; none of them reaches back into another's internals.
#![warn(missing_docs)]

pub mod autodiff;
pub mod codegen;
pub mod gpu;
pub mod input;
pub mod ir;
pub mod kernel;
pub mod optimize;
pub mod passes;
pub mod pipeline;
pub mod pipeline_parallel;
pub mod schedule;
