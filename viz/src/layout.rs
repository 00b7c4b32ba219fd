//! A layered (Sugiyama-style) layout of a directed acyclic graph, top to bottom.
//!
//! 1. **Layers**: each node sits one layer below its lowest operand (longest path);
//!    nodes without operands (inputs, parameters, constants) then move down to just
//!    above their first user, so a parameter is drawn next to the op that reads it
//!    rather than at the top of a long training step.
//! 2. **Dummies**: an edge that spans several layers is split by invisible dummy nodes,
//!    one per layer crossed, so it can bend around the nodes in between.
//! 3. **Order**: barycentre sweeps down and up reorder each layer to reduce crossings;
//!    the order with the fewest crossings seen is kept.
//! 4. **Coordinates**: sweeps move each node towards the mean position of its
//!    neighbours; within a layer the nodes keep their order and never overlap (an
//!    isotonic regression, solved exactly by pooling adjacent violators).
//!
//! Every step is linear or `n log n` in the nodes plus dummies, so the training step of
//! the example GPT (about 1,700 values) lays out in well under a second.

/// Width and height of a node box.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Size {
    /// Horizontal extent.
    pub width: f64,
    /// Vertical extent.
    pub height: f64,
}

/// A point of the drawing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Rightwards.
    pub x: f64,
    /// Downwards.
    pub y: f64,
}

/// Where everything goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// The centre of each node.
    pub centres: Vec<Point>,
    /// For each input edge, the points it passes through: the source's bottom centre,
    /// the top and bottom of each layer it crosses, and the target's top centre.
    pub routes: Vec<Vec<Point>>,
    /// Extent of the drawing, margins included.
    pub width: f64,
    /// Extent of the drawing, margins included.
    pub height: f64,
}

/// Spacing of the drawing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spacing {
    /// Space between neighbouring boxes of one layer.
    pub node_gap: f64,
    /// Space between an edge passing through a layer and its neighbours.
    pub edge_gap: f64,
    /// Vertical space between layers.
    pub layer_gap: f64,
    /// Space around the whole drawing.
    pub margin: f64,
}

impl Default for Spacing {
    fn default() -> Spacing {
        Spacing {
            node_gap: 28.0,
            edge_gap: 10.0,
            layer_gap: 44.0,
            margin: 20.0,
        }
    }
}

/// Barycentre sweeps (down and up count as two).
const ORDER_SWEEPS: usize = 12;
/// Coordinate sweeps (down and up count as two).
const POSITION_SWEEPS: usize = 16;

/// One node of the layered graph: a real node or a dummy on a long edge.
struct Slot {
    layer: usize,
    width: f64,
    dummy: bool,
    /// Neighbours one layer up, each with the port where the edge enters this slot.
    up: Vec<(usize, Port)>,
    /// Neighbours one layer down, each with the port where the edge enters that slot.
    down: Vec<(usize, Port)>,
}

/// Where an edge enters the top of its lower end, as a fraction of that box's width
/// from its centre (`-0.35..0.35`); always 0 for dummies.
type Port = f64;

/// The share of a box's top along which entering edges are spread.
const PORT_SPREAD: f64 = 0.7;

