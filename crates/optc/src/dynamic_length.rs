//! One ahead-of-time object for every sequence length in a range (`--input-shape
//! input_ids=1x1..512`): the model is compiled once at the longest length, with the run's
//! length as an extra input, and masked so that the first `length` positions of every output
//! are what the model gives for inputs of that length.
//!
//! How: the model is imported at the longest length and at a second one. A dim that differs
//! between the two imports is a *length axis*; it must have the length as its extent in both
//! (`2L`, `L + 1` are refused). The two graphs must have the same nodes, and a constant with
//! length axes must be the same tensor at the shorter length as the longer one's first
//! positions (position ids, a causal mask); one without must be equal (a constant computed
//! from the length, such as `1 / L`, is refused). Every op is then checked for how it reads
//! along a length axis. Most ops compute each position from the same position of their inputs
//! (elementwise ops, projections, normalizations over features): the positions past the
//! length hold values that no valid position reads, so they are left alone. The ops that mix
//! positions read their input through a mask that puts the op's identity past the length:
//! a softmax over keys reads `-inf`, a contraction over the length (`P x V`) reads zeros in
//! both operands, a reduction its identity (a mean becomes a sum divided by the length at run
//! time), a max pool `-inf`, a conv along the length zeros (its own padding); a gather's
//! indices read 0 (a valid index whatever the caller left there). A prefix sum needs nothing.
//! Every other way of reading along a length axis (a slice at `L - 1`, a concat along it,
//! a reversed prefix sum, an op optc does not know to be positionwise) is refused, naming
//! each such node at once.
//!
//! The object costs the longest length's time at every length (the kernels are the longest
//! length's); it is exact up to the summation order of the contractions, whose zeros add
//! nothing. The length input is checked against the range at run time.

use crate::{Error, Options, Result};
use optc_ir::{
    interp, BinaryOp, DType, Data, Graph, NodeId, Op, ReduceKind, SliceDim, Tensor, TensorType,
    Value,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The name of the graph input holding the run's length (an i64 scalar, the last input).
pub const LENGTH_INPUT: &str = "optc_length";

/// Which input dims carry the sequence length, and its range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LengthSpec {
    /// Shortest length a run may have (at least 1).
    pub min: usize,
    /// Longest length: the object is compiled for it.
    pub max: usize,
    /// Per input name: the dims that are the length (the input's shape at the longest
    /// length is in [`Options::input_shapes`]).
    pub axes: HashMap<String, Vec<usize>>,
}

/// A shape as `--input-shape` writes it, where a dim may be a length range (`1x1..512`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangedShape {
    /// The dims, at the longest length.
    pub dims: Vec<usize>,
    /// The dims that are a range.
    pub axes: Vec<usize>,
    /// The range, `(min, max)`, when a dim is one (every range of one shape is the same).
    pub range: Option<(usize, usize)>,
}

/// Parse `1x3x224x224` or `1x1..512`.
pub fn parse_ranged_shape(text: &str) -> std::result::Result<RangedShape, String> {
    if !text.contains("..") {
        return Ok(RangedShape {
            dims: optc_onnx::parse_shape(text)?,
            axes: vec![],
            range: None,
        });
    }
    let mut dims = vec![];
    let mut axes = vec![];
    let mut range: Option<(usize, usize)> = None;
    for (d, part) in text.trim().split(['x', 'X']).enumerate() {
        let Some((lo, hi)) = part.split_once("..") else {
            // A fixed dim: its words as a shape's.
            dims.extend(optc_onnx::parse_shape(part)?);
            continue;
        };
        let num = |t: &str| t.trim().parse::<usize>().ok();
        let (Some(lo), Some(hi)) = (num(lo), num(hi)) else {
            return Err(format!(
                "bad range '{part}' in shape '{text}': write MIN..MAX, e.g. 1..512"
            ));
        };
        if lo == 0 || lo >= hi {
            return Err(format!(
                "range '{part}' in shape '{text}' must run from at least 1 to a larger length"
            ));
        }
        if range.is_some_and(|r| r != (lo, hi)) {
            return Err(format!(
                "shape '{text}' has two different ranges: one length per model"
            ));
        }
        range = Some((lo, hi));
        axes.push(d);
        dims.push(hi);
    }
    Ok(RangedShape { dims, axes, range })
}

