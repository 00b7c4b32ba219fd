//! Code generation from the kernel IR.

pub mod cranelift;
