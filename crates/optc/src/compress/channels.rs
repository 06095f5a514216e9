//! Structured channel pruning (`--prune-channels F`): channels removed from every tensor of a
//! dependency group at once, with the weights that write and read them, so the tensors
//! physically shrink.
//!
//! A **dependency group** is grown from a producer (a conv, Gemm or MatMul with constant
//! weights) over the values whose channels are tied to its output channels:
//!
//! - **followers** keep channel `c` of their output a function of channel `c` of their
//!   inputs: elementwise unary ops, pools, reductions over the spatial axes, batch norm,
//!   depthwise convs (one input channel per output channel), grouped convs whose groups
//!   have as many outputs as inputs (a conv group's channels then go or stay together: the
//!   positions are kept by units of whole blocks, ranked by their mean importance), binary
//!   ops with a per-channel or scalar constant, a flatten of `[N, C, *sp]` into `[N, C*prod(sp)]` (its users must be
//!   consumers), and binary ops of two group tensors (a residual add: both operands then
//!   share one channel set, so the other operand's producers join the group);
//! - **producers** write the group's channels: a conv/Gemm/MatMul whose output is a group
//!   value, with its bias and per-channel fused steps, and a fused residual operand tied
//!   like an add's;
//! - a **concat** along the channel axis ties each input to a range of the output's channels:
//!   an input reached from the output gets that range, an input not yet in the group gets
//!   fresh positions (its producers join); the group's channels are then the concatenation;
//! - **consumers** read the group's channels as their input channels (features, after a
//!   flatten): an ungrouped conv or a Gemm/MatMul with constant weights.
//!
//! Anything else touching a group value (a graph output, a transpose, a non-constant
//! weight, ...) drops the group. The group's positions are ranked by the L1 norm of the
//! producers' weights writing them, summed over the producers; the fraction `F` with the
//! smallest norm goes (every concat input keeps at least one channel), from every value,
//! producer, follower and consumer of the group. The alternative sets every consumer's class
//! at once (the first consumer's [`Alternative`] and the others in `also`). Groups are grown
//! from the producers in class order and never share a class: a class another group already
//! holds drops the later group (each alternative assumes its neighbours unchanged).
//!
//! A simple chain (one producer, followers, one consumer) is the smallest group.

use super::alternative::{add_f32, node_cost};
use super::input_stats::InputStats;
use super::prune::reconstruct;
use optc_egraph::convert::Converted;
use optc_egraph::lossy::Alternative;
use optc_egraph::{egg, CostModel, ENode, OptEGraph};
use optc_ir::{Data, Op, Tensor, TensorType};
use std::collections::{BTreeMap, HashMap};

/// The only node of a class (alternatives are added to a graph converted without rewrites).
fn only_node(eg: &OptEGraph, id: egg::Id) -> Option<ENode> {
    let class = &eg[id];
    (class.nodes.len() == 1).then(|| class.nodes[0].clone())
}

fn ty(eg: &OptEGraph, id: egg::Id) -> Option<TensorType> {
    eg[id].data.ty().cloned()
}

fn f32_const(eg: &OptEGraph, id: egg::Id) -> Option<std::sync::Arc<Tensor>> {
    let t = optc_egraph::query::const_of(eg, id)?;
    t.as_f32()?;
    Some(t)
}

/// Keep the `keep` (sorted) entries of `axis` of a row-major tensor.
fn slice_axis(t: &Tensor, axis: usize, keep: &[usize]) -> Option<(Vec<usize>, Vec<f32>)> {
    let v = t.as_f32()?;
    let s = t.shape();
    if axis >= s.len() || keep.iter().any(|&k| k >= s[axis]) {
        return None;
    }
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &k in keep {
            let at = (o * s[axis] + k) * inner;
            out.extend_from_slice(&v[at..at + inner]);
        }
    }
    let mut shape = s.to_vec();
    shape[axis] = keep.len();
    Some((shape, out))
}