/// Where the length is in a compiled model's inputs and outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LengthAxes {
    pub min: usize,
    pub max: usize,
    /// Per graph input of the model (the length input excluded): its length axes.
    pub inputs: Vec<Vec<usize>>,
    /// Per graph output: its length axes (none: the output is written in full).
    pub outputs: Vec<Vec<usize>>,
    /// Whether every input's and output's length axis (at most one each) is led by extents
    /// of 1: a run's positions are then the first elements of each buffer, whatever the
    /// longest length it was compiled for.
    pub leading: bool,
}

/// The shortest of the longest lengths [`masked_graphs`] compiles for.
pub const SHORTEST_VARIANT: usize = 16;

/// The model masked for every length of `spec` ([`masked_graph`]) and, when each length
/// axis is led by extents of 1 (a variant's buffers are then the first bytes of the
/// longest's), for halved longest lengths down to [`SHORTEST_VARIANT`] (and above
/// `spec.min`): `(longest length, graph)`, shortest first. An object holding them all runs
/// the shortest that fits the run's length, so its cost follows the length within a
/// factor of two.
pub fn masked_graphs(
    bytes: &[u8],
    opts: &Options,
    spec: &LengthSpec,
) -> Result<(Vec<(usize, Graph)>, LengthAxes)> {
    let (graph, axes) = masked_graph(bytes, opts, spec)?;
    let mut variants = vec![(spec.max, graph)];
    let (opts, spec) = &shared_dims(bytes, opts, spec)?;
    let mut max = spec.max;
    while axes.leading && max / 2 >= SHORTEST_VARIANT && max / 2 > spec.min {
        max /= 2;
        let o = at_length(opts, spec, max)?;
        let s = LengthSpec {
            max,
            ..spec.clone()
        };
        variants.push((max, masked_graph(bytes, &o, &s)?.0));
    }
    variants.reverse();
    Ok((variants, axes))
}

/// The model of `bytes` at `spec.max` with the masks and the length input (see the module
/// doc), not yet optimized, and where its length axes are. `opts.input_shapes` holds the
/// inputs' shapes at the longest length.
pub fn masked_graph(
    bytes: &[u8],
    opts: &Options,
    spec: &LengthSpec,
) -> Result<(Graph, LengthAxes)> {
    if spec.min == 0 || spec.min >= spec.max {
        return Err(Error::Input(format!(
            "a length range must run from at least 1 to a larger length, not {}..{}",
            spec.min, spec.max
        )));
    }
    // The second length: short and distinct, so an extent that merely follows the length
    // (2L, L + 1) cannot pass for it.
    let probe = spec.min.max(2).min(spec.max - 1);
    let (opts, spec) = &shared_dims(bytes, opts, spec)?;
    let long = import_at(bytes, opts, spec, spec.max)?;
    let short = import_at(bytes, opts, spec, probe)?;
    let ctx = Probes {
        long: &long,
        short: &short,
        spec,
        probe,
    };
    let (axes, problems) = ctx.length_axes()?;
    ctx.rebuild(&axes, problems)
}

