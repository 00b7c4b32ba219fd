//! The memory plan (`schedule::memory`) on small graphs: slot sharing by liveness,
//! aliases, escaping values, and in-place steps with the cases that must not be in place.
//! Each case snapshots the schedule with its plan and asserts the fact it is about.

use smelt_compiler::ir::{text, Bindings, Graph, ValueId};
use smelt_compiler::schedule::memory::{Home, MemoryPlan};
use smelt_compiler::schedule::{schedule, Schedule};

fn plan(body: &str) -> (Schedule, MemoryPlan, String) {
    let src = format!("graph @t {{\n{body}\n}}\n");
    let g = text::parse(&src)
        .unwrap_or_else(|e| panic!("{e}\n{src}"))
        .graph;
    let s = schedule(&g);
    let bindings = Bindings::new();
    let p = MemoryPlan::new(&s, &bindings);
    let text = s.to_text(&bindings);
    (s, p, text)
}

fn id(g: &Graph, name: &str) -> ValueId {
    g.find(name).unwrap_or_else(|| panic!("no %{name}"))
}

/// The operand the step writing `name` overwrites, if any.
fn in_place_of(s: &Schedule, p: &MemoryPlan, name: &str) -> Option<String> {
    let v = id(&s.graph, name);
    let m = p
        .steps
        .iter()
        .find(|m| m.value == v)
        .expect("written by a step");
    m.in_place.map(|x| s.graph.value(x).name.clone())
}

#[test]
fn disjoint_lives_share_slots_and_dead_operands_are_overwritten() {
    let (s, p, text) = plan(
        "input %x: f32[4, 8]
input %w: f32[8, 8]
%a = matmul %x, %w
%b = exp %a
%c = matmul %b, %w
%d = tanh %c
%e = matmul %d, %w
%s = reduce_sum %e {axes = [0, 1]}
output %s",
    );
    insta::assert_snapshot!(text);
    assert_eq!(in_place_of(&s, &p, "b").as_deref(), Some("a"));
    assert_eq!(in_place_of(&s, &p, "d").as_deref(), Some("c"));
    // a/b and c/d alternate with e: two slots for five buffers.
    assert_eq!(p.slots.len(), 2, "{text}");
    assert_eq!(p.peak_bytes(), 2 * 4 * 8 * 4);
    assert_eq!(p.escaping, vec![id(&s.graph, "s")]);
}

#[test]
fn views_extend_their_buffers_life_and_take_no_slot() {
    let (s, p, text) = plan(
        "input %x: f32[4, 8]
input %w: f32[8, 8]
%a = matmul %x, %w
%r: f32[32] = reshape %a
%b = matmul %x, %w
%m = reduce_max %b {axes = [0, 1]}
%t = reduce_sum %r {axes = [0]}
%y = add %t, %m
output %y",
    );
    insta::assert_snapshot!(text);
    let g = &s.graph;
    let a = id(g, "a");
    let r = p.steps.iter().find(|m| m.value == id(g, "r")).unwrap();
    assert_eq!(r.output, Home::Alias(a));
    // %a is read through %r after %b is written: they must not share a slot.
    assert_ne!(
        p.slot_of[a.index()],
        p.slot_of[id(g, "b").index()],
        "{text}"
    );
}

#[test]
fn escaping_values_and_the_buffers_they_view_have_no_slot() {
    let (s, p, text) = plan(
        "input %x: f32[4, 8]
input %w: f32[8, 8]
%a = matmul %x, %w
%r: f32[32] = reshape %a
%b = exp %a
%s = reduce_sum %b {axes = [0, 1]}
output %r, %s",
    );
    insta::assert_snapshot!(text);
    let g = &s.graph;
    assert_eq!(p.escaping, vec![id(g, "a"), id(g, "s")]);
    // %a escapes (through %r), so %b may not overwrite it.
    assert_eq!(in_place_of(&s, &p, "b"), None);
}

#[test]
fn broadcast_transposed_and_later_read_operands_are_not_overwritten() {
    let (s, p, text) = plan(
        "input %x: f32[8, 8]
input %w: f32[8, 8]
%a = matmul %x, %w
%m = reduce_sum %a {axes = [1]}
%mb: f32[8, 8] = broadcast %m {dims = [0]}
%y = mul %mb, %x
%t = permute %a {perm = [1, 0]}
%z = exp %t
%u = add %y, %z
%c = matmul %u, %w
%d = sub %c, %a
%s = reduce_sum %d {axes = [0, 1]}
output %s",
    );
    insta::assert_snapshot!(text);
    // %u reads %m broadcast, %x (an argument) and %a transposed (and read again by
    // %d): it overwrites none of them. %d may overwrite %c (read at the index written,
    // last read there).
    assert_eq!(in_place_of(&s, &p, "u"), None, "{text}");
    assert_eq!(in_place_of(&s, &p, "d").as_deref(), Some("c"), "{text}");
}

#[test]
fn additive_epilogues_overwrite_a_dead_addend_but_never_a_product_operand() {
    // %c's epilogue adds %a, last read there and not an operand of the product.
    let (s, p, text) = plan(
        "input %x: f32[8, 8]
input %w: f32[8, 8]
%a = matmul %x, %w
%b = exp %a
%p = matmul %b, %w
%c = add %p, %a
%s = reduce_sum %c {axes = [0, 1]}
output %s",
    );
    insta::assert_snapshot!("epilogue_in_place", text);
    assert_eq!(in_place_of(&s, &p, "c").as_deref(), Some("a"), "{text}");
    // Here %a is also the product's left operand: the epilogue must not overwrite it.
    let (s, p, text) = plan(
        "input %x: f32[8, 8]
input %w: f32[8, 8]
%a = matmul %x, %w
%p = matmul %a, %w
%c = add %p, %a
%s = reduce_sum %c {axes = [0, 1]}
output %s",
    );
    insta::assert_snapshot!("epilogue_reads_its_product_operand", text);
    assert_eq!(in_place_of(&s, &p, "c"), None, "{text}");
}