/// Lays out nodes of the given sizes joined by `edges` `(from, to)`. Edges must point
/// from a lower index to a higher one (definition order); others are not routed. The
/// edges into one node enter its top left to right in the order they are given (for a
/// graph, operand order).
pub fn layered(sizes: &[Size], edges: &[(usize, usize)], spacing: Spacing) -> Layout {
    let n = sizes.len();
    let forward: Vec<(usize, usize)> = edges
        .iter()
        .copied()
        .filter(|&(a, b)| a < b && b < n)
        .collect();
    let layer_of = assign_layers(n, &forward);
    let mut incoming = vec![0usize; n];
    for &(_, b) in &forward {
        incoming[b] += 1;
    }
    let mut entered = vec![0usize; n];
    let ports: Vec<Port> = forward
        .iter()
        .map(|&(_, b)| {
            entered[b] += 1;
            PORT_SPREAD * (entered[b] as f64 / (incoming[b] as f64 + 1.0) - 0.5)
        })
        .collect();

    // Real nodes keep their indices; dummies follow.
    let mut slots: Vec<Slot> = (0..n)
        .map(|i| Slot {
            layer: layer_of[i],
            width: sizes[i].width,
            dummy: false,
            up: Vec::new(),
            down: Vec::new(),
        })
        .collect();
    let mut chains: Vec<Vec<usize>> = Vec::with_capacity(edges.len());
    for (&(a, b), &port) in forward.iter().zip(&ports) {
        let mut chain = vec![a];
        for layer in layer_of[a] + 1..layer_of[b] {
            slots.push(Slot {
                layer,
                width: 0.0,
                dummy: true,
                up: Vec::new(),
                down: Vec::new(),
            });
            chain.push(slots.len() - 1);
        }
        chain.push(b);
        for pair in chain.windows(2) {
            let port = if pair[1] == b { port } else { 0.0 };
            slots[pair[0]].down.push((pair[1], port));
            slots[pair[1]].up.push((pair[0], port));
        }
        chains.push(chain);
    }

    let layer_count = layer_of.iter().max().map_or(0, |m| m + 1);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); layer_count];
    for (i, slot) in slots.iter().enumerate() {
        layers[slot.layer].push(i);
    }
    order_layers(&slots, &mut layers);
    let xs = position_layers(&slots, &layers, spacing);

    // Layer heights and tops.
    let mut layer_height = vec![0.0f64; layer_count];
    for i in 0..n {
        layer_height[layer_of[i]] = layer_height[layer_of[i]].max(sizes[i].height);
    }
    let mut layer_top = Vec::with_capacity(layer_count);
    let mut y = spacing.margin;
    for h in &layer_height {
        layer_top.push(y);
        y += h + spacing.layer_gap;
    }
    let height = if layer_count == 0 {
        2.0 * spacing.margin
    } else {
        y - spacing.layer_gap + spacing.margin
    };

    let left = (0..slots.len())
        .map(|i| xs[i] - slots[i].width / 2.0)
        .fold(f64::INFINITY, f64::min);
    let right = (0..slots.len())
        .map(|i| xs[i] + slots[i].width / 2.0)
        .fold(f64::NEG_INFINITY, f64::max);
    let shift = if left.is_finite() {
        spacing.margin - left
    } else {
        0.0
    };
    let width = if right.is_finite() {
        right - left + 2.0 * spacing.margin
    } else {
        2.0 * spacing.margin
    };
    let centre = |i: usize| Point {
        x: xs[i] + shift,
        y: layer_top[layer_of[i]] + layer_height[layer_of[i]] / 2.0,
    };
    let centres: Vec<Point> = (0..n).map(centre).collect();

    let mut chain_of_edge = chains.into_iter().zip(ports);
    let routes = edges
        .iter()
        .map(|&(a, b)| {
            if !(a < b && b < n) {
                return Vec::new();
            }
            let (chain, port) = chain_of_edge.next().unwrap_or_default();
            let mut points = vec![Point {
                x: centres[a].x,
                y: centres[a].y + sizes[a].height / 2.0,
            }];
            for &d in &chain[1..chain.len().saturating_sub(1)] {
                let layer = slots[d].layer;
                let x = xs[d] + shift;
                points.push(Point {
                    x,
                    y: layer_top[layer],
                });
                points.push(Point {
                    x,
                    y: layer_top[layer] + layer_height[layer],
                });
            }
            points.push(Point {
                x: centres[b].x + port * sizes[b].width,
                y: centres[b].y - sizes[b].height / 2.0,
            });
            points
        })
        .collect();
    Layout {
        centres,
        routes,
        width,
        height,
    }
}