/// `opts` and `spec` with the inputs the user gave no shape for filled in where the model
/// names their dynamic dims like a given input's (`attention_mask: [batch, sequence]` from
/// `input_ids=1x1..512` of `[batch, sequence]`): a dim named like a length dim is the length.
fn shared_dims(bytes: &[u8], opts: &Options, spec: &LengthSpec) -> Result<(Options, LengthSpec)> {
    let declared = optc_onnx::declared_inputs(bytes)?;
    let mut named: HashMap<String, (usize, bool)> = HashMap::new();
    for i in &declared {
        let (Some(dims), Some(shape)) = (&i.dims, opts.input_shapes.get(&i.name)) else {
            continue;
        };
        let ranged = spec.axes.get(&i.name);
        for (d, dim) in dims.iter().enumerate() {
            if let (optc_onnx::Dim::Named(n), Some(&v)) = (dim, shape.get(d)) {
                if n != "?" {
                    let length = ranged.is_some_and(|a| a.contains(&d));
                    let e = named.entry(n.clone()).or_insert((v, length));
                    e.1 |= length;
                }
            }
        }
    }
    let (mut opts, mut spec) = (opts.clone(), spec.clone());
    for i in &declared {
        let Some(dims) = &i.dims else { continue };
        if let Some(shape) = opts.input_shapes.get(&i.name) {
            // A shape given at the longest length, its length dims not: named like one.
            if !spec.axes.contains_key(&i.name) {
                let axes: Vec<usize> = (0..dims.len().min(shape.len()))
                    .filter(|&d| {
                        matches!(&dims[d], optc_onnx::Dim::Named(n)
                            if named.get(n).is_some_and(|&(v, length)| length && v == shape[d]))
                    })
                    .collect();
                if !axes.is_empty() {
                    spec.axes.insert(i.name.clone(), axes);
                }
            }
            continue;
        }
        if i.is_static() {
            continue;
        }
        let mut shape = vec![];
        let mut axes = vec![];
        for (d, dim) in dims.iter().enumerate() {
            match dim {
                optc_onnx::Dim::Fixed(v) => shape.push(*v),
                optc_onnx::Dim::Named(n) => match named.get(n) {
                    Some(&(v, length)) => {
                        shape.push(v);
                        if length {
                            axes.push(d);
                        }
                    }
                    None => break,
                },
            }
        }
        if shape.len() == dims.len() {
            opts.input_shapes.insert(i.name.clone(), shape);
            if !axes.is_empty() {
                spec.axes.insert(i.name.clone(), axes);
            }
        }
    }
    Ok((opts, spec))
}

/// `opts` with the length dims of `spec`'s inputs set to `length` (and no length range).
fn at_length(opts: &Options, spec: &LengthSpec, length: usize) -> Result<Options> {
    let mut o = opts.clone();
    o.length = None;
    for (name, dims) in &spec.axes {
        let shape = o.input_shapes.get_mut(name).ok_or_else(|| {
            Error::Input(format!(
                "the length range of input '{name}' needs its shape"
            ))
        })?;
        for &d in dims {
            let dim = shape.get_mut(d).ok_or_else(|| {
                Error::Input(format!("input '{name}' has no dim {d} to be the length"))
            })?;
            *dim = length;
        }
    }
    Ok(o)
}

fn import_at(bytes: &[u8], opts: &Options, spec: &LengthSpec, length: usize) -> Result<Graph> {
    let o = at_length(opts, spec, length)?;
    crate::pipeline::import_bytes(bytes, &o).map_err(|e| match e {
        Error::Import(e) => Error::Import(optc_onnx::ImportError::new(format!(
            "at length {length}: {}",
            e.message()
        ))),
        e => e,
    })
}

/// The length axes of each value.
type Axes = HashMap<Value, Vec<usize>>;

/// The model imported at the longest length and at the probe length.
struct Probes<'a> {
    long: &'a Graph,
    short: &'a Graph,
    spec: &'a LengthSpec,
    probe: usize,
}

/// What a node needs: masks on its inputs, and a mean turned into a sum over the length.
#[derive(Default)]
struct Needs {
    /// `(input port, axis, what the masked positions read)`.
    masks: Vec<(usize, usize, Fill)>,
    /// A mean over length axes: the op becomes a sum, divided by this many lengths times
    /// the constant factor (the other reduced extents).
    mean: Option<(usize, usize)>,
}

/// What a mask puts past the length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Fill {
    Zero,
    One,
    Lowest,
    Highest,
}