/// The producer's output channels: count and the L1 norm of each one's weights.
fn channel_norms(base: &Op, w: &Tensor) -> Option<Vec<f64>> {
    let v = w.as_f32()?;
    let s = w.shape();
    match base {
        Op::Conv { group: 1, .. } | Op::Gemm { trans_b: true, .. } => {
            let m = s[0];
            let per = v.len() / m.max(1);
            Some(
                (0..m)
                    .map(|c| {
                        v[c * per..(c + 1) * per]
                            .iter()
                            .map(|x| x.abs() as f64)
                            .sum()
                    })
                    .collect(),
            )
        }
        Op::MatMul | Op::Gemm { trans_b: false, .. } if s.len() == 2 => {
            let (k, n) = (s[0], s[1]);
            Some(
                (0..n)
                    .map(|c| (0..k).map(|r| v[r * n + c].abs() as f64).sum())
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Axis of a producer's weight holding its output channels, and of a consumer's weight
/// holding its input channels (features).
fn weight_axes(base: &Op) -> Option<(usize, usize)> {
    match base {
        Op::Conv { group: 1, .. } => Some((0, 1)),
        Op::Gemm {
            trans_a: false,
            trans_b: true,
            ..
        } => Some((0, 1)),
        Op::Gemm {
            trans_a: false,
            trans_b: false,
            ..
        }
        | Op::MatMul => Some((1, 0)),
        _ => None,
    }
}

/// Features per channel when `shape` flattens `src` `[N, C, *sp]` into `[N, C*prod(sp)]`.
fn flatten_per(src: &[usize], shape: &[usize]) -> Option<usize> {
    let flat = src.len() >= 3
        && shape.len() == 2
        && shape[0] == src[0]
        && shape[1] == src[1..].iter().product::<usize>();
    flat.then(|| src[2..].iter().product())
}

/// Users of each class: (user class, input port); graph outputs are users too (port `usize::MAX`).
fn users(conv: &Converted) -> HashMap<egg::Id, Vec<(egg::Id, usize)>> {
    let eg = &conv.egraph;
    let mut n: HashMap<egg::Id, Vec<(egg::Id, usize)>> = HashMap::new();
    for class in eg.classes() {
        for node in &class.nodes {
            for (port, &c) in node.children.iter().enumerate() {
                n.entry(eg.find(c)).or_default().push((class.id, port));
            }
        }
    }
    for (_, r) in &conv.roots {
        let r = eg.find(*r);
        n.entry(r).or_default().push((r, usize::MAX));
    }
    n
}

/// A weighted contraction whose weight (input 1) is an f32 constant: a producer or consumer.
fn weighted(eg: &OptEGraph, n: &ENode) -> bool {
    n.op().is_some_and(|op| weight_axes(op.base()).is_some())
        && n.children.len() > 1
        && f32_const(eg, n.children[1]).is_some()
}

/// How many of a node's inputs are its base op's (the rest are operands of fused steps).
fn base_arity(op: &Op, children: usize) -> usize {
    match op {
        Op::Fused { base_inputs, .. } => *base_inputs,
        _ => children,
    }
}

/// A grouped conv with constant weights whose groups have as many output channels as input
/// channels: the channels per group (1: depthwise). Output channel `o` then reads only the
/// input channels of its own group, which holds input channel `o`.
fn per_group(eg: &OptEGraph, n: &ENode) -> Option<usize> {
    let Some(Op::Conv { group, .. }) = n.op().map(Op::base) else {
        return None;
    };
    let w = f32_const(eg, n.children[1])?;
    let s = w.shape();
    (*group > 1 && s.len() >= 2 && s[0] == *group * s[1]).then_some(s[1])
}

/// One value of a group: position in the group of each of its channels (along `axis`;
/// after a flatten each channel is `per` features of axis 1).
#[derive(Clone, Debug, PartialEq)]
struct Member {
    map: Vec<usize>,
    axis: usize,
    per: usize,
}

/// What the tensor of a value is in a group.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Producer,
    Follower,
}

#[derive(Default)]
struct Group {
    /// Every value of the group, with its role.
    values: BTreeMap<egg::Id, (Member, Role)>,
    /// The e-node of each value and consumer, as the group found it (alternatives join
    /// those classes later).
    nodes: HashMap<egg::Id, ENode>,
    /// Consumers: (class, the value they read).
    consumers: Vec<(egg::Id, egg::Id)>,
    /// Positions of the group; `segments`: the ranges a new producer set opened.
    size: usize,
    segments: Vec<std::ops::Range<usize>>,
    /// Positions kept or removed together (the channels of one group of a grouped conv).
    blocks: Vec<Vec<usize>>,
}

/// The channel axis of a producer's output (rank `rank`).
fn producer_axis(base: &Op, rank: usize) -> usize {
    match base {
        Op::Conv { .. } => 1,
        _ => rank.saturating_sub(1),
    }
}

/// How a constant operand of rank `r`, broadcast against a value of rank `rank` whose channel
/// axis is `axis` with `m` channels, depends on the channel: `Some(None)` not at all (its dim
/// there is 1, or it is a scalar), `Some(Some(pos))` along its own axis `pos`, `None` in a way
/// that does not slice (another extent).
fn const_axis(shape: &[usize], rank: usize, axis: usize, m: usize) -> Option<Option<usize>> {
    let r = shape.len();
    if r > rank {
        return None;
    }
    if axis + r < rank {
        return Some(None);
    }
    let pos = axis + r - rank;
    match shape[pos] {
        1 if m != 1 => Some(None),
        d if d == m => Some(Some(pos)),
        _ => None,
    }
}

struct Grower<'a> {
    eg: &'a OptEGraph,
    uses: &'a HashMap<egg::Id, Vec<(egg::Id, usize)>>,
    layers: &'a HashMap<egg::Id, String>,
    group: Group,
    queue: Vec<egg::Id>,
}

impl Grower<'_> {
    fn shape(&self, id: egg::Id) -> Option<Vec<usize>> {
        ty(self.eg, id).map(|t| t.shape)
    }

    /// Put `id` in the group with `member`; `None` when it is there with another one.
    fn assign(&mut self, id: egg::Id, member: Member, role: Role) -> Option<()> {
        let id = self.eg.find(id);
        if let Some((m, r)) = self.group.values.get(&id) {
            return (*m == member && *r == role).then_some(());
        }
        if self.group.consumers.iter().any(|c| c.0 == id) {
            return None;
        }
        self.group.values.insert(id, (member, role));
        self.queue.push(id);
        Some(())
    }

    /// The role of the node defining a group value with this member.
    fn role_of(&self, n: &ENode) -> Role {
        if weighted(self.eg, n) {
            Role::Producer
        } else {
            Role::Follower
        }
    }

    /// Put the operand `c` in the group with `member`, in the role its definition gives it.
    fn tie(&mut self, c: egg::Id, member: Member) -> Option<()> {
        let r = self.role_of(&only_node(self.eg, self.eg.find(c))?);
        self.assign(c, member, r)
    }

    /// Where a conv's fused-step operands start, once its bias (if any) is checked to be one
    /// value per channel (`m`): a conv's bias is `[M]`, not broadcast like a step's operand.
    fn conv_operands_from(&self, n: &ENode, op: &Op, m: usize) -> Option<usize> {
        let arity = base_arity(op, n.children.len());
        if arity > 2 && f32_const(self.eg, n.children[2])?.numel() != m {
            return None;
        }
        Some(arity.max(2))
    }

    /// Tie the operands of the node defining `id` (and which of them are group values).
    fn backward(&mut self, id: egg::Id) -> Option<()> {
        let (member, role) = self.group.values.get(&id)?.clone();
        let n = only_node(self.eg, id)?;
        let op = n.op()?.clone();
        let rank = self.shape(id)?.len();
        let m = member.map.len();
        if member.per != 1 || matches!(op, Op::Reshape { .. }) {
            // A flatten: its input is the same channels, one per `per` features.
            let Op::Reshape { shape } = &op else {
                return None;
            };
            let src = self.shape(n.children[0])?;
            let inner = Member {
                map: member.map.clone(),
                axis: 1,
                per: 1,
            };
            let flat = member.axis == 1
                && src.get(1) == Some(&m)
                && flatten_per(&src, shape) == Some(member.per);
            if !flat {
                return None;
            }
            return self.tie(n.children[0], inner);
        }
        // Non-constant operands beyond the first are tied to the output (a residual).
        let tie_rest = |g: &mut Self, from: usize| -> Option<()> {
            for &c in n.children.iter().skip(from) {
                if let Some(t) = f32_const(g.eg, c) {
                    const_axis(t.shape(), rank, member.axis, m)?;
                    continue;
                }
                if g.shape(c)? != g.shape(id)? {
                    return None;
                }
                g.tie(c, member.clone())?;
            }
            Some(())
        };
        match role {
            Role::Producer => {
                let base = op.base();
                if producer_axis(base, rank) != member.axis {
                    return None;
                }
                // (A Gemm's C broadcasts like a step's operand.)
                let from = match base {
                    Op::Conv { .. } => self.conv_operands_from(&n, &op, m)?,
                    _ => 2,
                };
                tie_rest(self, from)
            }
            Role::Follower => match op.base() {
                Op::Unary(_) | Op::MaxPool { .. } | Op::AveragePool { .. } => {
                    if !matches!(op.base(), Op::Unary(_)) && member.axis != 1 {
                        return None;
                    }
                    self.tie(n.children[0], member.clone())?;
                    tie_rest(self, 1)
                }
                Op::Reduce { axes, keepdims, .. } => {
                    if axes.contains(&member.axis)
                        || (!keepdims && axes.iter().any(|&a| a < member.axis))
                    {
                        return None;
                    }
                    self.tie(n.children[0], member.clone())?;
                    tie_rest(self, 1)
                }
                Op::BatchNorm { .. } if member.axis == 1 => {
                    self.tie(n.children[0], member.clone())?;
                    for &c in &n.children[1..] {
                        if f32_const(self.eg, c)?.numel() != m {
                            return None;
                        }
                    }
                    Some(())
                }
                Op::Conv { .. } if per_group(self.eg, &n).is_some() && member.axis == 1 => {
                    self.tie(n.children[0], member.clone())?;
                    // A conv group's channels go or stay together (its output channels read
                    // all of them); depthwise: one channel each.
                    let cg = per_group(self.eg, &n)?;
                    if cg > 1 {
                        for block in member.map.chunks(cg) {
                            self.group.blocks.push(block.to_vec());
                        }
                    }
                    // Weight [M, cg, *k] along axis 0, bias [M]; fused steps as elsewhere.
                    let from = self.conv_operands_from(&n, &op, m)?;
                    tie_rest(self, from)
                }
                Op::Binary(_) => {
                    let out = self.shape(id)?;
                    let mut tensors = 0;
                    for &c in &n.children {
                        if let Some(t) = f32_const(self.eg, c) {
                            const_axis(t.shape(), rank, member.axis, m)?;
                            continue;
                        }
                        if self.shape(c)? != out {
                            return None;
                        }
                        tensors += 1;
                        self.tie(c, member.clone())?;
                    }
                    (tensors > 0).then_some(())
                }
                Op::Concat { axis } if *axis == member.axis => {
                    let mut at = 0;
                    for &c in &n.children {
                        let s = self.shape(c)?;
                        let w = *s.get(*axis)?;
                        let sub = Member {
                            map: member.map.get(at..at + w)?.to_vec(),
                            axis: *axis,
                            per: 1,
                        };
                        at += w;
                        self.tie(c, sub)?;
                    }
                    (at == m).then_some(())
                }
                _ => None,
            },
        }
    }

    /// Tie the users of `id`.
    fn forward(&mut self, id: egg::Id) -> Option<()> {
        let (member, _) = self.group.values.get(&id)?.clone();
        let users = self.uses.get(&id).cloned().unwrap_or_default();
        for (u, port) in users {
            if port == usize::MAX {
                return None;
            }
            let n = only_node(self.eg, u)?;
            let op = n.op()?.clone();
            if weighted(self.eg, &n) && port == 0 {
                // A consumer: reads the channels as its input channels.
                let (_, in_axis) = weight_axes(op.base())?;
                let rank = self.shape(id)?.len();
                let reads = match op.base() {
                    Op::Conv { group: 1, .. } => member.axis == 1 && member.per == 1,
                    _ => member.axis == rank - 1 && (member.per == 1 || rank == 2),
                };
                if !reads || !self.layers.contains_key(&u) || self.group.values.contains_key(&u) {
                    return None;
                }
                let w = f32_const(self.eg, n.children[1])?;
                if w.shape().get(in_axis) != Some(&(member.map.len() * member.per)) {
                    return None;
                }
                if !self.group.consumers.contains(&(u, id)) {
                    self.group.consumers.push((u, id));
                }
                continue;
            }
            if member.per != 1 {
                return None;
            }
            let out = self.shape(u)?;
            match op.base() {
                Op::Concat { axis } if *axis == member.axis => {
                    // Inputs not in the group yet open fresh positions.
                    let mut map = vec![];
                    for &c in &n.children {
                        let c = self.eg.find(c);
                        match self.group.values.get(&c) {
                            Some((mc, _)) if mc.axis == *axis => map.extend(mc.map.iter().copied()),
                            Some(_) => return None,
                            None => {
                                let w = *self.shape(c)?.get(*axis)?;
                                let fresh = self.group.size..self.group.size + w;
                                self.group.size += w;
                                self.group.segments.push(fresh.clone());
                                map.extend(fresh.clone());
                                let sub = Member {
                                    map: fresh.collect(),
                                    axis: *axis,
                                    per: 1,
                                };
                                self.tie(c, sub)?;
                            }
                        }
                    }
                    let whole = Member {
                        map,
                        axis: *axis,
                        per: 1,
                    };
                    self.assign(u, whole, Role::Follower)?;
                }
                Op::Reshape { shape } => {
                    if member.axis != 1 {
                        return None;
                    }
                    let per = flatten_per(&self.shape(id)?, shape)?;
                    let m2 = Member {
                        map: member.map.clone(),
                        axis: 1,
                        per,
                    };
                    self.assign(u, m2, Role::Follower)?;
                }
                _ => {
                    // Everything else keeps the value's shape on the channel axis, or is
                    // refused when its own definition is checked.
                    if out.get(member.axis) != self.shape(id)?.get(member.axis) {
                        return None;
                    }
                    let r = self.role_of(&n);
                    self.assign(u, member.clone(), r)?;
                }
            }
        }
        Some(())
    }

    /// Grow the group of `seed` (a producer); `None` when a value of it cannot be pruned.
    fn grow(mut self, seed: egg::Id) -> Option<Group> {
        let rank = self.shape(seed)?.len();
        let n = only_node(self.eg, seed)?;
        let axis = producer_axis(n.op()?.base(), rank);
        let m = *self.shape(seed)?.get(axis)?;
        self.group.size = m;
        self.group.segments.push(0..m);
        let member = Member {
            map: (0..m).collect(),
            axis,
            per: 1,
        };
        self.assign(seed, member, Role::Producer)?;
        while let Some(id) = self.queue.pop() {
            self.backward(id)?;
            self.forward(id)?;
        }
        let ids: Vec<egg::Id> = self
            .group
            .values
            .keys()
            .copied()
            .chain(self.group.consumers.iter().map(|c| c.0))
            .collect();
        for id in ids {
            let n = only_node(self.eg, id)?;
            self.group.nodes.insert(id, n);
        }
        // The group must be read by someone.
        (!self.group.consumers.is_empty()).then_some(self.group)
    }
}

/// `t` with only the channels `keep` of `member` (a constant operand of a group node of rank
/// `rank`; unchanged when it does not depend on the channel).
fn slice_operand(
    eg: &mut OptEGraph,
    id: egg::Id,
    rank: usize,
    axis: usize,
    m: usize,
    keep: &[usize],
) -> Option<egg::Id> {
    let t = f32_const(eg, id)?;
    match const_axis(t.shape(), rank, axis, m)? {
        None => Some(id),
        Some(pos) => sliced(eg, id, pos, keep),
    }
}

/// The constant `id` with only the entries `keep` of its `axis`, as a new constant class.
fn sliced(eg: &mut OptEGraph, id: egg::Id, axis: usize, keep: &[usize]) -> Option<egg::Id> {
    let t = f32_const(eg, id)?;
    let (s, v) = slice_axis(&t, axis, keep)?;
    add_f32(eg, s, v)
}

/// The group's nodes on the kept positions, each value's narrower class (memoized).
struct Rebuild<'a> {
    group: &'a Group,
    /// Kept positions of the group.
    kept: Vec<bool>,
    done: HashMap<egg::Id, egg::Id>,
    cost: f64,
}

