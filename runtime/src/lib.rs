//! smelt's runtime: tensors, tensor files, parameter initialisation and the reference
//! interpreter ([`interp`]), which defines what every op computes.
#![warn(missing_docs)]

pub mod comm;
pub mod compiled;
pub mod cpu;
pub mod cuda;
pub mod decode;
pub mod engine;
pub mod gpusim;
pub mod gradcheck;
pub mod interp;
pub mod io;
pub mod labels;
pub mod memory;
pub mod params;
pub mod rng;
pub mod tensor;
pub mod train;

pub use interp::{run, Precision, RunError};
pub use tensor::{Data, Tensor};
