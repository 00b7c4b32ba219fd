//! The canonical text form of graphs (`*.sir` files).
//!
//! ```text
//! graph @tiny {
//!   input %x: f32[B, 4]
//!   param %w: f32[4, 2] = normal(0.0, 0.02)
//!   %y: f32[B, 2] = matmul %x, %w
//!   %z: f32[B, 2] = relu %y
//!   output %z
//! }
//! ```
//!
//! One item per line; `#` starts a comment. Every node prints its result type; when
//! parsing, the type may be left out for ops whose type follows from their operands.
//! [`print`] is canonical: the same graph always gives the same bytes, and
//! `print(parse(print(g))) == print(g)`.
//!
//! ```
//! use smelt_compiler::ir::text;
//! let src = "graph @g {\n  input %x: f32[2]\n  %y: f32[2] = exp %x\n  output %y\n}\n";
//! let parsed = text::parse(src).unwrap();
//! assert_eq!(text::print(&parsed.graph), src);
//! ```

mod lex;
mod parse;
mod print;

pub use parse::{edit_distance, parse, ParseError, Parsed, Pos};
pub use print::{print, print_init};