impl Rebuild<'_> {
    /// Channels of a member that stay.
    fn keep_of(&self, member: &Member) -> Vec<usize> {
        (0..member.map.len())
            .filter(|&c| self.kept[member.map[c]])
            .collect()
    }

    fn value(&mut self, eg: &mut OptEGraph, id: egg::Id, model: &CostModel) -> Option<egg::Id> {
        // (Ids as the group found them: alternatives may have joined those classes since.)
        if let Some(&d) = self.done.get(&id) {
            return Some(d);
        }
        let Some((member, role)) = self.group.values.get(&id).cloned() else {
            // Outside the group (a producer's input): as it is.
            return Some(id);
        };
        let n = self.group.nodes.get(&id)?.clone();
        let op = n.op()?.clone();
        let keep = self.keep_of(&member);
        let m = member.map.len();
        let rank = ty(eg, id)?.shape.len();
        let mut children = n.children.clone();
        let mut new_op = op.clone();
        // Which children are weights or constants sliced in their own way.
        let first_operand = match (role, op.base()) {
            (Role::Producer, base) => {
                let (out_axis, _) = weight_axes(base)?;
                children[1] = sliced(eg, n.children[1], out_axis, &keep)?;
                if matches!(base, Op::Conv { .. }) && base_arity(&op, children.len()) > 2 {
                    children[2] = sliced(eg, n.children[2], 0, &keep)?;
                    3
                } else {
                    2
                }
            }
            (Role::Follower, Op::Conv { .. }) => {
                // Grouped (depthwise: 1 channel per group): weight [M, cg, *k] and bias [M]
                // along axis 0, the kept groups whole.
                children[0] = self.value(eg, n.children[0], model)?;
                let w = f32_const(eg, n.children[1])?;
                let cg = *w.shape().get(1)?;
                let whole_groups = cg > 0
                    && keep.len().is_multiple_of(cg)
                    && keep
                        .chunks(cg)
                        .all(|g| g[0] % cg == 0 && g.windows(2).all(|p| p[1] == p[0] + 1));
                if !whole_groups {
                    return None;
                }
                children[1] = sliced(eg, n.children[1], 0, &keep)?;
                let arity = base_arity(&op, children.len());
                if arity > 2 {
                    children[2] = sliced(eg, n.children[2], 0, &keep)?;
                }
                let set_group = |o: &Op| match o {
                    Op::Conv { window, .. } => Op::Conv {
                        window: window.clone(),
                        group: keep.len() / cg,
                    },
                    o => o.clone(),
                };
                new_op = match &op {
                    Op::Fused {
                        base,
                        base_inputs,
                        steps,
                    } => Op::Fused {
                        base: Box::new(set_group(base)),
                        base_inputs: *base_inputs,
                        steps: steps.clone(),
                    },
                    o => set_group(o),
                };
                arity
            }
            (Role::Follower, Op::BatchNorm { .. }) => {
                children[0] = self.value(eg, n.children[0], model)?;
                for c in children.iter_mut().skip(1) {
                    *c = sliced(eg, *c, 0, &keep)?;
                }
                children.len()
            }
            (Role::Follower, Op::Reshape { shape }) => {
                children[0] = self.value(eg, n.children[0], model)?;
                new_op = Op::Reshape {
                    shape: vec![shape[0], keep.len() * member.per],
                };
                children.len()
            }
            (Role::Follower, _) => 0,
        };
        for (slot, &c) in children.iter_mut().zip(&n.children).skip(first_operand) {
            *slot = if f32_const(eg, c).is_some() {
                slice_operand(eg, c, rank, member.axis, m, &keep)?
            } else {
                self.value(eg, c, model)?
            };
        }
        let node = ENode::from_op(new_op, children);
        self.cost += node_cost(eg, &node, model);
        let new = eg.add(node);
        self.done.insert(id, new);
        Some(new)
    }
}

