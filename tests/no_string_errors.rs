//! Regression guard: no `Result<_, String>` crosses a crate boundary.
//!
//! Scans the library crates' sources for public functions that return
//! `Result<_, String>` (directly or through a type alias), public aliases equal
//! to `Result<_, String>`, and public error types that only wrap a `String`.
//! `pub(crate)`/`pub(super)`/`pub(in ..)` items are internal and ignored.
//! A plain text scan (no parser): signatures are read from `pub fn` to the
//! first `{` or `;` outside brackets.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

const LIBRARY_CRATES: &[&str] = &["compiler", "frontend", "runtime", "viz", "sim", "serve"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The source with `//` comments blanked out (line numbers kept), so that doc
/// comments mentioning `Result<_, String>` are not flagged.
fn strip_line_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let mut in_str = false;
        let mut cut = line.len();
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_str => i += 1,
                b'"' => in_str = !in_str,
                b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => {
                    cut = i;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

fn squash_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits `A<B, C<D, E>>`'s top-level generic arguments: `["B", "C<D, E>"]`.
fn generic_args(ty: &str) -> Option<(String, Vec<String>)> {
    let open = ty.find('<')?;
    let close = ty.rfind('>')?;
    let head = ty[..open].trim().to_string();
    let mut args = Vec::new();
    let mut depth = 0i32;
    let mut start = open + 1;
    for (i, c) in ty.char_indices().take(close).skip(open + 1) {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                args.push(ty[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = ty[start..close].trim();
    if !last.is_empty() {
        args.push(last.to_string());
    }
    Some((head, args))
}

fn is_string(ty: &str) -> bool {
    matches!(
        ty,
        "String" | "std::string::String" | "alloc::string::String"
    )
}

/// Whether `ty` is `Result<_, String>` or one of the `Result<_, String>` aliases.
fn is_string_result(ty: &str, string_aliases: &BTreeSet<String>) -> bool {
    let ty = ty.trim();
    let (head, args) = match generic_args(ty) {
        Some(parts) => parts,
        None => return string_aliases.contains(ty),
    };
    let head = head.rsplit("::").next().unwrap_or(&head);
    if head == "Result" && args.len() == 2 && is_string(&args[1]) {
        return true;
    }
    string_aliases.contains(head)
}

/// The return type of a signature (text after the top-level `->`, without a
/// `where` clause), if any.
fn return_type(signature: &str) -> Option<&str> {
    let mut depth = 0i32;
    let bytes = signature.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'(' | b'<' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b'>' if i > 0 && bytes[i - 1] == b'-' && depth == 0 => {
                let rest = &signature[i + 1..];
                let end = rest.find(" where ").unwrap_or(rest.len());
                return Some(rest[..end].trim());
            }
            b'>' if i > 0 && bytes[i - 1] == b'-' => {}
            b'>' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Where a signature ends: the first `{` or `;` outside brackets (a `;` may
/// appear in an array type such as `[usize; 2]`).
fn signature_end(text: &str) -> usize {
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            '{' | ';' if depth == 0 => return i,
            _ => {}
        }
    }
    text.len()
}

/// Whether `text` (just after the word `pub`) continues as a plain `pub`
/// item, not `pub(crate)`/`pub(super)`/`pub(in ..)`.
fn plain_pub(after_pub: &str) -> bool {
    !after_pub.trim_start().starts_with('(')
}

/// Byte offsets of the word `pub` (not part of a longer identifier).
fn pub_positions(src: &str) -> Vec<usize> {
    let bytes = src.as_bytes();
    src.match_indices("pub")
        .map(|(i, _)| i)
        .filter(|&i| {
            let before_ok =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            let after = bytes.get(i + 3).copied().unwrap_or(b' ');
            before_ok && !(after.is_ascii_alphanumeric() || after == b'_')
        })
        .collect()
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset].matches('\n').count() + 1
}

/// `type Name = Result<_, String>` / `type Name<T> = Result<T, String>`
/// declarations in `src`: (offset, name, is plain pub).
fn string_alias_decls(src: &str) -> Vec<(usize, String, bool)> {
    let mut found = Vec::new();
    for (i, _) in src.match_indices("type ") {
        let before = src[..i].trim_end();
        let is_pub = before.ends_with("pub");
        let rest = &src[i + 5..];
        let Some(eq) = rest.find('=') else { continue };
        let Some(semi) = rest.find(';') else { continue };
        if semi < eq {
            continue;
        }
        let name_part = rest[..eq].trim();
        let name: String = name_part
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after_name = name_part[name.len()..].trim_start();
        if name.is_empty() || !(after_name.is_empty() || after_name.starts_with('<')) {
            continue;
        }
        let value = squash_spaces(&rest[eq + 1..semi]);
        if is_string_result(&value, &BTreeSet::new()) {
            found.push((i, name, is_pub));
        }
    }
    found
}

/// `(name, return type)` of the signature after `fn ` if it returns a string error.
fn string_result_fn(sig: &str, string_aliases: &BTreeSet<String>) -> Option<(String, String)> {
    let sig = squash_spaces(&sig[..signature_end(sig)]);
    let ret = return_type(&sig)?;
    if !is_string_result(ret, string_aliases) {
        return None;
    }
    let name = sig
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    Some((name, ret.to_string()))
}

/// The methods of the trait declared at `decl` (the text after `trait `): each `fn `
/// in its body, as (offset into `decl` of the `fn`, text after `fn `).
fn trait_methods(decl: &str) -> Vec<(usize, &str)> {
    let Some(open) = decl.find('{') else {
        return Vec::new();
    };
    let mut depth = 0i32;
    let mut end = decl.len();
    for (i, c) in decl[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = open + i;
                    break;
                }
            }
            _ => {}
        }
    }
    let bytes = decl.as_bytes();
    decl[open..end]
        .match_indices("fn ")
        .map(|(i, _)| open + i)
        .filter(|&i| i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        .map(|i| (i, &decl[i + 3..]))
        .collect()
}

fn offenders_in(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut string_aliases = BTreeSet::new();
    for (_, src) in files {
        for (_, name, _) in string_alias_decls(src) {
            string_aliases.insert(name);
        }
    }

    let mut offenders = Vec::new();
    for (path, src) in files {
        let shown = path.display();
        for (offset, name, is_pub) in string_alias_decls(src) {
            if is_pub {
                offenders.push(format!(
                    "{shown}:{}: pub type {name} = Result<_, String>",
                    line_of(src, offset)
                ));
            }
        }
        for at in pub_positions(src) {
            let after = &src[at + 3..];
            if !plain_pub(after) {
                continue;
            }
            let item = after.trim_start();
            // Qualifiers that may come between `pub` and `fn`.
            let mut words = item;
            for qualifier in ["const ", "async ", "unsafe ", "extern \"C\" "] {
                words = words.strip_prefix(qualifier).unwrap_or(words).trim_start();
            }
            if let Some(sig) = words.strip_prefix("fn ") {
                if let Some((name, ret)) = string_result_fn(sig, &string_aliases) {
                    offenders.push(format!(
                        "{shown}:{}: pub fn {name} -> {ret}",
                        line_of(src, at)
                    ));
                }
            } else if let Some(decl) = item.strip_prefix("trait ") {
                // A public trait's methods are public wherever the trait is.
                let trait_name: String = decl
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                for (offset, sig) in trait_methods(decl) {
                    if let Some((name, ret)) = string_result_fn(sig, &string_aliases) {
                        let line =
                            line_of(src, decl.as_ptr() as usize - src.as_ptr() as usize + offset);
                        offenders.push(format!(
                            "{shown}:{line}: pub trait {trait_name} fn {name} -> {ret}"
                        ));
                    }
                }
            } else if let Some(decl) = item.strip_prefix("struct ") {
                // `pub struct SomeError(pub String);`: an error that is only a string.
                let decl = squash_spaces(&decl[..decl.find([';', '{']).unwrap_or(decl.len())]);
                if let Some((name, fields)) = decl.split_once('(') {
                    let fields = fields.trim_end_matches(')').trim();
                    let fields = fields.strip_prefix("pub ").unwrap_or(fields);
                    if name.trim().ends_with("Error") && is_string(fields.trim()) {
                        offenders.push(format!(
                            "{shown}:{}: pub struct {}(String)",
                            line_of(src, at),
                            name.trim()
                        ));
                    }
                }
            }
        }
    }
    offenders
}

#[test]
fn no_string_errors_cross_crate_boundaries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for krate in LIBRARY_CRATES {
        let mut paths = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut paths);
        for path in paths {
            let src = fs::read_to_string(&path).unwrap();
            let shown = path.strip_prefix(root).unwrap().to_path_buf();
            files.push((shown, strip_line_comments(&src)));
        }
    }
    assert!(files.len() > 50, "found only {} source files", files.len());

    let offenders = offenders_in(&files);
    assert!(
        offenders.is_empty(),
        "{} public items use a String as their error; give them a typed error \
         (thiserror enum) or make them pub(crate):\n  {}",
        offenders.len(),
        offenders.join("\n  ")
    );
}