impl Probes<'_> {
    /// The length axes of every value whose extents allow them, after checking the two
    /// imports have the same nodes; and what is wrong with the others and with constants
    /// that disagree.
    fn length_axes(&self) -> Result<(Axes, Vec<String>)> {
        let (a, b) = (self.long, self.short);
        let differ = |what: String| -> Error {
            Error::Import(optc_onnx::ImportError::new(format!(
                "one object for lengths {}..{}: the model's graph differs between lengths {} \
                 and {} ({what}); compile one object per length (--input-shape NAME=...) instead",
                self.spec.min, self.spec.max, self.probe, self.spec.max
            )))
        };
        let order = a.topo_order()?;
        if a.g.node_count() != b.g.node_count()
            || a.inputs.len() != b.inputs.len()
            || a.outputs.len() != b.outputs.len()
        {
            return Err(differ(format!(
                "{} nodes and {} nodes",
                b.g.node_count(),
                a.g.node_count()
            )));
        }
        let mut axes = HashMap::new();
        let mut problems = vec![];
        for &n in &order {
            let na = a.node(n);
            let Some(nb) = b.g.node_weight(n) else {
                return Err(differ(format!("node {} has no counterpart", na.name)));
            };
            if std::mem::discriminant(&na.op) != std::mem::discriminant(&nb.op)
                || a.node_inputs(n) != b.node_inputs(n)
                || na.outputs.len() != nb.outputs.len()
            {
                return Err(differ(format!("node {} ({})", na.name, na.op.name())));
            }
            let shaped = matches!(
                na.op,
                Op::Reshape { .. } | Op::Expand { .. } | Op::Slice { .. }
            );
            if !shaped && !matches!(na.op, Op::Constant { .. }) && na.op != nb.op {
                problems.push(format!(
                    "node {} ({}): its attributes depend on the length",
                    na.name,
                    na.op.name()
                ));
            }
            for (p, (ta, tb)) in na.outputs.iter().zip(&nb.outputs).enumerate() {
                match self.axes_of(ta, tb) {
                    Ok(ax) => {
                        axes.insert(Value::new(n, p), ax);
                    }
                    Err(e) => problems.push(format!("node {} ({}): {e}", na.name, na.op.name())),
                }
            }
            if let (Op::Constant { id: ia }, Op::Constant { id: ib }) = (&na.op, &nb.op) {
                let (ca, cb) = (&a.consts[ia.0 as usize], &b.consts[ib.0 as usize]);
                let ax = axes.get(&Value::new(n, 0)).cloned().unwrap_or_default();
                if !prefix_of(ca, cb, &ax)? {
                    problems.push(format!(
                        "node {}: a constant that depends on the length{}",
                        na.name,
                        if ax.is_empty() {
                            ""
                        } else {
                            " other than by its extent (its first positions differ)"
                        }
                    ));
                }
            }
        }
        for (i, gi) in a.inputs.iter().enumerate() {
            let want = self.spec.axes.get(&gi.name).cloned().unwrap_or_default();
            let got = axes
                .get(&Value::new(gi.node, 0))
                .cloned()
                .unwrap_or_default();
            if want != got {
                problems.push(format!("input {i} '{}': its length dims", gi.name));
            }
        }
        Ok((axes, problems))
    }

    /// The axes where `ta` (longest length) and `tb` (probe length) differ: each must be the
    /// length in both.
    fn axes_of(&self, ta: &TensorType, tb: &TensorType) -> std::result::Result<Vec<usize>, String> {
        if ta.shape.len() != tb.shape.len() {
            return Err("its rank depends on the length".into());
        }
        let mut ax = vec![];
        for (d, (&x, &y)) in ta.shape.iter().zip(&tb.shape).enumerate() {
            if x == y {
                continue;
            }
            if x != self.spec.max || y != self.probe {
                return Err(format!(
                    "dim {d} has extent {x} at length {} and {y} at length {}: only the \
                     length itself can vary",
                    self.spec.max, self.probe
                ));
            }
            ax.push(d);
        }
        Ok(ax)
    }

    /// What node `n` needs to read only valid positions, or why it cannot.
    fn needs(
        &self,
        n: NodeId,
        axes: &HashMap<Value, Vec<usize>>,
    ) -> std::result::Result<Needs, String> {
        let g = self.long;
        let node = g.node(n);
        let ins = g.node_inputs(n);
        let in_ax: Vec<Vec<usize>> = ins.iter().map(|v| axes[v].clone()).collect();
        let out_ax: Vec<Vec<usize>> = (0..node.outputs.len())
            .map(|p| axes[&Value::new(n, p)].clone())
            .collect();
        let shape = |i: usize| {
            g.value_type(ins[i])
                .map(|t| t.shape.clone())
                .unwrap_or_default()
        };
        let any = in_ax.iter().chain(&out_ax).any(|a| !a.is_empty());
        let mut needs = Needs::default();
        if !any {
            return Ok(needs);
        }
        let has = |i: usize, d: usize| in_ax[i].contains(&d);
        match &node.op {
            Op::Input { .. }
            | Op::Constant { .. }
            | Op::Unary(_)
            | Op::Where
            | Op::Cast { .. }
            | Op::Bitcast { .. }
            | Op::Guard { .. }
            | Op::Expand { .. }
            | Op::Transpose { .. }
            | Op::BatchNorm { .. }
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. } => {}
            Op::Binary(op) => {
                // An integer divisor past the length may be anything, 0 included.
                let int = g
                    .value_type(ins[1])
                    .map(|t| !t.dtype.is_float())
                    .unwrap_or(false);
                if *op == BinaryOp::Div && int {
                    for &d in &in_ax[1] {
                        needs.masks.push((1, d, Fill::One));
                    }
                }
            }
            Op::MatMul | Op::Gemm { .. } => {
                let (ra, rb) = (shape(0).len(), shape(1).len());
                let (ka, kb) = match &node.op {
                    Op::Gemm {
                        trans_a, trans_b, ..
                    } => (usize::from(!*trans_a), usize::from(*trans_b)),
                    _ => (ra - 1, if rb == 1 { 0 } else { rb - 2 }),
                };
                if has(0, ka) || has(1, kb) {
                    needs.masks.push((0, ka, Fill::Zero));
                    needs.masks.push((1, kb, Fill::Zero));
                }
            }
            Op::Conv { window, .. } | Op::MaxPool { window } | Op::AveragePool { window, .. } => {
                if in_ax.iter().skip(1).any(|a| !a.is_empty()) {
                    return Err("its weights depend on the length".into());
                }
                if has(0, 1) && matches!(node.op, Op::Conv { .. }) {
                    return Err("it sums over channels that are the length".into());
                }
                let fill = match &node.op {
                    Op::MaxPool { .. } => Fill::Lowest,
                    Op::AveragePool {
                        count_include_pad: false,
                        ..
                    } => return Err("an average that leaves padding out, along the length".into()),
                    _ => Fill::Zero,
                };
                for &d in in_ax[0].iter().filter(|&&d| d >= 2) {
                    if window.strides[d - 2] != 1 || !out_ax[0].contains(&d) {
                        return Err(format!(
                            "a window along the length (dim {d}) that is not stride 1"
                        ));
                    }
                    needs.masks.push((0, d, fill));
                }
            }
            Op::Reduce {
                kind, axes: red, ..
            } => {
                let over: Vec<usize> = red.iter().copied().filter(|&d| has(0, d)).collect();
                if !over.is_empty() {
                    let fill = match kind {
                        ReduceKind::Sum | ReduceKind::Mean | ReduceKind::L2 => Fill::Zero,
                        ReduceKind::Max => Fill::Lowest,
                        ReduceKind::Min => Fill::Highest,
                        ReduceKind::Prod => Fill::One,
                    };
                    for &d in &over {
                        needs.masks.push((0, d, fill));
                    }
                    if *kind == ReduceKind::Mean {
                        let s = shape(0);
                        let rest: usize =
                            red.iter().filter(|d| !has(0, **d)).map(|&d| s[d]).product();
                        needs.mean = Some((over.len(), rest));
                    }
                }
            }
            Op::Softmax { axis } => {
                if has(0, *axis) {
                    needs.masks.push((0, *axis, Fill::Lowest));
                }
            }
            Op::LayerNorm { axis, .. } => {
                if in_ax.iter().any(|a| a.iter().any(|d| d >= axis)) {
                    return Err("it normalizes over the length".into());
                }
            }
            Op::Reshape { shape: to } => {
                let from = shape(0);
                let (ia, oa) = (&in_ax[0], &out_ax[0]);
                let before = |s: &[usize], d: usize| s[..d].iter().product::<usize>();
                let same = ia.len() == oa.len()
                    && ia
                        .iter()
                        .zip(oa)
                        .all(|(&i, &o)| before(&from, i) == before(to, o));
                if !same {
                    return Err("it merges or splits the length with other dims".into());
                }
            }
            Op::Concat { axis } | Op::Split { axis, .. } => {
                if out_ax.iter().chain(&in_ax).any(|a| a.contains(axis)) {
                    return Err("it joins or splits along the length".into());
                }
            }
            Op::Pad { pads, .. } => {
                let r = shape(0).len();
                if in_ax[0].iter().any(|&d| pads[d] != 0 || pads[r + d] != 0) {
                    return Err("it pads along the length".into());
                }
            }
            Op::Slice { dims } => {
                let Op::Slice { dims: short } = &self.short.node(n).op else {
                    unreachable!("the probes have the same ops")
                };
                for (d, (sa, sb)) in dims.iter().zip(short).enumerate() {
                    if out_ax[0].contains(&d) {
                        // The first positions (of a length axis, or of a longer fixed one).
                        if sa.start != 0 || sa.step != 1 || sb.start != 0 || sb.step != 1 {
                            return Err(format!("it does not keep the first positions (dim {d})"));
                        }
                    } else if !has(0, d) {
                        if sa != sb {
                            return Err(format!("its dim {d} depends on the length"));
                        }
                    } else if !within(sa, self.spec.min) || sa != sb {
                        return Err(format!(
                            "it reads positions of dim {d} a length of {} may not have",
                            self.spec.min
                        ));
                    }
                }
            }
            Op::Gather { axis } => {
                if has(0, *axis) {
                    // Constant indices into the length: each must be a valid position at
                    // every length whose model reads it (one at coordinates `c` along the
                    // indices' own length axes is read from length `max(c) + 1` on).
                    let shape = shape(1);
                    let ok = g.const_value(ins[1]).is_some_and(|t| {
                        t.to_i64_vec().iter().enumerate().all(|(flat, &i)| {
                            let at = unflatten(flat, &shape);
                            let from = in_ax[1].iter().map(|&d| at[d] + 1).max().unwrap_or(0);
                            i >= 0 && (i as usize) < from.max(self.spec.min)
                        })
                    });
                    if !ok {
                        return Err("it gathers along the length at positions not known to be \
                                    within the run's length"
                            .into());
                    }
                } else {
                    for &d in &in_ax[1] {
                        needs.masks.push((1, d, Fill::Zero));
                    }
                }
            }
            Op::Cumulative { axis, reverse, .. } => {
                if has(0, *axis) && *reverse {
                    return Err("a reversed running sum along the length".into());
                }
            }
            Op::Arg { axis, .. } | Op::TopK { axis, .. } => {
                if has(0, *axis) {
                    return Err("it searches along the length".into());
                }
            }
            _ => return Err("optc does not know how it reads along the length".into()),
        }
        Ok(needs)
    }

    /// The masked graph: the longest length's nodes in order, each reading its inputs
    /// through the masks it needs, and the length input (checked against the range).
    fn rebuild(
        &self,
        axes: &HashMap<Value, Vec<usize>>,
        mut problems: Vec<String>,
    ) -> Result<(Graph, LengthAxes)> {
        let a = self.long;
        let order = a.topo_order()?;
        let mut needs = HashMap::new();
        for &n in &order {
            // A node next to a value of the wrong extent is already named.
            let known = a.node_inputs(n).iter().all(|v| axes.contains_key(v))
                && (0..a.node(n).outputs.len()).all(|p| axes.contains_key(&Value::new(n, p)));
            if !known {
                continue;
            }
            match self.needs(n, axes) {
                Ok(x) => {
                    needs.insert(n, x);
                }
                Err(e) => problems.push(format!(
                    "node {} ({}): {e}",
                    a.node(n).name,
                    a.node(n).op.name()
                )),
            }
        }
        refuse(self.spec, problems)?;
        if a.inputs.iter().any(|i| i.name == LENGTH_INPUT) {
            return Err(Error::Input(format!(
                "the model has an input named '{LENGTH_INPUT}', the name of the length input"
            )));
        }
        let mut out = Graph::new();
        out.consts = a.consts.clone();
        let mut map: HashMap<Value, Value> = HashMap::new();
        for gi in &a.inputs {
            let ty = a.value_type(Value::new(gi.node, 0))?.clone();
            map.insert(Value::new(gi.node, 0), out.add_input(&gi.name, ty));
        }
        let raw = out.add_input(
            LENGTH_INPUT,
            TensorType {
                dtype: DType::I64,
                shape: vec![],
            },
        );
        let mut masks = Masks::new(&mut out, raw, self.spec)?;
        for &n in &order {
            let node = a.node(n);
            match &node.op {
                Op::Input { .. } => continue,
                Op::Constant { id } => {
                    let v = masks.g.add_const_ref(&node.name, *id)?;
                    map.insert(Value::new(n, 0), v);
                    continue;
                }
                _ => {}
            }
            let need = &needs[&n];
            let mut ins: Vec<Value> = a.node_inputs(n).iter().map(|v| map[v]).collect();
            for &(port, axis, fill) in &need.masks {
                let label = format!("{}_{port}", node.name);
                ins[port] = masks.apply(ins[port], axis, fill, &label)?;
            }
            let outs = match (&node.op, need.mean) {
                (
                    Op::Reduce {
                        axes: red,
                        keepdims,
                        ..
                    },
                    Some((lengths, rest)),
                ) => {
                    let op = Op::Reduce {
                        kind: ReduceKind::Sum,
                        axes: red.clone(),
                        keepdims: *keepdims,
                    };
                    let sum = masks.g.add(&node.name, op, &ins)?;
                    vec![masks.divide(sum, lengths, rest, &node.name)?]
                }
                _ => masks.g.add_node(&node.name, node.op.clone(), &ins)?,
            };
            for (p, v) in outs.into_iter().enumerate() {
                map.insert(Value::new(n, p), v);
            }
        }
        for o in &a.outputs {
            masks.g.add_output(&o.name, map[&o.value]);
        }
        out.remove_dead();
        out.compact_consts()?;
        out.verify()?;
        let values: Vec<Value> = a
            .inputs
            .iter()
            .map(|i| Value::new(i.node, 0))
            .chain(a.outputs.iter().map(|o| o.value))
            .collect();
        let mut leading = true;
        for v in &values {
            leading &= match axes[v].as_slice() {
                [] => true,
                [d] => a.value_type(*v)?.shape[..*d].iter().all(|&n| n == 1),
                _ => false,
            };
        }
        let (ins, outs) = values.split_at(a.inputs.len());
        let where_ = LengthAxes {
            min: self.spec.min,
            max: self.spec.max,
            inputs: ins.iter().map(|v| axes[v].clone()).collect(),
            outputs: outs.iter().map(|v| axes[v].clone()).collect(),
            leading,
        };
        Ok((out, where_))
    }
}