/// Positions to keep: units (single positions, or the positions of blocks that share one,
/// merged) by their mean importance, the largest first, until at least `keep_n` are kept;
/// then every segment keeps the unit of its most important position if it kept none.
fn kept_positions(
    importance: &[f64],
    segments: &[std::ops::Range<usize>],
    blocks: &[Vec<usize>],
    keep_n: usize,
) -> Vec<bool> {
    let n = importance.len();
    // Union-find of the positions over the blocks.
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for b in blocks {
        for w in b.windows(2) {
            let (x, y) = (root(&mut parent, w[0]), root(&mut parent, w[1]));
            parent[x.max(y)] = x.min(y);
        }
    }
    let mut units: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let r = root(&mut parent, i);
        units.entry(r).or_default().push(i);
    }
    let units: Vec<Vec<usize>> = units.into_values().collect();
    let unit_of: HashMap<usize, usize> = units
        .iter()
        .enumerate()
        .flat_map(|(u, ps)| ps.iter().map(move |&p| (p, u)))
        .collect();
    let mean = |u: &[usize]| u.iter().map(|&p| importance[p]).sum::<f64>() / u.len() as f64;
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by(|&a, &b| {
        mean(&units[b])
            .total_cmp(&mean(&units[a]))
            .then(units[a][0].cmp(&units[b][0]))
    });
    let mut kept = vec![false; n];
    let mut count = 0;
    for &u in &order {
        if count >= keep_n {
            break;
        }
        for &p in &units[u] {
            kept[p] = true;
        }
        count += units[u].len();
    }
    for seg in segments {
        if !seg.clone().any(|i| kept[i]) {
            let best = seg
                .clone()
                .max_by(|&a, &b| importance[a].total_cmp(&importance[b]).then(b.cmp(&a)));
            if let Some(best) = best {
                for &p in &units[unit_of[&best]] {
                    kept[p] = true;
                }
            }
        }
    }
    kept
}