/// The scanner itself: what it must flag and what it must leave alone.
#[test]
fn scanner_flags_string_errors_only() {
    let src = r#"
pub fn a(x: u32) -> Result<u32, String> { todo!() }
pub fn b(
    x: u32,
) -> Result<
    Vec<u32>,
    String,
> {
    todo!()
}
pub(crate) fn c() -> Result<(), String> { todo!() }
pub(super) fn d() -> Result<(), String> { todo!() }
fn e() -> Result<(), String> { todo!() }
pub fn f() -> Result<String, MyError> { todo!() }
pub fn g<F: Fn() -> Result<(), String>>(f: F) -> u32 { 0 }
pub type Bad<T> = Result<T, String>;
type Internal = std::result::Result<u32, String>;
pub fn h() -> Internal { todo!() }
pub fn i() -> Bad<u8> { todo!() }
pub const fn j() -> Result<(), std::string::String> { todo!() }
// pub fn k() -> Result<(), String> (a comment)
pub struct WrapError(pub String);
pub struct Fine(pub String);
pub fn l() -> Result<(), String> where Self: Sized;
pub fn m(&self, [k, n]: [usize; 2]) -> Result<(), String> { todo!() }
pub trait Shipper {
    fn send(&self) -> Result<u8, String>;
    fn fine(&self) -> Result<u8, MyError> { todo!() }
}
pub(crate) trait Inner { fn x(&self) -> Result<u8, String>; }
"#;
    let files = vec![(PathBuf::from("x.rs"), strip_line_comments(src))];
    let found: Vec<String> = offenders_in(&files)
        .into_iter()
        .map(|o| o.split(": ").nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        found,
        [
            "pub type Bad = Result<_, String>",
            "pub fn a -> Result<u32, String>",
            "pub fn b -> Result< Vec<u32>, String, >",
            "pub fn h -> Internal",
            "pub fn i -> Bad<u8>",
            "pub fn j -> Result<(), std::string::String>",
            "pub struct WrapError(String)",
            "pub fn l -> Result<(), String>",
            "pub fn m -> Result<(), String>",
            "pub trait Shipper fn send -> Result<u8, String>",
        ]
    );
}