/// Longest-path layers; then nodes move down towards their users where that shortens
/// the drawing's edges, and sources move to just above their first user.
fn assign_layers(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        preds[b].push(a);
        succs[a].push(b);
    }
    let mut layer = vec![0usize; n];
    // Edges point forward, so index order is a topological order.
    for v in 0..n {
        layer[v] = preds[v].iter().map(|&p| layer[p] + 1).max().unwrap_or(0);
    }
    // Sources are placed last, just above their first user, so edges from them cost
    // little. Moving `v` down shortens each of its out-edges and lengthens each in-edge
    // from a non-source; move when that is no loss, so that work which depends only on
    // sources (an optimiser's `pow %beta1, %step`, `mul %beta, %w.m`) is drawn next to
    // its use at the end of the backward pass rather than at the top.
    for _ in 0..4 {
        let mut moved = false;
        for v in (0..n).rev() {
            let Some(lowest) = succs[v].iter().map(|&s| layer[s]).min() else {
                continue;
            };
            let anchored = preds[v].iter().filter(|&&p| !preds[p].is_empty()).count();
            if lowest > layer[v] + 1 && succs[v].len() >= anchored {
                layer[v] = lowest - 1;
                moved = true;
            }
        }
        for v in 0..n {
            if preds[v].is_empty() {
                if let Some(first_use) = succs[v].iter().map(|&s| layer[s]).min() {
                    layer[v] = first_use - 1;
                }
            }
        }
        if !moved {
            break;
        }
    }
    layer
}

/// Reorders each layer by barycentre sweeps, keeping the order with fewest crossings.
fn order_layers(slots: &[Slot], layers: &mut [Vec<usize>]) {
    let mut position = vec![0usize; slots.len()];
    let index_positions = |layers: &[Vec<usize>], position: &mut [usize]| {
        for layer in layers {
            for (p, &s) in layer.iter().enumerate() {
                position[s] = p;
            }
        }
    };
    index_positions(layers, &mut position);
    let mut best = layers.to_vec();
    let mut best_crossings = count_crossings(slots, layers, &position);
    for sweep in 0..ORDER_SWEEPS {
        let downward = sweep % 2 == 0;
        let order: Vec<usize> = if downward {
            (1..layers.len()).collect()
        } else {
            (0..layers.len().saturating_sub(1)).rev().collect()
        };
        for l in order {
            let mut keyed: Vec<(f64, usize)> = layers[l]
                .iter()
                .map(|&s| {
                    let neighbours = if downward {
                        &slots[s].up
                    } else {
                        &slots[s].down
                    };
                    // Looking down, aim at the port: a node whose edge enters the left
                    // of its user sorts before one entering the right.
                    let key = if neighbours.is_empty() {
                        position[s] as f64
                    } else if downward {
                        neighbours
                            .iter()
                            .map(|&(u, _)| position[u] as f64)
                            .sum::<f64>()
                            / neighbours.len() as f64
                    } else {
                        neighbours
                            .iter()
                            .map(|&(d, port)| position[d] as f64 + port)
                            .sum::<f64>()
                            / neighbours.len() as f64
                    };
                    (key, s)
                })
                .collect();
            // Stable: ties keep their current order.
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            layers[l] = keyed.into_iter().map(|(_, s)| s).collect();
            for (p, &s) in layers[l].iter().enumerate() {
                position[s] = p;
            }
        }
        let crossings = count_crossings(slots, layers, &position);
        // Ties go to the later, more settled order.
        if crossings <= best_crossings {
            best_crossings = crossings;
            best = layers.to_vec();
        }
    }
    layers.clone_from_slice(&best);
}