/// One fraction of one group, as built: what a boundary node (a consumer of this group that
/// produces for another) needs to be narrowed on both sides.
struct Built {
    group: usize,
    /// The narrower class of each value of the group, and its e-node.
    done: HashMap<egg::Id, egg::Id>,
    nodes: HashMap<egg::Id, ENode>,
    /// The kept channels of each value.
    keep: HashMap<egg::Id, Vec<usize>>,
    consumers: HashMap<egg::Id, ConsumerCut>,
}

/// A consumer in one fraction of its group: the input features kept, and per alternative
/// (index into the output) the full-shape weights they are sliced from.
type ConsumerCut = (Vec<usize>, Vec<(usize, std::sync::Arc<Tensor>)>);

/// Add a channel-pruned alternative per fraction for every dependency group; also returns
/// the classes the groups rebuild besides their first consumer (their own alternatives
/// cannot combine with a group's).
pub fn add_alternatives(
    conv: &mut Converted,
    layers: &[(egg::Id, ENode, String)],
    fractions: &[f64],
    means: &InputStats,
    refit: bool,
    model: &CostModel,
) -> (Vec<Alternative>, Vec<egg::Id>) {
    let mut out = vec![];
    let uses = users(conv);
    let named: HashMap<egg::Id, String> = layers
        .iter()
        .map(|(c, _, n)| (conv.egraph.find(*c), n.clone()))
        .collect();
    // The groups first, on the graph as converted (every class one node), from the producers
    // in class order. A value belongs to at most one group and a consumer reads at most one;
    // a consumer of one group may produce for another (a boundary: both narrow it).
    let mut groups: Vec<Group> = vec![];
    let mut held_values: HashMap<egg::Id, usize> = HashMap::new();
    let mut held_consumers: std::collections::HashSet<egg::Id> = Default::default();
    let mut seeds: Vec<egg::Id> = conv
        .egraph
        .classes()
        .filter(|c| c.nodes.len() == 1 && weighted(&conv.egraph, &c.nodes[0]))
        .map(|c| c.id)
        .collect();
    seeds.sort_unstable_by_key(|&id| usize::from(id));
    for seed in seeds {
        if held_values.contains_key(&seed) {
            continue;
        }
        let grower = Grower {
            eg: &conv.egraph,
            uses: &uses,
            layers: &named,
            group: Group::default(),
            queue: vec![],
        };
        let Some(group) = grower.grow(seed) else {
            continue;
        };
        if group.values.keys().any(|c| held_values.contains_key(c))
            || group
                .consumers
                .iter()
                .any(|c| held_consumers.contains(&c.0))
        {
            continue;
        }
        for &v in group.values.keys() {
            held_values.insert(v, groups.len());
        }
        held_consumers.extend(group.consumers.iter().map(|c| c.0));
        groups.push(group);
    }
    let mut claimed = vec![];
    let mut built: Vec<Built> = vec![];
    for (gi, group) in groups.iter().enumerate() {
        // Importance of each position: the L1 norms of the producers' channels written there.
        let mut importance = vec![0f64; group.size];
        let mut producers = 0;
        let mut ok = true;
        for (&id, (member, role)) in &group.values {
            if *role != Role::Producer {
                continue;
            }
            producers += 1;
            let n = &group.nodes[&id];
            let op = n.op().expect("an op");
            let norms =
                f32_const(&conv.egraph, n.children[1]).and_then(|w| channel_norms(op.base(), &w));
            match norms {
                Some(norms) if norms.len() == member.map.len() => {
                    for (c, v) in norms.into_iter().enumerate() {
                        importance[member.map[c]] += v;
                    }
                }
                _ => ok = false,
            }
        }
        if !ok || producers == 0 {
            continue;
        }
        let (first, _) = group.consumers[0];
        let name = named.get(&first).cloned().unwrap_or_default();
        let exact_cost: f64 = group
            .values
            .keys()
            .chain(group.consumers.iter().map(|c| &c.0))
            .map(|&id| node_cost(&conv.egraph, &group.nodes[&id], model))
            .sum();
        let shape_note = if producers == 1 && group.consumers.len() == 1 {
            String::new()
        } else {
            format!(
                "; a group of {producers} producers, {} consumers",
                group.consumers.len()
            )
        };
        let m = group.size;
        for &f in fractions {
            let keep_n = ((1.0 - f) * m as f64).round().max(1.0) as usize;
            if keep_n >= m {
                continue;
            }
            let kept = kept_positions(&importance, &group.segments, &group.blocks, keep_n);
            let kept_n = kept.iter().filter(|&&k| k).count();
            if kept_n >= m {
                continue;
            }
            let mut rebuild = Rebuild {
                group,
                kept,
                done: HashMap::new(),
                cost: 0.0,
            };
            // Each consumer on the kept channels of what it reads: the plain cut, and (when
            // asked and measured) re-fit by least squares to its inputs' second moment (the
            // removed channels' share taken over by the kept ones, where they correlate).
            let mut plain = vec![];
            let mut refitted = vec![];
            let mut any_refit = false;
            let mut failed = false;
            let mut consumers = HashMap::new();
            for &(c, v) in &group.consumers {
                let eg = &mut conv.egraph;
                let Some(below) = rebuild.value(eg, v, model) else {
                    failed = true;
                    break;
                };
                let node = group.nodes[&c].clone();
                let op = node.op().cloned().expect("an op");
                let base = op.base().clone();
                let (_, in_axis) = weight_axes(&base).expect("a consumer");
                let bw = f32_const(eg, node.children[1]).expect("constant weights");
                let (member, _) = &group.values[&v];
                let feats: Vec<usize> = rebuild
                    .keep_of(member)
                    .iter()
                    .flat_map(|&ch| ch * member.per..(ch + 1) * member.per)
                    .collect();
                let lname = named.get(&c).cloned().unwrap_or_default();
                let (rows, patches) = means.samples(&lname);
                let moment = match &base {
                    Op::Conv { .. } => means.patch_second_moment(&lname).map(|c| (c, patches)),
                    _ => means.second_moment(&lname).map(|c| (c, rows)),
                }
                .filter(|_| refit);
                let fitted = moment.and_then(|(cm, samples)| {
                    let bv = bw.as_f32()?;
                    let outer: usize = bw.shape()[..in_axis].iter().product();
                    let inner: usize = bw.shape()[in_axis + 1..].iter().product();
                    let n_in = bw.shape()[in_axis];
                    let mut masked = bv.to_vec();
                    for o in 0..outer {
                        for j in 0..n_in {
                            if feats.binary_search(&j).is_err() {
                                let at = (o * n_in + j) * inner;
                                masked[at..at + inner].fill(0.0);
                            }
                        }
                    }
                    let r = reconstruct(&base, bw.shape(), bv, &masked, &cm, samples)?;
                    Tensor::new(bw.shape().to_vec(), Data::F32(r))
                        .ok()
                        .map(std::sync::Arc::new)
                });
                let built_node = |weights: &Tensor, eg: &mut OptEGraph| -> Option<(ENode, f64)> {
                    let (bs, bv) = slice_axis(weights, in_axis, &feats)?;
                    let wid = add_f32(eg, bs, bv)?;
                    let mut ch = node.children.clone();
                    ch[0] = below;
                    ch[1] = wid;
                    let b2 = ENode::from_op(op.clone(), ch);
                    let ins: Option<Vec<&TensorType>> =
                        b2.children.iter().map(|&c| eg[c].data.ty()).collect();
                    let same = ins
                        .and_then(|ins| b2.op()?.infer(&ins).ok())
                        .is_some_and(|o| Some(&o[0]) == eg[c].data.ty());
                    same.then(|| {
                        let cost = node_cost(eg, &b2, model);
                        (b2, cost)
                    })
                };
                let Some(p) = built_node(&bw, eg) else {
                    failed = true;
                    break;
                };
                let r = match fitted.as_ref().and_then(|t| built_node(t, eg)) {
                    Some(r) => {
                        any_refit = true;
                        (r, fitted.clone().expect("fitted"))
                    }
                    None => (p.clone(), bw.clone()),
                };
                plain.push((c, p, bw.clone()));
                refitted.push((c, r.0, r.1));
                consumers.insert(c, (feats, vec![]));
            }
            if failed {
                continue;
            }
            let pct = 100.0 * f;
            let label = format!("channels pruned {pct:.0}% ({kept_n} of {m} kept{shape_note})");
            // The re-fit one first: without a budget the first of equally fast ones is taken.
            let mut variants = vec![];
            if any_refit {
                variants.push((refitted, ", reconstructed"));
            }
            variants.push((plain, ""));
            for (nodes, suffix) in variants {
                let eg = &mut conv.egraph;
                let mut cost = rebuild.cost;
                let mut pairs = vec![];
                for (c, (node, own), weights) in nodes {
                    cost += own;
                    let id = eg.add(node.clone());
                    eg.union(c, id);
                    pairs.push((c, node));
                    if let Some(entry) = consumers.get_mut(&c) {
                        entry.1.push((out.len(), weights));
                    }
                }
                let (class, node) = pairs.remove(0);
                out.push(Alternative {
                    class,
                    node,
                    also: pairs,
                    layer: name.clone(),
                    label: format!("{label}{suffix}"),
                    exact_cost,
                    cost,
                    error: None,
                });
            }
            let nodes = rebuild
                .done
                .iter()
                .filter_map(|(&v, &d)| Some((v, only_node(&conv.egraph, d)?)))
                .collect();
            let keep = group
                .values
                .iter()
                .map(|(&v, (member, _))| (v, rebuild.keep_of(member)))
                .collect();
            built.push(Built {
                group: gi,
                keep,
                done: rebuild.done,
                nodes,
                consumers,
            });
        }
        claimed.extend(group.values.keys().copied());
        claimed.extend(group.consumers.iter().skip(1).map(|c| c.0));
    }
    compose_boundaries(conv, &groups, &built, &held_values, &mut out);
    conv.egraph.rebuild();
    for a in &mut out {
        a.canonicalize(&conv.egraph);
    }
    let claimed = claimed.iter().map(|&p| conv.egraph.find(p)).collect();
    (out, claimed)
}

