//! Graph → graph passes that lower the IR toward code generation.

pub mod decompose;

pub use decompose::{decompose, decompose_except};