/// Edge crossings between all pairs of neighbouring layers, counted with a Fenwick tree
/// over the lower ends of the edges sorted by their upper ends. Two edges into one node
/// cross when their ports are in the opposite order to their sources.
fn count_crossings(slots: &[Slot], layers: &[Vec<usize>], position: &[usize]) -> u64 {
    let mut total = 0u64;
    for pair in layers.windows(2) {
        let ends: Vec<(usize, usize, f64)> = pair[0]
            .iter()
            .flat_map(|&u| {
                slots[u]
                    .down
                    .iter()
                    .map(move |&(d, port)| (position[u], position[d], port))
            })
            .collect();
        // Rank the lower ends by position, then port.
        let mut lower: Vec<(usize, f64)> = ends.iter().map(|&(_, d, p)| (d, p)).collect();
        lower.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        lower.dedup();
        let rank = |d: usize, p: f64| {
            lower
                .binary_search_by(|probe| probe.0.cmp(&d).then(probe.1.total_cmp(&p)))
                .unwrap_or(0)
        };
        let mut ranked: Vec<(usize, usize)> =
            ends.iter().map(|&(u, d, p)| (u, rank(d, p))).collect();
        ranked.sort_unstable();
        let size = lower.len();
        let mut tree = vec![0u64; size + 1];
        for (seen, &(_, lower)) in ranked.iter().enumerate() {
            // Edges seen so far that end right of `lower` cross this one.
            let mut at_or_left = 0u64;
            let mut i = lower + 1;
            while i > 0 {
                at_or_left += tree[i];
                i -= i & i.wrapping_neg();
            }
            total += seen as u64 - at_or_left;
            let mut i = lower + 1;
            while i <= size {
                tree[i] += 1;
                i += i & i.wrapping_neg();
            }
        }
    }
    total
}

/// How strongly an edge pulls its ends into line: long edges (dummy to dummy) most, so
/// they run straight.
fn pull(slots: &[Slot], a: usize, b: usize) -> f64 {
    match (slots[a].dummy, slots[b].dummy) {
        (true, true) => 8.0,
        (false, false) => 1.0,
        _ => 2.0,
    }
}

/// Horizontal centres: packed left, then moved towards their neighbours in sweeps.
fn position_layers(slots: &[Slot], layers: &[Vec<usize>], spacing: Spacing) -> Vec<f64> {
    let gap = |a: usize, b: usize| {
        if slots[a].dummy || slots[b].dummy {
            spacing.edge_gap
        } else {
            spacing.node_gap
        }
    };
    let mut x = vec![0.0f64; slots.len()];
    for layer in layers {
        let mut right = 0.0;
        for (k, &s) in layer.iter().enumerate() {
            if k > 0 {
                right += gap(layer[k - 1], s);
            }
            x[s] = right + slots[s].width / 2.0;
            right += slots[s].width;
        }
    }
    for sweep in 0..POSITION_SWEEPS {
        let downward = sweep % 2 == 0;
        // The last two sweeps look both ways, to settle between the two pulls.
        let both = sweep + 2 >= POSITION_SWEEPS;
        let order: Vec<usize> = if downward {
            (0..layers.len()).collect()
        } else {
            (0..layers.len()).rev().collect()
        };
        for l in order {
            let layer = &layers[l];
            let mut targets = Vec::with_capacity(layer.len());
            let mut weights = Vec::with_capacity(layer.len());
            for &s in layer {
                // Each neighbour asks for the x that lines the edge up with its port:
                // an upper neighbour sits above our port, we sit above a lower one's.
                let above = slots[s]
                    .up
                    .iter()
                    .map(|&(u, port)| (u, x[u] - port * slots[s].width));
                let below = slots[s]
                    .down
                    .iter()
                    .map(|&(d, port)| (d, x[d] + port * slots[d].width));
                let wanted: Vec<(usize, f64)> = match (both, downward) {
                    (true, _) => above.chain(below).collect(),
                    (false, true) => above.collect(),
                    (false, false) => below.collect(),
                };
                let total: f64 = wanted.iter().map(|&(t, _)| pull(slots, s, t)).sum();
                if total > 0.0 {
                    let mean = wanted
                        .iter()
                        .map(|&(t, want)| pull(slots, s, t) * want)
                        .sum::<f64>()
                        / total;
                    targets.push(mean);
                    weights.push(total);
                } else {
                    // Nothing pulls it: stay, but yield to nodes that are pulled.
                    targets.push(x[s]);
                    weights.push(0.01);
                }
            }
            let gaps: Vec<f64> = layer
                .windows(2)
                .map(|p| (slots[p[0]].width + slots[p[1]].width) / 2.0 + gap(p[0], p[1]))
                .collect();
            let placed = place_in_order(&targets, &weights, &gaps);
            for (k, &s) in layer.iter().enumerate() {
                x[s] = placed[k];
            }
        }
    }
    x
}