/// A producer of group B that consumes group A is narrowed on both sides when both are taken:
/// per fraction of each, the node with A's narrower input and B's fewer outputs joins B's
/// rebuilt class, and every alternative of A sets it there (so it is taken exactly when A
/// is, in whichever B's fraction the extraction reaches; B alone keeps its own node).
fn compose_boundaries(
    conv: &mut Converted,
    groups: &[Group],
    built: &[Built],
    held_values: &HashMap<egg::Id, usize>,
    out: &mut [Alternative],
) {
    for b in built {
        for (&p, (_, role)) in &groups[b.group].values {
            if *role != Role::Producer {
                continue;
            }
            let original = &groups[b.group].nodes[&p];
            let Some(base) = original.op().map(Op::base).cloned() else {
                continue;
            };
            let Some((out_axis, in_axis)) = weight_axes(&base) else {
                continue;
            };
            let input = original.children[0];
            let Some(&ga) = held_values.get(&input) else {
                continue;
            };
            let (Some(&narrow), Some(single)) = (b.done.get(&p), b.nodes.get(&p)) else {
                continue;
            };
            let Some(kept_out) = b.keep.get(&p) else {
                continue;
            };
            for a in built.iter().filter(|a| a.group == ga) {
                let (Some(&below), Some((feats, variants))) =
                    (a.done.get(&input), a.consumers.get(&p))
                else {
                    continue;
                };
                for (alt, weights) in variants {
                    let eg = &mut conv.egraph;
                    let Some((s1, v1)) = slice_axis(weights, in_axis, feats) else {
                        continue;
                    };
                    let Ok(t1) = Tensor::new(s1, Data::F32(v1)) else {
                        continue;
                    };
                    let Some((s2, v2)) = slice_axis(&t1, out_axis, kept_out) else {
                        continue;
                    };
                    let Some(wid) = add_f32(eg, s2, v2) else {
                        continue;
                    };
                    let mut ch = single.children.clone();
                    ch[0] = below;
                    ch[1] = wid;
                    let both = ENode::from_op(single.op().expect("an op").clone(), ch);
                    let id = eg.add(both.clone());
                    eg.union(narrow, id);
                    out[*alt].also.push((narrow, both));
                }
            }
        }
    }
}