/// Whether a slice dim reads only positions below `min`.
fn within(s: &SliceDim, min: usize) -> bool {
    let last = s.start + s.step * (s.len as i64 - 1);
    s.len == 0 || (s.start >= 0 && last >= 0 && s.start.max(last) < min as i64)
}

/// The coordinates of row-major element `flat` of `shape`.
fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut at = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        at[d] = flat % shape[d].max(1);
        flat /= shape[d].max(1);
    }
    at
}

/// Whether `short` is `long`'s first positions along `axes` (equal when there are none).
fn prefix_of(long: &Tensor, short: &Tensor, axes: &[usize]) -> Result<bool> {
    if axes.is_empty() {
        return Ok(long.identical(short));
    }
    let dims = long
        .shape()
        .iter()
        .zip(short.shape())
        .map(|(_, &n)| SliceDim::whole(n))
        .collect();
    let head = interp::eval_op(&Op::Slice { dims }, &[long])?;
    Ok(head[0].identical(short))
}

fn refuse(spec: &LengthSpec, problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Import(optc_onnx::ImportError::new(format!(
        "one object for lengths {}..{} needs every node to read only the positions within the \
         run's length; {} cannot:\n  {}",
        spec.min,
        spec.max,
        if problems.len() == 1 {
            "one node"
        } else {
            "these nodes"
        },
        problems.join("\n  ")
    ))))
}