/// Positions closest (in weighted squared distance) to `targets` that keep their order
/// with at least `gaps[k]` between items `k` and `k + 1`.
///
/// Subtracting each item's packed offset turns the gaps into plain order constraints,
/// which makes this an isotonic regression: pool adjacent blocks while they violate
/// the order, each block sitting at its weighted mean.
fn place_in_order(targets: &[f64], weights: &[f64], gaps: &[f64]) -> Vec<f64> {
    let mut offsets = Vec::with_capacity(targets.len());
    let mut offset = 0.0;
    for k in 0..targets.len() {
        if k > 0 {
            offset += gaps[k - 1];
        }
        offsets.push(offset);
    }
    // Blocks of (weighted sum, weight, item count).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for k in 0..targets.len() {
        let mut block = (weights[k] * (targets[k] - offsets[k]), weights[k], 1);
        while let Some(&(sum, weight, count)) = blocks.last() {
            if sum / weight >= block.0 / block.1 {
                blocks.pop();
                block = (sum + block.0, weight + block.1, count + block.2);
            } else {
                break;
            }
        }
        blocks.push(block);
    }
    let mut placed = Vec::with_capacity(targets.len());
    for (sum, weight, count) in blocks {
        let level = sum / weight;
        for _ in 0..count {
            placed.push(level + offsets[placed.len()]);
        }
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(n: usize) -> Vec<Size> {
        vec![
            Size {
                width: 40.0,
                height: 20.0
            };
            n
        ]
    }

    fn overlaps(layout: &Layout, sizes: &[Size]) -> bool {
        let n = sizes.len();
        (0..n).any(|i| {
            (i + 1..n).any(|j| {
                let (a, b) = (layout.centres[i], layout.centres[j]);
                (a.x - b.x).abs() < (sizes[i].width + sizes[j].width) / 2.0
                    && (a.y - b.y).abs() < (sizes[i].height + sizes[j].height) / 2.0
            })
        })
    }

    #[test]
    fn operands_sit_above_users_and_boxes_do_not_overlap() {
        // A diamond with a long edge 0 -> 5 and a source (1) used only at the bottom.
        let edges = [(0, 2), (0, 3), (2, 4), (3, 4), (4, 5), (0, 5), (1, 5)];
        let sizes = boxes(6);
        let layout = layered(&sizes, &edges, Spacing::default());
        for &(a, b) in &edges {
            assert!(layout.centres[a].y < layout.centres[b].y, "{a} above {b}");
        }
        assert!(!overlaps(&layout, &sizes));
        assert_eq!(
            layout.centres[1].y, layout.centres[4].y,
            "a source sits just above its first user"
        );
        // The long edge crosses two layers: 2 points each plus both ends.
        assert_eq!(layout.routes[5].len(), 6);
        assert!(layout.width > 0.0 && layout.height > 0.0);
    }

    #[test]
    fn placement_keeps_order_and_gaps_and_meets_free_targets() {
        let placed = place_in_order(&[10.0, 0.0, 100.0], &[1.0, 1.0, 1.0], &[5.0, 5.0]);
        // The first two collide and share their mean; the third is free.
        assert_eq!(placed, vec![2.5, 7.5, 100.0]);
    }

    #[test]
    fn crossings_are_counted() {
        let edges = [(0, 3), (1, 2)];
        let layout = layered(&boxes(4), &edges, Spacing::default());
        // Reordering removes the crossing: 0 is above 3 and 1 above 2 side by side.
        let left_of = |a: usize, b: usize| layout.centres[a].x < layout.centres[b].x;
        assert_eq!(left_of(0, 1), left_of(3, 2));
    }
}
