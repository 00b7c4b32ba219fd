//! String tensors. The IR has no strings: a string tensor is imported as `i64` keys,
//! each the 64-bit FNV-1a hash of the string's UTF-8 bytes ([`key`]), wherever strings
//! come from (graph inputs, initializers, constants, `.pb` tensor files).
//!
//! Strings exist only as hashed keys, so only equality is defined on them (`Equal`),
//! and ops that merely move elements pass keys through. Any other op on a string
//! tensor is an import error naming the op: its result on hashes would be meaningless.
//! Two distinct strings hashing alike would compare equal; at 64 bits that is far less
//! likely than any practical vocabulary makes relevant.

use super::import::{Fail, NodeCtx, OpResult};
use super::tensor::code;
use std::collections::HashMap;

/// The key of a string: FNV-1a (64-bit) over its UTF-8 bytes, as an `i64`.
pub fn key(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Ops that only move elements: their string operand is the data (input 0, or every
/// input of `Concat`) and their results are strings again.
const MOVEMENT: &[&str] = &[
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Expand",
    "Slice",
    "Split",
    "Gather",
    "Concat",
];

/// Checks that `node` may read the string tensors among its inputs (`elem_types` holds
/// the known ONNX element types by name) and says whether its results are strings.
pub fn check_node(node: &NodeCtx, elem_types: &HashMap<String, i32>) -> OpResult<bool> {
    let op = node.op();
    let is_string = |name: &str| elem_types.get(name) == Some(&code::STRING);
    let string_inputs: Vec<usize> = (0..node.input_count())
        .filter(|&i| node.input_name(i).is_some_and(is_string))
        .collect();
    if matches!(op, "Cast" | "CastLike") && node.int("to")? == Some(i64::from(code::STRING)) {
        return Err(unsupported_on_strings("casting to strings"));
    }
    // Constants (`Constant`, `ConstantOfShape`) made of strings give strings.
    let string_value = node.proto.attribute.iter().any(|a| {
        a.name.as_deref() == Some("value")
            && a.t.as_ref().and_then(|t| t.data_type) == Some(code::STRING)
    });
    if string_inputs.is_empty() {
        return Ok(string_value);
    }
    let data_only = string_inputs == [0];
    match op {
        "Equal" => Ok(false),
        "Concat" => Ok(true),
        _ if MOVEMENT.contains(&op) && data_only => Ok(true),
        _ => Err(unsupported_on_strings(&format!("op '{op}'"))),
    }
}

fn unsupported_on_strings(what: &str) -> Fail {
    Fail::Unsupported(format!(
        "{what} is not defined on string tensors (strings are imported as hashed keys, so only equality and movement are)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fnv1a() {
        // The FNV-1a reference values for "" and "a".
        assert_eq!(key(b"") as u64, 0xcbf2_9ce4_8422_2325);
        assert_eq!(key(b"a") as u64, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(key("string".as_bytes()), key("strings".as_bytes()));
    }
}