/// The masks of the rebuilt graph: per (rank, axis), whether each position is within the
/// length, made once.
struct Masks<'a> {
    g: &'a mut Graph,
    length: Value,
    max: usize,
    valid: HashMap<(usize, usize), Value>,
}

impl<'a> Masks<'a> {
    /// The length input, checked against the range (a run outside it fails).
    fn new(g: &'a mut Graph, raw: Value, spec: &LengthSpec) -> Result<Masks<'a>> {
        let lo = g.add_const("optc_length_min", Tensor::scalar_i64(spec.min as i64));
        let hi = g.add_const("optc_length_max", Tensor::scalar_i64(spec.max as i64));
        let above = g.add(
            "optc_length_above_min",
            Op::Binary(BinaryOp::GreaterOrEqual),
            &[raw, lo],
        )?;
        let below = g.add(
            "optc_length_below_max",
            Op::Binary(BinaryOp::LessOrEqual),
            &[raw, hi],
        )?;
        let inside = g.add(
            "optc_length_in_range",
            Op::Binary(BinaryOp::And),
            &[above, below],
        )?;
        let length = g.add(
            "optc_length_checked",
            Op::Guard {
                expect: true,
                length: true,
            },
            &[inside, raw],
        )?;
        Ok(Masks {
            g,
            length,
            max: spec.max,
            valid: HashMap::new(),
        })
    }

    /// `x` with its positions past the length along `axis` replaced by `fill`.
    fn apply(&mut self, x: Value, axis: usize, fill: Fill, name: &str) -> Result<Value> {
        let ty = self.g.value_type(x)?.clone();
        let rank = ty.shape.len();
        let valid = match self.valid.get(&(rank, axis)) {
            Some(v) => *v,
            None => {
                let mut shape = vec![1; rank];
                shape[axis] = self.max;
                let iota = Tensor::from_i64(shape, (0..self.max as i64).collect())?;
                let iota = self
                    .g
                    .add_const(&format!("optc_positions_{rank}_{axis}"), iota);
                let v = self.g.add(
                    &format!("optc_valid_{rank}_{axis}"),
                    Op::Binary(BinaryOp::Less),
                    &[iota, self.length],
                )?;
                self.valid.insert((rank, axis), v);
                v
            }
        };
        let value = fill_value(ty.dtype, fill).ok_or_else(|| {
            Error::Input(format!(
                "node {name}: optc cannot mask a {} past the length",
                ty.dtype
            ))
        })?;
        let value = self.g.add_const(&format!("{name}_fill"), value);
        Ok(self
            .g
            .add(&format!("{name}_mask{axis}"), Op::Where, &[valid, x, value])?)
    }

    /// A sum over `lengths` length axes and `rest` other cells, divided into their mean.
    fn divide(&mut self, sum: Value, lengths: usize, rest: usize, name: &str) -> Result<Value> {
        let dtype = self.g.value_type(sum)?.dtype;
        if !dtype.is_float() {
            return Err(Error::Input(format!(
                "node {name}: a {dtype} mean over the length"
            )));
        }
        let mut count = self.g.add(
            &format!("{name}_length"),
            Op::Cast { to: dtype },
            &[self.length],
        )?;
        let one = count;
        for _ in 1..lengths {
            count = self.g.add(
                &format!("{name}_count"),
                Op::Binary(BinaryOp::Mul),
                &[count, one],
            )?;
        }
        if rest != 1 {
            let r = match dtype {
                DType::F64 => Tensor::new(vec![], Data::F64(vec![rest as f64]))?,
                _ => Tensor::scalar_f32(rest as f32),
            };
            let r = self.g.add_const(&format!("{name}_cells"), r);
            count = self.g.add(
                &format!("{name}_count"),
                Op::Binary(BinaryOp::Mul),
                &[count, r],
            )?;
        }
        Ok(self.g.add(
            &format!("{name}_mean"),
            Op::Binary(BinaryOp::Div),
            &[sum, count],
        )?)
    }
}

/// A scalar of `dtype` holding what `fill` stands for.
fn fill_value(dtype: DType, fill: Fill) -> Option<Arc<Tensor>> {
    let data = match (dtype, fill) {
        (DType::F32, _) => Data::F32(vec![match fill {
            Fill::Zero => 0.0,
            Fill::One => 1.0,
            Fill::Lowest => f32::NEG_INFINITY,
            Fill::Highest => f32::INFINITY,
        }]),
        (DType::F64, _) => Data::F64(vec![match fill {
            Fill::Zero => 0.0,
            Fill::One => 1.0,
            Fill::Lowest => f64::NEG_INFINITY,
            Fill::Highest => f64::INFINITY,
        }]),
        (DType::I64, _) => Data::I64(vec![match fill {
            Fill::Zero => 0,
            Fill::One => 1,
            Fill::Lowest => i64::MIN,
            Fill::Highest => i64::MAX,
        }]),
        (DType::I32, _) => Data::I32(vec![match fill {
            Fill::Zero => 0,
            Fill::One => 1,
            Fill::Lowest => i32::MIN,
            Fill::Highest => i32::MAX,
        }]),
        _ => return None,
    };
    Tensor::new(vec![], data).ok().map(Arc::new)
}
