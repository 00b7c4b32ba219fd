//! Pictures of smelt programs, so that people can look rather than read.
//!
//! - [`view`]: the drawable view of a [`Graph`](smelt_compiler::ir::Graph), whole or the
//!   neighbourhood of one value ([`Focus`]).
//! - [`dot`]: Graphviz DOT text of that view.
//! - [`svg`]: an SVG drawing of that view, laid out here by a layered (Sugiyama-style)
//!   layout in [`layout`], so no system tool is needed.
//! - [`trace`]: Chrome trace JSON (Perfetto, `chrome://tracing`) of timed events on tracks.
//! - [`plot`]: training curves (loss and learning rate against step) from JSONL logs.
#![warn(missing_docs)]

pub mod dot;
pub mod layout;
pub mod plot;
pub mod svg;
pub mod trace;
pub mod view;

pub use view::{Focus, NodeKind, View, ViewError};
