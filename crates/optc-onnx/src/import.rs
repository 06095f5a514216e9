//! The importer proper: model checks, initializers, inputs, topological order, and the
//! translation of every node.

use crate::proto::{onnx_type_name, tensor_from_proto, Attrs, SUPPORTED_TYPES};
use crate::{DeclaredInput, Dim, ImportOptions};
use optc_ir::{
    checked_numel, BinaryOp, DType, Data, Graph, Op, PadMode, ReduceKind, SliceDim, Tensor,
    TensorType, UnaryOp, Value, Window,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tract_onnx::pb;

mod affine_grid;
mod attention;
mod bitcast;
mod col2im;
mod control_flow;
mod conv_transpose;
mod decompose;
mod deform_conv;
mod determinant;
mod einsum;
mod grid_sample;
mod indexing;
mod max_unpool;
mod mel_weights;
mod ml;
mod narrowing;
mod pool_indices;
mod quantization;
mod recurrent;
mod resize;
mod rotary;
mod steps;
mod tensor_scatter;
mod tfidf;
mod tree_ensemble;

type R<T> = Result<T, String>;

/// Results with at most this many elements are folded for any op.
const FOLD_SMALL: usize = 4096;
/// Shape-computation ops fold up to this many elements.
const FOLD_MAX: usize = 1 << 24;
/// Largest pad, stride, kernel extent or group accepted (guards overflow downstream).
pub(super) const LIMIT_DIM: usize = 1 << 31;
/// Largest tensor the importer itself creates (ConstantOfShape, Range).
pub(super) const CREATE_MAX: usize = 1 << 28;

/// Whether the importer understands op type `op` of the default domain.
fn supported(op: &str) -> bool {
    SUPPORTED_OPS.contains(&op) || decompose::OPS.contains(&op)
}

/// The op types the importer maps onto IR ops of their own (default domain); the ops
/// imported as compositions of others are listed in `decompose::OPS`.
pub const SUPPORTED_OPS: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "AffineGrid",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "Attention",
    "AveragePool",
    "BatchNormalization",
    "BitCast",
    "BitwiseAnd",
    "BitwiseNot",
    "BitwiseOr",
    "BitwiseXor",
    "Cast",
    "Ceil",
    "Clip",
    "Col2Im",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "DeformConv",
    "Cos",
    "Cosh",
    "CumProd",
    "CumSum",
    "DequantizeLinear",
    "Det",
    "Div",
    "Dropout",
    "DynamicQuantizeLinear",
    "Einsum",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GridSample",
    "GRU",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "If",
    "IsNaN",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "Loop",
    "LSTM",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "MaxUnpool",
    "MelWeightMatrix",
    "Min",
    "Mul",
    "Neg",
    "NonZero",
    "Not",
    "Or",
    "Pad",
    "Pow",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "Range",
    "Reciprocal",
    "ReduceL2",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Resize",
    "RNN",
    "RotaryEmbedding",
    "Round",
    "Scan",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "Shape",
    "Sigmoid",
    "Sin",
    "Sinh",
    "Size",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "TensorScatter",
    "TfIdfVectorizer",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Upsample",
    "Where",
];

/// Ops whose constant results are folded whatever their size.
const SHAPE_OPS: &[&str] = &[
    "Shape",
    "Size",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Slice",
    "ConstantOfShape",
    "Range",
    "Expand",
    "Reshape",
    "Flatten",
    "Equal",
    "Where",
    "Identity",
    "Not",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
];

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

/// A value during import: a known constant, or a value computed by the graph.
#[derive(Clone, Debug)]
enum Val {
    Const { t: Arc<Tensor>, name: String },
    Dyn(Value),
}

impl Val {
    /// The constant `t`, named `name`.
    fn constant(t: Tensor, name: String) -> Val {
        Val::Const {
            t: Arc::new(t),
            name,
        }
    }

    fn as_const(&self) -> Option<&Arc<Tensor>> {
        match self {
            Val::Const { t, .. } => Some(t),
            Val::Dyn(_) => None,
        }
    }
}

thread_local! {
    /// Values some node needed as constants but found computed at run time, during the
    /// current import (see `ImportOptions::input_values`).
    static WANTED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn want_const(name: &str) {
    WANTED.with(|w| w.borrow_mut().push(name.to_string()));
}

/// How many values have been wanted as constants so far in this import.
fn wanted_count() -> usize {
    WANTED.with(|w| w.borrow().len())
}

/// Whether a value wanted as a constant since `count` is one of `known` (a retry of the
/// import binds it).
fn wanted_since(count: usize, known: &HashSet<String>) -> bool {
    WANTED.with(|w| w.borrow()[count..].iter().any(|n| known.contains(n)))
}

thread_local! {
    /// What the current import left to run time (an `If` branch it could not compile),
    /// in words: `Imported::warnings`.
    static WARNINGS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn warn(msg: String) {
    WARNINGS.with(|w| w.borrow_mut().push(msg));
}

struct Ctx {
    g: Graph,
    opset: i64,
    env: HashMap<String, Val>,
    names: HashSet<String>,
    const_nodes: HashMap<usize, Value>,
    /// Graph inputs whose values the caller gave (`ImportOptions::input_values`) but
    /// that are not bound as constants in this round.
    known_inputs: HashSet<String>,
    /// ONNX values of a narrow type, held widened (`narrowing.rs`).
    narrow: HashMap<String, crate::narrow::Narrow>,
}

impl Ctx {
    fn unique(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "v" } else { base };
        if self.names.insert(base.to_string()) {
            return base.to_string();
        }
        let mut i = 1;
        loop {
            let n = format!("{base}_{i}");
            if self.names.insert(n.clone()) {
                return n;
            }
            i += 1;
        }
    }

    fn ty(&self, v: &Val) -> TensorType {
        match v {
            Val::Const { t, .. } => t.ty(),
            Val::Dyn(v) => self
                .g
                .value_type(*v)
                .cloned()
                .unwrap_or_else(|_| TensorType::f32(&[])),
        }
    }

    fn materialize(&mut self, v: &Val) -> Value {
        match v {
            Val::Dyn(v) => *v,
            Val::Const { t, name } => {
                let key = Arc::as_ptr(t) as usize;
                if let Some(v) = self.const_nodes.get(&key) {
                    return *v;
                }
                let n = self.unique(name);
                let v = self.g.add_const(&n, t.clone());
                self.const_nodes.insert(key, v);
                v
            }
        }
    }

    /// Add `op` on `ins`, or fold it when every input is constant (any size when `fold_any`,
    /// else small results only).
    fn emit(&mut self, name: &str, op: Op, ins: &[Val], fold_any: bool) -> R<Vec<Val>> {
        let tys: Vec<TensorType> = ins.iter().map(|v| self.ty(v)).collect();
        let refs: Vec<&TensorType> = tys.iter().collect();
        let out_tys = op.infer(&refs).map_err(|e| e.msg)?;
        let consts: Option<Vec<Arc<Tensor>>> = ins.iter().map(|v| v.as_const().cloned()).collect();
        if let Some(cs) = consts {
            let total = out_tys
                .iter()
                .try_fold(0usize, |a, t| a.checked_add(t.numel()))
                .unwrap_or(usize::MAX);
            if total <= FOLD_SMALL || (fold_any && total <= FOLD_MAX) {
                let trefs: Vec<&Tensor> = cs.iter().map(|t| &**t).collect();
                if let Ok(outs) = optc_ir::interp::eval_op(&op, &trefs) {
                    if outs.len() == out_tys.len()
                        && outs.iter().zip(&out_tys).all(|(o, t)| o.ty() == *t)
                    {
                        return Ok(outs
                            .into_iter()
                            .enumerate()
                            .map(|(i, t)| Val::Const {
                                t: Arc::new(t),
                                name: if i == 0 {
                                    name.to_string()
                                } else {
                                    format!("{name}:{i}")
                                },
                            })
                            .collect());
                    }
                }
            }
        }
        let values: Vec<Value> = ins.iter().map(|v| self.materialize(v)).collect();
        let n = self.unique(name);
        let outs = self.g.add_node(&n, op, &values).map_err(|e| e.msg)?;
        Ok(outs.into_iter().map(Val::Dyn).collect())
    }

    /// Add `op` on `ins` without folding it, even when every input is constant (a
    /// `DequantizeLinear` of int8 weights stays int8: the optimizer decides).
    fn emit_kept(&mut self, name: &str, op: Op, ins: &[Val]) -> R<Vec<Val>> {
        let values: Vec<Value> = ins.iter().map(|v| self.materialize(v)).collect();
        let n = self.unique(name);
        let outs = self.g.add_node(&n, op, &values).map_err(|e| e.msg)?;
        Ok(outs.into_iter().map(Val::Dyn).collect())
    }

    /// The value of `node`'s input #k, when the node has one there.
    fn input(&self, node: &pb::NodeProto, k: usize) -> Option<Val> {
        node.input
            .get(k)
            .filter(|s| !s.is_empty())
            .and_then(|s| self.env.get(s).cloned())
    }

    /// The value of `node`'s input #k; an error when it has none.
    fn required(&self, node: &pb::NodeProto, k: usize) -> R<Val> {
        self.input(node, k)
            .ok_or_else(|| format!("required input #{k} is missing"))
    }

    /// The constant at `node`'s input #k (the `what`), `None` when the node has no input
    /// there; an error when it is computed at run time (noting the inputs behind it, see
    /// [`Ctx::want`]).
    fn constant_input(&self, node: &pb::NodeProto, k: usize, what: &str) -> R<Option<Arc<Tensor>>> {
        match self.input(node, k) {
            None => Ok(None),
            Some(Val::Const { t, .. }) => Ok(Some(t)),
            Some(v @ Val::Dyn(_)) => {
                want_const(&node.input[k]);
                self.want(&v);
                Err(format!(
                    "input #{k} ('{}', the {what}) must be a constant, but it is computed at run time",
                    node.input[k]
                ))
            }
        }
    }

    /// Note that `v` was needed as a constant: the graph inputs it is computed from are
    /// the ones whose values would let the import go on (see `ImportError::needs_values`).
    fn want(&self, v: &Val) {
        for i in self.inputs_behind(v) {
            want_const(&i);
        }
    }

    /// The graph inputs value `v` is computed from.
    fn inputs_behind(&self, v: &Val) -> Vec<String> {
        let Val::Dyn(v) = v else { return vec![] };
        let mut seen = HashSet::new();
        let mut stack = vec![v.node];
        let mut out = vec![];
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            if let Some(i) = self.g.inputs.iter().find(|i| i.node == n) {
                out.push(i.name.clone());
            }
            stack.extend(self.g.node_inputs(n).into_iter().map(|v| v.node));
        }
        out.sort();
        out
    }

    fn emit1(&mut self, name: &str, op: Op, ins: &[Val], fold_any: bool) -> R<Val> {
        let mut v = self.emit(name, op, ins, fold_any)?;
        if v.len() != 1 {
            return Err(format!("expected one output, got {}", v.len()));
        }
        Ok(v.remove(0))
    }
}

fn norm_axis(axis: i64, rank: usize, what: &str) -> R<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("{what} {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

fn dims_of(v: &[i64], what: &str) -> R<Vec<usize>> {
    v.iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("{what} has a negative value in {v:?}")))
        .collect()
}

/// Display name of a node: its name, or `<OpType>_<index>` when empty.
fn node_label(n: &pb::NodeProto, i: usize) -> String {
    if n.name.is_empty() {
        format!("{}_{}", n.op_type, i)
    } else {
        n.name.clone()
    }
}

/// Import `model`; also returns the graph inputs whose given values
/// (`ImportOptions::input_values`) were bound as constants, sorted: the graph is only valid
/// for runs with exactly those values.
/// On failure, the error and the graph inputs whose values (not given) a node needed as
/// constants.
pub fn import_model(
    model: &pb::ModelProto,
    opts: &ImportOptions,
) -> Result<crate::Imported, (String, Vec<String>)> {
    // Bind known input values only where a node needs a constant, one round at a time.
    let mut bound: HashSet<String> = HashSet::new();
    loop {
        let (r, wanted) = import_with(model, opts, &bound);
        let more: Vec<String> = wanted
            .iter()
            .filter(|w| opts.input_values.contains_key(*w) && !bound.contains(*w))
            .cloned()
            .collect();
        if r.is_err() && !more.is_empty() {
            bound.extend(more);
            continue;
        }
        let mut bound: Vec<String> = bound.into_iter().collect();
        bound.sort();
        return match r {
            Ok(graph) => Ok(crate::Imported {
                graph,
                bound_inputs: bound,
                warnings: WARNINGS.with(|w| std::mem::take(&mut *w.borrow_mut())),
            }),
            Err(e) => {
                // Graph inputs whose values would have let the import go on.
                let inputs = model.graph.as_ref().map(|g| &g.input[..]).unwrap_or(&[]);
                let mut needs: Vec<String> = wanted
                    .into_iter()
                    .filter(|w| !opts.input_values.contains_key(w))
                    .filter(|w| inputs.iter().any(|i| &i.name == w))
                    .collect();
                needs.sort();
                needs.dedup();
                Err((e, needs))
            }
        };
    }
}

/// Every unsupported op type of `graph` (and of its subgraphs) in one error.
pub fn check_supported(graph: &pb::GraphProto, opset: i64) -> R<()> {
    let mut unsupported: Vec<(String, Vec<String>)> = vec![];
    collect_unsupported(graph, "", &mut unsupported);
    if unsupported.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unsupported
        .iter()
        .map(|(k, v)| format!("{k} (nodes: {})", v.join(", ")))
        .collect();
    let opset = if opset > 0 {
        format!(" (opset {opset})")
    } else {
        String::new()
    };
    Err(format!(
        "model uses {} unsupported op type{}{opset}: {}",
        unsupported.len(),
        if unsupported.len() == 1 { "" } else { "s" },
        list.join(", ")
    ))
}

/// The declared type of every graph input that is not an initializer, in order.
pub fn declared_inputs(model: &pb::ModelProto) -> R<Vec<DeclaredInput>> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| "the model has no graph".to_string())?;
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(declared_input)
        .collect()
}

fn declared_input(inp: &pb::ValueInfoProto) -> R<DeclaredInput> {
    use pb::tensor_shape_proto::dimension::Value as DV;
    let name = &inp.name;
    let tt = match inp.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t,
        None => return Err(format!("input '{name}' has no tensor type")),
    };
    let dtype = crate::proto::held_as(tt.elem_type).ok_or_else(|| {
        format!(
            "input '{name}' has element type {}, which is not supported (supported: {SUPPORTED_TYPES})",
            onnx_type_name(tt.elem_type)
        )
    })?;
    let dims = tt.shape.as_ref().map(|sp| {
        sp.dim
            .iter()
            .map(|d| match &d.value {
                Some(DV::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
                Some(DV::DimParam(s)) if !s.is_empty() => Dim::Named(s.clone()),
                _ => Dim::Named("?".into()),
            })
            .collect()
    });
    Ok(DeclaredInput {
        name: name.clone(),
        dtype,
        dims,
        narrow: crate::narrow::Narrow::of(tt.elem_type),
    })
}

fn import_with(
    model: &pb::ModelProto,
    opts: &ImportOptions,
    bound: &HashSet<String>,
) -> (R<Graph>, Vec<String>) {
    WANTED.with(|w| w.borrow_mut().clear());
    WARNINGS.with(|w| w.borrow_mut().clear());
    let r = import_inner(model, opts, bound);
    (r, WANTED.with(|w| std::mem::take(&mut *w.borrow_mut())))
}

fn import_inner(model: &pb::ModelProto, opts: &ImportOptions, bound: &HashSet<String>) -> R<Graph> {
    // Opset of the default domain.
    let opset = model
        .opset_import
        .iter()
        .filter(|o| is_default_domain(&o.domain))
        .map(|o| o.version)
        .max();
    let opset = match opset {
        Some(v) => v,
        // A model of `ai.onnx.ml` ops alone has no default-domain node the opset applies to.
        // (0: no default-domain opset.)
        None if model.opset_import.iter().all(|o| o.domain == ml::DOMAIN)
            && !model.opset_import.is_empty() =>
        {
            0
        }
        None if model.opset_import.is_empty() => {
            return Err("the model declares no opset (opset_import is empty)".into())
        }
        None => {
            return Err(format!(
                "the model does not import the default ONNX domain (it imports: {})",
                model
                    .opset_import
                    .iter()
                    .map(|o| format!("'{}' v{}", o.domain, o.version))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| "the model has no graph".to_string())?;

    // 1. Unsupported ops, all at once (inside If/Loop/Scan bodies too).
    check_supported(graph, opset)?;
    if !graph.sparse_initializer.is_empty() {
        return Err("sparse initializers are not supported".into());
    }

    // 2. Initializers.
    let mut inits: HashMap<String, Arc<Tensor>> = HashMap::new();
    for p in &graph.initializer {
        let t = tensor_from_proto(p, &format!("initializer '{}'", p.name))?;
        inits.insert(p.name.clone(), Arc::new(t));
    }

    // 3. Graph inputs (initializers listed as inputs are constants).
    let real_inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !inits.contains_key(&i.name))
        .collect();
    let input_names: Vec<&str> = real_inputs.iter().map(|i| i.name.as_str()).collect();
    let mut unknown: Vec<&String> = opts
        .input_shapes
        .keys()
        .filter(|k| !input_names.contains(&k.as_str()))
        .collect();
    unknown.sort();
    if let Some(k) = unknown.first() {
        return Err(format!(
            "--input-shape names '{k}', but the model has no such input; its inputs are: {}",
            input_names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut ctx = Ctx {
        g: Graph::new(),
        opset,
        env: HashMap::new(),
        names: HashSet::new(),
        const_nodes: HashMap::new(),
        known_inputs: opts
            .input_values
            .keys()
            .filter(|k| !bound.contains(*k))
            .cloned()
            .collect(),
        narrow: HashMap::new(),
    };
    for p in &graph.initializer {
        if let Some(n) = crate::narrow::Narrow::of(p.data_type) {
            ctx.narrow.insert(p.name.clone(), n);
        }
    }
    for inp in &real_inputs {
        let ty = input_type(inp, opts)?;
        let n = ctx.unique(&inp.name);
        let v = ctx.g.add_input(&n, ty);
        // The graph input keeps the ONNX name even if a node already took it.
        if let Some(gi) = ctx.g.inputs.last_mut() {
            gi.name = inp.name.clone();
        }
        let val = match opts.input_values.get(&inp.name) {
            Some(t) if bound.contains(&inp.name) => {
                if t.ty() != ctx.ty(&Val::Dyn(v)) {
                    return Err(format!(
                        "the value given for input '{}' is {}, the model expects {}",
                        inp.name,
                        t.ty(),
                        ctx.ty(&Val::Dyn(v))
                    ));
                }
                Val::Const {
                    t: Arc::new(t.clone()),
                    name: inp.name.clone(),
                }
            }
            _ => Val::Dyn(v),
        };
        // A narrow input: held widened, its values brought into the type first.
        let val = match declared_input(inp)?.narrow {
            Some(n) => {
                ctx.narrow.insert(inp.name.clone(), n);
                match n.op() {
                    Some(op) => {
                        let name = ctx.unique(&format!("{}/narrow", inp.name));
                        ctx.emit1(&name, op, &[val], false)?
                    }
                    None => val,
                }
            }
            None => val,
        };
        ctx.env.insert(inp.name.clone(), val);
    }
    for (name, t) in &inits {
        ctx.env.entry(name.clone()).or_insert_with(|| Val::Const {
            t: t.clone(),
            name: name.clone(),
        });
    }

    // 4-5. The nodes, in topological order.
    import_nodes(&mut ctx, graph, "")?;

    // 6. Graph outputs.
    if graph.output.is_empty() {
        return Err("the graph has no outputs".into());
    }
    for o in &graph.output {
        let v = ctx.env.get(&o.name).cloned().ok_or_else(|| {
            format!(
                "graph output '{}' is not produced by any node, input or initializer",
                o.name
            )
        })?;
        let mut value = ctx.materialize(&v);
        let node = ctx.g.node(value.node);
        let needs_identity = matches!(node.op, Op::Input { .. } | Op::Constant { .. })
            && node.outputs[0].dtype != DType::Bool;
        if needs_identity {
            let n = ctx.unique(&format!("{}/identity", o.name));
            value = ctx
                .g
                .add(&n, Op::Unary(UnaryOp::Identity), &[value])
                .map_err(|e| format!("graph output '{}': {}", o.name, e.msg))?;
        }
        ctx.g.add_output(&o.name, value);
    }
    ctx.g.remove_dead();
    ctx.g
        .verify()
        .map_err(|e| format!("the imported graph is invalid: {}", e.msg))?;
    Ok(ctx.g)
}

/// Every op type of `graph` (and of the bodies of its If/Loop/Scan nodes) the importer does
/// not know, with the nodes that use it.
fn collect_unsupported(
    graph: &pb::GraphProto,
    prefix: &str,
    unsupported: &mut Vec<(String, Vec<String>)>,
) {
    for (i, n) in graph.node.iter().enumerate() {
        let label = format!("{prefix}{}", node_label(n, i));
        for (attr, sub) in subgraphs(n) {
            collect_unsupported(sub, &format!("{label}/{attr}/"), unsupported);
        }
        let key = if n.domain == ml::DOMAIN && ml::OPS.contains(&n.op_type.as_str()) {
            continue;
        } else if !is_default_domain(&n.domain) {
            format!("{}::{}", n.domain, n.op_type)
        } else if !supported(&n.op_type) {
            n.op_type.clone()
        } else {
            continue;
        };
        match unsupported.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(label),
            None => unsupported.push((key, vec![label])),
        }
    }
}

/// The graphs a node holds as attributes (If's branches, Loop's and Scan's bodies), with
/// the attribute names.
fn subgraphs(n: &pb::NodeProto) -> Vec<(&str, &pb::GraphProto)> {
    let mut out = vec![];
    for a in &n.attribute {
        if let Some(g) = &a.g {
            out.push((a.name.as_str(), g));
        }
        for g in &a.graphs {
            out.push((a.name.as_str(), g));
        }
    }
    out
}

/// Values a graph reads from the scopes around it: names its nodes (and their bodies) use
/// that neither its inputs, its initializers nor its nodes define.
fn outer_names(graph: &pb::GraphProto) -> BTreeSet<String> {
    let mut defined: HashSet<&str> = HashSet::new();
    defined.extend(graph.input.iter().map(|i| i.name.as_str()));
    defined.extend(graph.initializer.iter().map(|i| i.name.as_str()));
    for n in &graph.node {
        defined.extend(n.output.iter().map(|o| o.as_str()));
    }
    let mut out = BTreeSet::new();
    for n in &graph.node {
        for i in &n.input {
            if !i.is_empty() && !defined.contains(i.as_str()) {
                out.insert(i.clone());
            }
        }
        for (_, sub) in subgraphs(n) {
            for i in outer_names(sub) {
                if !defined.contains(i.as_str()) {
                    out.insert(i);
                }
            }
        }
    }
    for o in &graph.output {
        if !defined.contains(o.name.as_str()) {
            out.insert(o.name.clone());
        }
    }
    out
}

/// Every value node `n` reads: its inputs, and the outer values its bodies read.
fn node_reads(n: &pb::NodeProto) -> Vec<String> {
    let mut out: Vec<String> = n.input.iter().filter(|s| !s.is_empty()).cloned().collect();
    for (_, sub) in subgraphs(n) {
        out.extend(outer_names(sub));
    }
    out
}

/// Translate the nodes of `graph` (the model's graph, or a body whose inputs `ctx.env`
/// already binds) in topological order; labels in errors start with `prefix`.
fn import_nodes(ctx: &mut Ctx, graph: &pb::GraphProto, prefix: &str) -> R<()> {
    let labels: Vec<String> = graph
        .node
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{prefix}{}", node_label(n, i)))
        .collect();
    let order = topo_order(graph, &labels, &ctx.env)?;

    // Names used by some node, body or graph output (to detect used unsupported outputs).
    let mut used: HashSet<String> = HashSet::new();
    for n in &graph.node {
        used.extend(node_reads(n));
    }
    for o in &graph.output {
        used.insert(o.name.clone());
    }

    for &i in &order {
        let node = &graph.node[i];
        let label = &labels[i];
        let outs = narrowing::check_inputs(ctx, node)
            .and_then(|()| narrowing::unsigned_order_in(ctx, node, label))
            .and_then(|saved| {
                let outs = if node.domain == ml::DOMAIN {
                    ml::convert(ctx, node, label)
                } else {
                    convert(ctx, node, label)
                };
                narrowing::unsigned_order_out(ctx, node, label, saved, outs?)
            })
            .and_then(|outs| narrowing::narrow_outputs(ctx, node, label, outs))
            .map_err(|e| format!("node '{label}' ({}): {e}", node.op_type))?;
        for (k, oname) in node.output.iter().enumerate() {
            if oname.is_empty() {
                continue;
            }
            match outs.get(k).cloned().flatten() {
                Some(v) => {
                    let v = match v {
                        Val::Const { t, .. } => Val::Const {
                            t,
                            name: oname.clone(),
                        },
                        d => d,
                    };
                    ctx.env.insert(oname.clone(), v);
                }
                None => {
                    if used.contains(oname.as_str()) {
                        return Err(format!(
                            "node '{label}' ({}): output #{k} ('{oname}') is not supported, \
                             but the model uses it",
                            node.op_type
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn input_type(inp: &pb::ValueInfoProto, opts: &ImportOptions) -> R<TensorType> {
    let DeclaredInput {
        name, dtype, dims, ..
    } = declared_input(inp)?;
    let name = &name;
    // A shape given for the input, else the shape of a value given for it (`optc run
    // --inputs`: dynamic dims taken from the data).
    let (over, given_as): (Option<Vec<usize>>, String) = match opts.input_shapes.get(name) {
        Some(s) => (Some(s.clone()), "--input-shape".into()),
        None => (
            opts.input_values.get(name).map(|t| t.shape().to_vec()),
            format!("the {} value given for it", name),
        ),
    };
    let show = |ds: &[Dim]| {
        ds.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    };
    let shape = match (&dims, over) {
        (None, Some(s)) => s,
        (None, None) => {
            return Err(format!(
                "input '{name}' has no shape in the model; pass --input-shape {name}=<dims>, e.g. {name}=1x3x224x224"
            ))
        }
        (Some(model_dims), Some(s)) => {
            let ok = s.len() == model_dims.len()
                && s.iter().zip(model_dims).all(|(a, b)| b.admits(*a));
            if !ok {
                return Err(format!(
                    "{given_as} ({name}={}) contradicts the model's shape of input '{name}': {}",
                    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
                    show(model_dims)
                ));
            }
            s
        }
        (Some(model_dims), None) => {
            if let Some(k) = model_dims.iter().position(|d| d.fixed().is_none()) {
                let pname = match &model_dims[k] {
                    Dim::Named(n) if n != "?" => n.clone(),
                    _ => format!("dim {k}"),
                };
                let example: Vec<String> = model_dims
                    .iter()
                    .map(|d| d.fixed().unwrap_or(1).to_string())
                    .collect();
                return Err(format!(
                    "input '{name}' has a dynamic dimension ({pname}) in shape {}; pass --input-shape {name}={}",
                    show(model_dims),
                    example.join("x")
                ));
            }
            model_dims.iter().filter_map(Dim::fixed).collect()
        }
    };
    let n = checked_numel(&shape).map_err(|e| format!("input '{name}': {e}"))?;
    if n.checked_mul(dtype.size()).is_none() {
        return Err(format!("input '{name}': shape {shape:?} is too large"));
    }
    Ok(TensorType::new(dtype, shape))
}

fn topo_order(
    graph: &pb::GraphProto,
    labels: &[String],
    env: &HashMap<String, Val>,
) -> R<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in &n.output {
            if o.is_empty() {
                continue;
            }
            if env.contains_key(o) {
                return Err(format!(
                    "node '{}' ({}) writes '{o}', which is already a graph input or initializer",
                    labels[i], n.op_type
                ));
            }
            if let Some(j) = producer.insert(o.as_str(), i) {
                return Err(format!(
                    "value '{o}' is produced by two nodes: '{}' and '{}'",
                    labels[j], labels[i]
                ));
            }
        }
    }
    let count = graph.node.len();
    let mut indeg = vec![0usize; count];
    let mut users: Vec<Vec<usize>> = vec![vec![]; count];
    for (i, n) in graph.node.iter().enumerate() {
        for inp in &node_reads(n) {
            if env.contains_key(inp) {
                continue;
            }
            match producer.get(inp.as_str()) {
                Some(&j) => {
                    indeg[i] += 1;
                    users[j].push(i);
                }
                None => {
                    return Err(format!(
                        "node '{}' ({}): input '{inp}' is neither an initializer, a graph input nor the output of any node (missing initializer?)",
                        labels[i], n.op_type
                    ))
                }
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..count).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(count);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() != count {
        let stuck: Vec<String> = (0..count)
            .filter(|&i| indeg[i] > 0)
            .map(|i| format!("'{}' ({})", labels[i], graph.node[i].op_type))
            .collect();
        return Err(format!(
            "the graph has a cycle; nodes on or after it: {}",
            stuck.join(", ")
        ));
    }
    Ok(order)
}

/// The axes a Reduce* node reduces (sorted, distinct) and its `keepdims`, from its
/// `axes` (attribute or input, as the opset says) and `noop_with_empty_axes`; `None` when
/// the node passes its input through.
fn reduce_axes(a: &Attrs, rank: usize, axes: Option<Vec<i64>>) -> R<Option<(Vec<usize>, bool)>> {
    let keepdims = a.int_or("keepdims", 1) != 0;
    let axes = axes.unwrap_or_default();
    let mut ax: Vec<usize> = if axes.is_empty() {
        if a.int_or("noop_with_empty_axes", 0) != 0 {
            return Ok(None);
        }
        (0..rank).collect()
    } else {
        axes.iter()
            .map(|&x| norm_axis(x, rank, "axis"))
            .collect::<R<_>>()?
    };
    ax.sort();
    ax.dedup();
    if ax.is_empty() {
        return Ok(None);
    }
    Ok(Some((ax, keepdims)))
}

/// Constant scalar of a tensor as f32.
fn scalar_f32(t: &Tensor, what: &str) -> R<f32> {
    let v = t.to_f64_vec();
    if v.len() != 1 {
        return Err(format!(
            "{what} must be a scalar, got shape {:?}",
            t.shape()
        ));
    }
    // The IR keeps these values as f32: a double that f32 does not hold exactly is refused,
    // not rounded.
    let x = v[0] as f32;
    if t.dtype() == DType::F64 && x as f64 != v[0] && !v[0].is_nan() {
        return Err(format!(
            "{what} {} is a double that f32 cannot hold exactly, which is not supported",
            v[0]
        ));
    }
    Ok(x)
}

/// The translation of one node. Returns one entry per ONNX output (None = not produced).
fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let op_type = node.op_type.as_str();
    let opset = ctx.opset;
    let fold_any = SHAPE_OPS.contains(&op_type);
    let inp = |k: usize| -> Option<Val> {
        node.input
            .get(k)
            .filter(|s| !s.is_empty())
            .and_then(|s| ctx.env.get(s).cloned())
    };
    let req =
        |k: usize| -> R<Val> { inp(k).ok_or_else(|| format!("required input #{k} is missing")) };
    let cinp = |k: usize, what: &str| -> R<Option<Arc<Tensor>>> {
        match inp(k) {
            None => Ok(None),
            Some(Val::Const { t, .. }) => Ok(Some(t)),
            Some(v @ Val::Dyn(_)) => {
                want_const(&node.input[k]);
                ctx.want(&v);
                Err(format!(
                    "input #{k} ('{}', the {what}) must be a constant, but it is computed at run time",
                    node.input[k]
                ))
            }
        }
    };
    let one = |v: Val| Ok(vec![Some(v)]);
    let nin = node.input.len();
    let ty0 = |ctx: &Ctx| -> R<TensorType> { Ok(ctx.ty(&req(0)?)) };

    macro_rules! unary {
        ($u:expr) => {{
            let x = req(0)?;
            let v = ctx.emit1(name, Op::Unary($u), &[x], fold_any)?;
            one(v)
        }};
    }
    macro_rules! binary {
        ($b:expr) => {{
            let (x, y) = (req(0)?, req(1)?);
            let v = ctx.emit1(name, Op::Binary($b), &[x, y], fold_any)?;
            one(v)
        }};
    }

    match op_type {
        "Identity" => one(req(0)?),
        "Dropout" => {
            if let Some(t) = cinp(2, "training_mode")? {
                // Training mode drops at random, except at ratio 0, where it is the
                // inference identity.
                if t.to_i64_vec().first().copied().unwrap_or(0) != 0 {
                    let ratio = match cinp(1, "ratio")? {
                        Some(r) => scalar_f32(&r, "ratio")?,
                        None => 0.5,
                    };
                    if ratio != 0.0 {
                        return Err(format!(
                            "training_mode=1 with ratio {ratio} drops values at random, which is not supported (only ratio 0, which drops none)"
                        ));
                    }
                }
            }
            if opset < 7 && a.int_or("is_test", 0) == 0 && a.has("is_test") {
                return Err("is_test=0 (training) is not supported".into());
            }
            let x = req(0)?;
            // Inference drops nothing: the mask (opset 7+), when used, is all true.
            let mask = match node.output.get(1) {
                Some(m) if !m.is_empty() && opset >= 7 => {
                    let shape = ctx.ty(&x).shape.clone();
                    let t = Tensor::new(vec![], Data::Bool(vec![true])).map_err(|e| e.msg)?;
                    let one = Val::constant(t, format!("{name}/true"));
                    let mask = format!("{name}/mask");
                    Some(ctx.emit1(&mask, Op::Expand { shape }, &[one], false)?)
                }
                _ => None,
            };
            Ok(vec![Some(x), mask])
        }
        "Relu" => unary!(UnaryOp::Relu),
        "LeakyRelu" => unary!(UnaryOp::LeakyRelu {
            alpha: a.float_or("alpha", 0.01)
        }),
        "Sigmoid" => unary!(UnaryOp::Sigmoid),
        "HardSigmoid" => unary!(UnaryOp::HardSigmoid {
            alpha: a.float_or("alpha", 0.2),
            beta: a.float_or("beta", 0.5)
        }),
        "HardSwish" => unary!(UnaryOp::HardSwish),
        "Tanh" => unary!(UnaryOp::Tanh),
        "Erf" => unary!(UnaryOp::Erf),
        "Exp" => unary!(UnaryOp::Exp),
        "Log" => unary!(UnaryOp::Log),
        "Sqrt" => unary!(UnaryOp::Sqrt),
        "Neg" => unary!(UnaryOp::Neg),
        "Abs" => unary!(UnaryOp::Abs),
        "Floor" => unary!(UnaryOp::Floor),
        "Ceil" => unary!(UnaryOp::Ceil),
        "Round" => unary!(UnaryOp::Round),
        "Sin" => unary!(UnaryOp::Sin),
        "Cos" => unary!(UnaryOp::Cos),
        "Tan" => unary!(UnaryOp::Tan),
        "Asin" => unary!(UnaryOp::Asin),
        "Acos" => unary!(UnaryOp::Acos),
        "Atan" => unary!(UnaryOp::Atan),
        "Sinh" => unary!(UnaryOp::Sinh),
        "Cosh" => unary!(UnaryOp::Cosh),
        "Asinh" => unary!(UnaryOp::Asinh),
        "Acosh" => unary!(UnaryOp::Acosh),
        "Atanh" => unary!(UnaryOp::Atanh),
        "Not" => unary!(UnaryOp::Not),
        "IsNaN" => unary!(UnaryOp::IsNaN),
        "Reciprocal" => {
            let x = req(0)?;
            if ctx.ty(&x).dtype != DType::F32 {
                return Err("Reciprocal needs a float input".into());
            }
            let c = Val::Const {
                t: Arc::new(Tensor::scalar_f32(1.0)),
                name: format!("{name}/one"),
            };
            one(ctx.emit1(name, Op::Binary(BinaryOp::Div), &[c, x], false)?)
        }
        "Clip" => {
            let (mut min, mut max) = (f32::NEG_INFINITY, f32::INFINITY);
            if opset < 11 {
                min = a.float_or("min", min);
                max = a.float_or("max", max);
            } else {
                if let Some(t) = cinp(1, "min")? {
                    min = scalar_f32(&t, "min")?;
                }
                if let Some(t) = cinp(2, "max")? {
                    max = scalar_f32(&t, "max")?;
                }
            }
            unary!(UnaryOp::Clip { min, max })
        }
        "Add" => binary!(BinaryOp::Add),
        "Sub" => binary!(BinaryOp::Sub),
        "Mul" => binary!(BinaryOp::Mul),
        "Div" => binary!(BinaryOp::Div),
        "Pow" => binary!(BinaryOp::Pow),
        "Equal" => binary!(BinaryOp::Equal),
        "Greater" => binary!(BinaryOp::Greater),
        "Less" => binary!(BinaryOp::Less),
        "GreaterOrEqual" => binary!(BinaryOp::GreaterOrEqual),
        "LessOrEqual" => binary!(BinaryOp::LessOrEqual),
        "BitwiseAnd" => binary!(BinaryOp::BitAnd),
        "BitwiseOr" => binary!(BinaryOp::BitOr),
        "BitwiseXor" => binary!(BinaryOp::BitXor),
        "BitwiseNot" => unary!(UnaryOp::BitNot),
        "And" => binary!(BinaryOp::And),
        "Or" => binary!(BinaryOp::Or),
        "Max" | "Min" | "Sum" => {
            let b = match op_type {
                "Max" => BinaryOp::Max,
                "Min" => BinaryOp::Min,
                _ => BinaryOp::Add,
            };
            let xs: Vec<Val> = (0..nin).map(req).collect::<R<_>>()?;
            if xs.is_empty() {
                return Err("needs at least one input".into());
            }
            let mut acc = xs[0].clone();
            if xs.len() == 1 {
                return one(acc);
            }
            for (k, x) in xs.iter().enumerate().skip(1) {
                let n = if k + 1 == xs.len() {
                    name.to_string()
                } else {
                    format!("{name}/{k}")
                };
                acc = ctx.emit1(&n, Op::Binary(b), &[acc, x.clone()], false)?;
            }
            one(acc)
        }
        "Where" => {
            let (c, x, y) = (req(0)?, req(1)?, req(2)?);
            one(ctx.emit1(name, Op::Where, &[c, x, y], true)?)
        }
        "Cast" => {
            let to = a.int("to").ok_or("attribute 'to' is missing")?;
            // A narrow target is held widened; `narrowing` rounds or wraps after.
            let to = crate::proto::held_as(to as i32).ok_or_else(|| {
                format!(
                    "cast to {} is not supported (supported: {SUPPORTED_TYPES})",
                    onnx_type_name(to as i32)
                )
            })?;
            let x = req(0)?;
            if ctx.ty(&x).dtype == to {
                return one(x);
            }
            one(ctx.emit1(name, Op::Cast { to }, &[x], true)?)
        }
        "MatMul" => {
            let (x, y) = (req(0)?, req(1)?);
            one(ctx.emit1(name, Op::MatMul, &[x, y], false)?)
        }
        "Gemm" if ctx.ty(&req(0)?).dtype == DType::F64 => {
            // In f64 as its definition: transposes, MatMul, alpha, beta C (0 * NaN is NaN).
            let (x, w, c) = (req(0)?, req(1)?, inp(2));
            let mut s = steps::Steps::new(ctx, name);
            let trans = |s: &mut steps::Steps, v: Val, t: bool| -> R<Val> {
                if t {
                    s.transpose(&v, vec![1, 0])
                } else {
                    Ok(v)
                }
            };
            let xa = trans(&mut s, x, a.int_or("transA", 0) != 0)?;
            let wb = trans(&mut s, w, a.int_or("transB", 0) != 0)?;
            let mut y = s.op(Op::MatMul, &[xa, wb])?;
            let alpha = a.float_or("alpha", 1.0);
            if alpha != 1.0 {
                let k = s.scalar(alpha, DType::F64)?;
                y = s.binary(BinaryOp::Mul, &y, &k)?;
            }
            if let Some(c) = c {
                let beta = a.float_or("beta", 1.0);
                let c = if beta != 1.0 {
                    let k = s.scalar(beta, DType::F64)?;
                    s.binary(BinaryOp::Mul, &c, &k)?
                } else {
                    c
                };
                y = s.binary(BinaryOp::Add, &y, &c)?;
            }
            one(s.last(Op::Unary(UnaryOp::Identity), &[y])?)
        }
        "Gemm" => {
            let op = Op::Gemm {
                alpha: a.float_or("alpha", 1.0),
                beta: a.float_or("beta", 1.0),
                trans_a: a.int_or("transA", 0) != 0,
                trans_b: a.int_or("transB", 0) != 0,
            };
            let mut ins = vec![req(0)?, req(1)?];
            if let Some(c) = inp(2) {
                ins.push(c);
            }
            one(ctx.emit1(name, op, &ins, false)?)
        }
        "Conv" => {
            let x = req(0)?;
            let w = req(1)?;
            let (window, group) = conv_attrs(&a, &ctx.ty(&x), &ctx.ty(&w))?;
            let mut ins = vec![x, w];
            if let Some(b) = inp(2) {
                ins.push(b);
            }
            one(ctx.emit1(name, Op::Conv { window, group }, &ins, false)?)
        }
        "QuantizeLinear"
        | "DequantizeLinear"
        | "DynamicQuantizeLinear"
        | "MatMulInteger"
        | "ConvInteger"
        | "QLinearMatMul"
        | "QLinearConv" => quantization::convert(ctx, node, name),
        "If" | "Loop" | "Scan" => control_flow::convert(ctx, node, name),
        "Attention" => attention::convert(ctx, node, name),
        "ConvTranspose" => conv_transpose::convert(ctx, node, name),
        "Resize" | "Upsample" => resize::convert(ctx, node, name),
        "RotaryEmbedding" => rotary::convert(ctx, node, name),
        "GridSample" => grid_sample::convert(ctx, node, name),
        "AffineGrid" => affine_grid::convert(ctx, node, name),
        "BitCast" => bitcast::convert(ctx, node, name),
        "Col2Im" => col2im::convert(ctx, node, name),
        "Det" => determinant::convert(ctx, node, name),
        "DeformConv" => deform_conv::convert(ctx, node, name),
        "MaxUnpool" => max_unpool::convert(ctx, node, name),
        "MelWeightMatrix" => mel_weights::convert(ctx, node, name),
        "TensorScatter" => tensor_scatter::convert(ctx, node, name),
        "TfIdfVectorizer" => tfidf::convert(ctx, node, name),
        op if decompose::OPS.contains(&op) => decompose::convert(ctx, node, name),
        "RNN" | "GRU" | "LSTM" => recurrent::convert(ctx, node, name),
        "MaxPool" | "AveragePool" => {
            let x = req(0)?;
            let xt = ctx.ty(&x);
            let k = a
                .ints("kernel_shape")
                .ok_or("attribute 'kernel_shape' is missing")?;
            let kernel = dims_of(&k, "kernel_shape")?;
            if xt.rank() != kernel.len() + 2 {
                return Err(format!(
                    "kernel_shape {k:?} does not match input {xt} (rank must be {})",
                    kernel.len() + 2
                ));
            }
            let ceil = a.int_or("ceil_mode", 0) != 0;
            let window = window(&a, &xt, kernel, ceil)?;
            let indices = match node.output.get(1) {
                Some(i) if !i.is_empty() && op_type == "MaxPool" => {
                    let order = a.int_or("storage_order", 0);
                    if !(0..=1).contains(&order) {
                        return Err(format!("storage_order {order} is not 0 or 1"));
                    }
                    let mut s = steps::Steps::new(ctx, &format!("{name}/indices"));
                    Some(pool_indices::max_pool_indices(&mut s, &x, &window, order)?)
                }
                _ => None,
            };
            let op = if op_type == "MaxPool" {
                Op::MaxPool { window }
            } else {
                Op::AveragePool {
                    window,
                    count_include_pad: a.int_or("count_include_pad", 0) != 0,
                }
            };
            if op_type == "MaxPool" && matches!(xt.dtype, DType::U8 | DType::I8) {
                // Every int8 and uint8 value is an f32 and a window's largest is the same in
                // either type: pooled in f32 between two exact casts (a window holds at least
                // one input, so the padding never wins).
                let to_f32 = Op::Cast { to: DType::F32 };
                let f = ctx.emit1(&format!("{name}/to_f32"), to_f32, &[x], true)?;
                let p = ctx.emit1(&format!("{name}/pool"), op, &[f], false)?;
                let back = Op::Cast { to: xt.dtype };
                return Ok(vec![Some(ctx.emit1(name, back, &[p], true)?), indices]);
            }
            Ok(vec![Some(ctx.emit1(name, op, &[x], false)?), indices])
        }
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = req(0)?;
            let r = ctx.ty(&x).rank();
            if r < 3 {
                return Err(format!("input must have rank >= 3, got {}", ctx.ty(&x)));
            }
            let kind = if op_type == "GlobalMaxPool" {
                ReduceKind::Max
            } else {
                ReduceKind::Mean
            };
            let op = Op::Reduce {
                kind,
                axes: (2..r).collect(),
                keepdims: true,
            };
            one(ctx.emit1(name, op, &[x], false)?)
        }
        "BatchNormalization" => {
            if opset < 9 && a.int_or("spatial", 1) == 0 {
                return Err("spatial=0 is not supported".into());
            }
            let ins: Vec<Val> = (0..5).map(req).collect::<R<_>>()?;
            let epsilon = a.float_or("epsilon", 1e-5);
            if a.int_or("training_mode", 0) != 0 {
                let momentum = a.float_or("momentum", 0.9);
                let outs = decompose::batch_norm_training(ctx, name, &ins, epsilon, momentum)?;
                return Ok(outs.into_iter().map(Some).collect());
            }
            let v = if ctx.ty(&ins[0]).dtype == DType::F64 {
                decompose::batch_norm_f64(ctx, name, &ins, epsilon)?
            } else {
                ctx.emit1(name, Op::BatchNorm { epsilon }, &ins, false)?
            };
            Ok(vec![Some(v), None, None, None, None])
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceL2" | "ReduceMin" | "ReduceProd" => {
            let kind = match op_type {
                "ReduceMean" => ReduceKind::Mean,
                "ReduceSum" => ReduceKind::Sum,
                "ReduceMax" => ReduceKind::Max,
                "ReduceMin" => ReduceKind::Min,
                "ReduceProd" => ReduceKind::Prod,
                _ => ReduceKind::L2,
            };
            let x = req(0)?;
            let r = ctx.ty(&x).rank();
            let axes_from_input = if op_type == "ReduceSum" {
                opset >= 13
            } else {
                opset >= 18
            };
            let axes = if axes_from_input {
                cinp(1, "axes")?.map(|t| t.to_i64_vec())
            } else {
                a.ints("axes")
            };
            let Some((ax, keepdims)) = reduce_axes(&a, r, axes)? else {
                return one(x);
            };
            let op = Op::Reduce {
                kind,
                axes: ax,
                keepdims,
            };
            one(ctx.emit1(name, op, &[x], false)?)
        }
        "Softmax" => {
            let x = req(0)?;
            let xt = ctx.ty(&x);
            let r = xt.rank();
            let narrow = ctx.narrow.get(&node.input[0]).copied();
            if opset >= 13 {
                let axis = norm_axis(a.int_or("axis", -1), r, "axis")?;
                match narrow.filter(|n| n.wide() == DType::F32) {
                    Some(n) => one(narrowing::softmax(ctx, name, x, axis, n)?),
                    None => one(ctx.emit1(name, Op::Softmax { axis }, &[x], false)?),
                }
            } else {
                let axis = norm_axis(a.int_or("axis", 1), r, "axis")?;
                if axis + 1 == r {
                    return one(ctx.emit1(name, Op::Softmax { axis }, &[x], false)?);
                }
                let outer: usize = xt.shape[..axis].iter().product();
                let inner: usize = xt.shape[axis..].iter().product();
                let flat = ctx.emit1(
                    &format!("{name}/reshape_in"),
                    Op::Reshape {
                        shape: vec![outer, inner],
                    },
                    &[x],
                    false,
                )?;
                let s = ctx.emit1(name, Op::Softmax { axis: 1 }, &[flat], false)?;
                one(ctx.emit1(
                    &format!("{name}/reshape_out"),
                    Op::Reshape {
                        shape: xt.shape.clone(),
                    },
                    &[s],
                    false,
                )?)
            }
        }
        "LayerNormalization" => {
            let x = req(0)?;
            let r = ctx.ty(&x).rank();
            let axis = norm_axis(a.int_or("axis", -1), r, "axis")?;
            let mut ins = vec![x, req(1)?];
            if let Some(b) = inp(2) {
                ins.push(b);
            }
            let epsilon = a.float_or("epsilon", 1e-5);
            let stats = if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                let (mean, inv) =
                    decompose::layer_norm_statistics(ctx, name, &ins[0], axis, epsilon)?;
                (Some(mean), Some(inv))
            } else {
                (None, None)
            };
            let y = if ctx.ty(&ins[0]).dtype == DType::F64 {
                decompose::layer_norm_f64(ctx, name, &ins, axis, epsilon)?
            } else {
                ctx.emit1(name, Op::LayerNorm { axis, epsilon }, &ins, false)?
            };
            Ok(vec![Some(y), stats.0, stats.1])
        }
        "Flatten" => {
            let x = req(0)?;
            let xt = ctx.ty(&x);
            let r = xt.rank();
            let mut axis = a.int_or("axis", 1);
            if axis < 0 {
                axis += r as i64;
            }
            if axis < 0 || axis > r as i64 {
                return Err(format!(
                    "axis {} is out of range for {}",
                    a.int_or("axis", 1),
                    xt
                ));
            }
            let axis = axis as usize;
            let outer: usize = xt.shape[..axis].iter().product();
            let inner: usize = xt.shape[axis..].iter().product();
            let op = Op::Reshape {
                shape: vec![outer, inner],
            };
            one(ctx.emit1(name, op, &[x], true)?)
        }
        "Reshape" => {
            let x = req(0)?;
            let xt = ctx.ty(&x);
            let spec = if opset < 5 {
                a.ints("shape").ok_or("attribute 'shape' is missing")?
            } else {
                cinp(1, "shape")?
                    .ok_or("the shape input is missing")?
                    .to_i64_vec()
            };
            let shape = reshape_target(&xt.shape, &spec, a.int_or("allowzero", 0) != 0)?;
            one(ctx.emit1(name, Op::Reshape { shape }, &[x], true)?)
        }
        "Squeeze" => {
            let x = req(0)?;
            let xt = ctx.ty(&x);
            let axes = if opset >= 13 {
                cinp(1, "axes")?.map(|t| t.to_i64_vec())
            } else {
                a.ints("axes")
            };
            let r = xt.rank();
            let drop: Vec<usize> = match axes {
                Some(ax) => {
                    let mut v = ax
                        .iter()
                        .map(|&x| norm_axis(x, r, "axis"))
                        .collect::<R<Vec<_>>>()?;
                    v.sort();
                    v.dedup();
                    for &d in &v {
                        if xt.shape[d] != 1 {
                            return Err(format!("cannot squeeze dim {d} of {xt}: it is not 1"));
                        }
                    }
                    v
                }
                None => (0..r).filter(|&d| xt.shape[d] == 1).collect(),
            };
            let shape: Vec<usize> = (0..r)
                .filter(|d| !drop.contains(d))
                .map(|d| xt.shape[d])
                .collect();
            one(ctx.emit1(name, Op::Reshape { shape }, &[x], true)?)
        }
        "Unsqueeze" => {
            let x = req(0)?;
            let xt = ctx.ty(&x);
            let axes = if opset >= 13 {
                cinp(1, "axes")?
                    .ok_or("the axes input is missing")?
                    .to_i64_vec()
            } else {
                a.ints("axes").ok_or("attribute 'axes' is missing")?
            };
            let out_r = xt.rank() + axes.len();
            let mut ax: Vec<usize> = axes
                .iter()
                .map(|&x| norm_axis(x, out_r, "axis"))
                .collect::<R<_>>()?;
            ax.sort();
            let n = ax.len();
            ax.dedup();
            if ax.len() != n {
                return Err(format!("axes {axes:?} repeat an axis"));
            }
            let mut shape = Vec::with_capacity(out_r);
            let mut it = xt.shape.iter();
            for d in 0..out_r {
                if ax.contains(&d) {
                    shape.push(1);
                } else {
                    shape.push(*it.next().ok_or("bad axes")?);
                }
            }
            one(ctx.emit1(name, Op::Reshape { shape }, &[x], true)?)
        }
        "Transpose" => {
            let x = req(0)?;
            let r = ctx.ty(&x).rank();
            let perm = match a.ints("perm") {
                Some(p) => dims_of(&p, "perm")?,
                None => (0..r).rev().collect(),
            };
            one(ctx.emit1(name, Op::Transpose { perm }, &[x], false)?)
        }
        "Concat" => {
            let xs: Vec<Val> = (0..nin).map(req).collect::<R<_>>()?;
            if xs.is_empty() {
                return Err("needs at least one input".into());
            }
            let r = ctx.ty(&xs[0]).rank();
            let axis = norm_axis(
                a.int("axis").ok_or("attribute 'axis' is missing")?,
                r,
                "axis",
            )?;
            one(ctx.emit1(name, Op::Concat { axis }, &xs, true)?)
        }
        "Split" => {
            let x = req(0)?;
            let xt = ctx.ty(&x);
            let axis = norm_axis(a.int_or("axis", 0), xt.rank(), "axis")?;
            let d = xt.shape[axis];
            let split = if opset >= 13 {
                cinp(1, "split")?.map(|t| t.to_i64_vec())
            } else {
                a.ints("split")
            };
            let sizes = match split {
                Some(s) => dims_of(&s, "split")?,
                None => {
                    let n = if opset >= 18 && a.has("num_outputs") {
                        a.int_or("num_outputs", 0)
                    } else {
                        node.output.len() as i64
                    };
                    if n <= 0 || n as usize != node.output.len() {
                        return Err(format!(
                            "num_outputs {n} does not match the node's {} outputs",
                            node.output.len()
                        ));
                    }
                    let n = n as usize;
                    let chunk = d.div_ceil(n);
                    if opset < 18 && !d.is_multiple_of(n) {
                        return Err(format!(
                            "dim {d} of axis {axis} does not split evenly into {n} outputs"
                        ));
                    }
                    let mut v = vec![chunk; n];
                    let last = d
                        .checked_sub(chunk * (n - 1))
                        .ok_or_else(|| format!("dim {d} cannot be split into {n} outputs"))?;
                    v[n - 1] = last;
                    v
                }
            };
            if sizes.len() != node.output.len() {
                return Err(format!(
                    "{} split sizes for {} outputs",
                    sizes.len(),
                    node.output.len()
                ));
            }
            let outs = ctx.emit(name, Op::Split { axis, sizes }, &[x], false)?;
            Ok(outs.into_iter().map(Some).collect())
        }
        "Slice" => {
            let x = req(0)?;
            let xt = ctx.ty(&x);
            let (starts, ends, axes, steps) = if opset < 10 {
                (
                    a.ints("starts").ok_or("attribute 'starts' is missing")?,
                    a.ints("ends").ok_or("attribute 'ends' is missing")?,
                    a.ints("axes"),
                    None,
                )
            } else {
                (
                    cinp(1, "starts")?
                        .ok_or("starts input is missing")?
                        .to_i64_vec(),
                    cinp(2, "ends")?
                        .ok_or("ends input is missing")?
                        .to_i64_vec(),
                    cinp(3, "axes")?.map(|t| t.to_i64_vec()),
                    cinp(4, "steps")?.map(|t| t.to_i64_vec()),
                )
            };
            let dims = slice_dims(&xt.shape, &starts, &ends, axes, steps)?;
            one(ctx.emit1(name, Op::Slice { dims }, &[x], true)?)
        }
        "Pad" => {
            let x = req(0)?;
            let xt = ctx.ty(&x);
            let r = xt.rank();
            let m = a.string("mode");
            let m = m.as_deref().unwrap_or("constant");
            let mode = PadMode::from_name(m)
                .ok_or_else(|| format!("mode '{m}' is not supported ({})", PadMode::names()))?;
            let (raw, value, axes) = if opset < 11 {
                (
                    a.ints("pads").ok_or("attribute 'pads' is missing")?,
                    a.float_or("value", 0.0),
                    None,
                )
            } else {
                let p = cinp(1, "pads")?
                    .ok_or("pads input is missing")?
                    .to_i64_vec();
                let v = match cinp(2, "constant_value")? {
                    Some(t) => scalar_f32(&t, "constant_value")?,
                    None => 0.0,
                };
                let ax = if opset >= 18 {
                    cinp(3, "axes")?.map(|t| t.to_i64_vec())
                } else {
                    None
                };
                (p, v, ax)
            };
            let pads = match axes {
                None => {
                    if raw.len() != 2 * r {
                        return Err(format!("needs {} pads for {xt}, got {raw:?}", 2 * r));
                    }
                    raw
                }
                Some(ax) => {
                    if raw.len() != 2 * ax.len() {
                        return Err(format!(
                            "needs {} pads for axes {ax:?}, got {raw:?}",
                            2 * ax.len()
                        ));
                    }
                    let mut p = vec![0i64; 2 * r];
                    for (k, &axv) in ax.iter().enumerate() {
                        let d = norm_axis(axv, r, "axis")?;
                        p[d] = raw[k];
                        p[r + d] = raw[ax.len() + k];
                    }
                    p
                }
            };
            if pads.iter().any(|p| p.unsigned_abs() > LIMIT_DIM as u64) {
                return Err(format!("pads {pads:?} are absurdly large"));
            }
            one(ctx.emit1(name, Op::Pad { pads, mode, value }, &[x], false)?)
        }
        "Gather" => {
            let (d, i) = (req(0)?, req(1)?);
            let dt = ctx.ty(&d);
            let axis = norm_axis(a.int_or("axis", 0), dt.rank(), "axis")?;
            // A run of consecutive constant indices (a scalar: `qkv[0]`) from a computed
            // tensor is a slice (a vector copy; a gather checks each index at run time).
            if let (Val::Dyn(_), Val::Const { t, .. }) = (&d, &i) {
                let n = dt.shape[axis] as i64;
                let idx = t.to_i64_vec();
                let run = !idx.is_empty()
                    && matches!(t.dtype(), DType::I64 | DType::I32)
                    && t.shape().len() <= 1
                    && idx.iter().all(|&v| (-n..n).contains(&v))
                    && idx
                        .windows(2)
                        .all(|w| w[1].rem_euclid(n) == w[0].rem_euclid(n) + 1);
                if run {
                    let mut dims: Vec<SliceDim> =
                        dt.shape.iter().map(|&len| SliceDim::whole(len)).collect();
                    dims[axis] = SliceDim {
                        start: idx[0].rem_euclid(n),
                        step: 1,
                        len: idx.len(),
                    };
                    if t.shape().is_empty() {
                        let sl =
                            ctx.emit1(&format!("{name}/slice"), Op::Slice { dims }, &[d], true)?;
                        let mut shape = dt.shape.clone();
                        shape.remove(axis);
                        return one(ctx.emit1(name, Op::Reshape { shape }, &[sl], true)?);
                    }
                    return one(ctx.emit1(name, Op::Slice { dims }, &[d], true)?);
                }
            }
            one(ctx.emit1(name, Op::Gather { axis }, &[d, i], true)?)
        }
        "Einsum" => einsum::convert(ctx, node, name),
        "ArgMax" | "ArgMin" | "CumSum" | "CumProd" | "TopK" | "GatherElements" | "GatherND"
        | "ScatterElements" | "Scatter" | "ScatterND" => indexing::convert(ctx, node, name),
        "Expand" => {
            let x = req(0)?;
            let s = cinp(1, "shape")?.ok_or("shape input is missing")?;
            let shape = dims_of(&s.to_i64_vec(), "shape")?;
            one(ctx.emit1(name, Op::Expand { shape }, &[x], true)?)
        }
        "Constant" => {
            let t = if let Some(t) = a.tensor("value")? {
                t
            } else if let Some(f) = a.float("value_float") {
                Tensor::scalar_f32(f)
            } else if let Some(v) = a.floats("value_floats") {
                Tensor::from_f32(vec![v.len()], v).map_err(|e| e.msg)?
            } else if let Some(i) = a.int("value_int") {
                Tensor::scalar_i64(i)
            } else if let Some(v) = a.ints("value_ints") {
                Tensor::from_i64(vec![v.len()], v).map_err(|e| e.msg)?
            } else if a.has("sparse_value") || a.has("value_string") || a.has("value_strings") {
                return Err("sparse and string constants are not supported".into());
            } else {
                return Err("no value attribute".into());
            };
            one(Val::Const {
                t: Arc::new(t),
                name: name.to_string(),
            })
        }
        "Shape" => {
            let s = ty0(ctx)?.shape;
            let r = s.len() as i64;
            let clampi = |v: i64| -> usize {
                let v = if v < 0 { v + r } else { v };
                v.clamp(0, r) as usize
            };
            let start = clampi(a.int_or("start", 0));
            let end = clampi(a.int_or("end", r));
            let v: Vec<i64> = if start < end {
                s[start..end].iter().map(|&d| d as i64).collect()
            } else {
                vec![]
            };
            let t = Tensor::from_i64(vec![v.len()], v).map_err(|e| e.msg)?;
            one(Val::Const {
                t: Arc::new(t),
                name: name.to_string(),
            })
        }
        "Size" => {
            let n = ty0(ctx)?.numel() as i64;
            one(Val::Const {
                t: Arc::new(Tensor::scalar_i64(n)),
                name: name.to_string(),
            })
        }
        "ConstantOfShape" => {
            let s = match inp(0) {
                Some(Val::Const { t, .. }) => t,
                other => {
                    if let Some(i) = node.input.first() {
                        want_const(i);
                    }
                    if let Some(v) = &other {
                        ctx.want(v);
                    }
                    return Err(
                        "needs a constant shape input, but it is computed at run time".into(),
                    );
                }
            };
            let shape = dims_of(&s.to_i64_vec(), "shape")?;
            let n = checked_numel(&shape).map_err(|e| e.msg)?;
            if n > CREATE_MAX {
                return Err(format!("shape {shape:?} is too large"));
            }
            let value = a
                .tensor("value")?
                .unwrap_or_else(|| Tensor::scalar_f32(0.0));
            if value.numel() != 1 {
                return Err("attribute 'value' must hold one element".into());
            }
            let data = match value.data() {
                Data::F32(v) => Data::F32(vec![v[0]; n]),
                Data::I64(v) => Data::I64(vec![v[0]; n]),
                Data::I32(v) => Data::I32(vec![v[0]; n]),
                Data::Bool(v) => Data::Bool(vec![v[0]; n]),
                Data::U8(v) => Data::U8(vec![v[0]; n]),
                Data::I8(v) => Data::I8(vec![v[0]; n]),
                Data::F64(v) => Data::F64(vec![v[0]; n]),
            };
            one(Val::Const {
                t: Arc::new(Tensor::new(shape, data).map_err(|e| e.msg)?),
                name: name.to_string(),
            })
        }
        "Range" => {
            let mut cs = vec![];
            for (k, what) in ["start", "limit", "delta"].iter().enumerate() {
                match inp(k) {
                    Some(Val::Const { t, .. }) if t.numel() == 1 => cs.push(t),
                    Some(Val::Const { .. }) => return Err(format!("{what} must be a scalar")),
                    other => {
                        if let Some(i) = node.input.get(k) {
                            want_const(i);
                        }
                        if let Some(v) = &other {
                            ctx.want(v);
                        }
                        return Err(format!(
                            "needs a constant {what}, but it is computed at run time"
                        ));
                    }
                }
            }
            one(Val::Const {
                t: Arc::new(range(&cs[0], &cs[1], &cs[2])?),
                name: name.to_string(),
            })
        }
        "NonZero" => {
            // The output's shape is the count of nonzero elements: known only for a
            // constant input (a graph input's value given to `optc run` binds it).
            let t = cinp(0, "input")?.ok_or("required input #0 is missing")?;
            one(Val::constant(nonzero(&t)?, name.to_string()))
        }
        other => Err(format!("op {other} is not supported")),
    }
}

/// ONNX `NonZero`: the indices of the nonzero elements, [rank, count] (row-major order;
/// a scalar counts as one element of rank 1).
fn nonzero(t: &Tensor) -> R<Tensor> {
    let shape = if t.shape().is_empty() {
        vec![1]
    } else {
        t.shape().to_vec()
    };
    let values = t.to_f64_vec();
    let hits: Vec<usize> = (0..values.len()).filter(|&i| values[i] != 0.0).collect();
    let rank = shape.len();
    let mut out = vec![0i64; rank * hits.len()];
    for (j, &i) in hits.iter().enumerate() {
        for (axis, position) in steps::unflatten(i, &shape).into_iter().enumerate() {
            out[axis * hits.len() + j] = position as i64;
        }
    }
    Tensor::new(vec![rank, hits.len()], Data::I64(out)).map_err(|e| e.msg)
}

fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> R<Tensor> {
    let dt = start.dtype();
    if limit.dtype() != dt || delta.dtype() != dt {
        return Err("start, limit and delta must have the same type".into());
    }
    let (s, l, d) = (
        start.to_f64_vec()[0],
        limit.to_f64_vec()[0],
        delta.to_f64_vec()[0],
    );
    if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
        return Err("delta must be non-zero and all bounds finite".into());
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if n > CREATE_MAX as f64 {
        return Err(format!("range of {n} elements is too large"));
    }
    let n = n as usize;
    let data = match dt {
        DType::F32 => {
            let (s, d) = (start.to_f64_vec()[0] as f32, delta.to_f64_vec()[0] as f32);
            Data::F32((0..n).map(|i| s + i as f32 * d).collect())
        }
        DType::I64 | DType::I32 => {
            let (s, d) = (start.to_i64_vec()[0], delta.to_i64_vec()[0]);
            let v: Vec<i64> = (0..n as i64).map(|i| s + i * d).collect();
            if dt == DType::I64 {
                Data::I64(v)
            } else {
                Data::I32(v.into_iter().map(|x| x as i32).collect())
            }
        }
        _ => return Err(format!("range of {dt} is not supported")),
    };
    Tensor::new(vec![n], data).map_err(|e| e.msg)
}

/// Target shape of an ONNX Reshape.
fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> R<Vec<usize>> {
    let total = checked_numel(input).map_err(|e| e.msg)?;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 => {
                if infer.is_some() {
                    return Err(format!("shape {spec:?} has more than one -1"));
                }
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => match input.get(i) {
                Some(&d) => out.push(d),
                None => {
                    return Err(format!(
                        "shape {spec:?} copies dim {i} (0), but the input {input:?} has no dim {i}"
                    ))
                }
            },
            s if s < 0 => return Err(format!("shape {spec:?} has a negative dim")),
            s => out.push(usize::try_from(s).map_err(|_| format!("dim {s} too large"))?),
        }
    }
    let known = checked_numel(&out).map_err(|e| e.msg)?;
    if let Some(i) = infer {
        if known == 0 || total % known != 0 {
            return Err(format!(
                "cannot reshape {input:?} ({total} elements) to {spec:?}"
            ));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} elements) to {spec:?} ({known} elements)"
        ));
    }
    Ok(out)
}

/// ONNX Slice semantics → one `SliceDim` per input dim.
fn slice_dims(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
) -> R<Vec<SliceDim>> {
    let r = shape.len();
    let axes: Vec<i64> = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if starts.len() != ends.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"
        ));
    }
    let mut dims: Vec<SliceDim> = shape.iter().map(|&d| SliceDim::whole(d)).collect();
    let mut seen = vec![false; r];
    for k in 0..starts.len() {
        let ax = norm_axis(axes[k], r, "axis")?;
        if seen[ax] {
            return Err(format!("axis {} is sliced twice", axes[k]));
        }
        seen[ax] = true;
        let d = shape[ax] as i128;
        let step = steps[k] as i128;
        if step == 0 {
            return Err("step 0 is not allowed".into());
        }
        let mut s = starts[k] as i128;
        let mut e = ends[k] as i128;
        if s < 0 {
            s += d;
        }
        if e < 0 {
            e += d;
        }
        let len = if step > 0 {
            s = s.clamp(0, d);
            e = e.clamp(0, d);
            if e > s {
                (e - s + step - 1) / step
            } else {
                0
            }
        } else {
            s = s.clamp(0, (d - 1).max(0));
            e = e.clamp(-1, d - 1);
            if s > e && d > 0 {
                (s - e + (-step) - 1) / (-step)
            } else {
                0
            }
        };
        dims[ax] = if len == 0 {
            SliceDim {
                start: 0,
                step: 1,
                len: 0,
            }
        } else {
            SliceDim {
                start: s as i64,
                step: step as i64,
                len: len as usize,
            }
        };
    }
    Ok(dims)
}

/// The window and group of a conv (Conv, ConvInteger, QLinearConv) of input `xt` with weight
/// `wt`.
fn conv_attrs(a: &Attrs, xt: &TensorType, wt: &TensorType) -> R<(Window, usize)> {
    if wt.rank() < 3 || xt.rank() != wt.rank() {
        return Err(format!(
            "input {} and weight {} must have the same rank >= 3",
            xt, wt
        ));
    }
    let kernel = match a.ints("kernel_shape") {
        Some(k) => dims_of(&k, "kernel_shape")?,
        None => wt.shape[2..].to_vec(),
    };
    let window = window(a, xt, kernel, false)?;
    let group = a.int_or("group", 1);
    let group = usize::try_from(group)
        .ok()
        .filter(|&g| g <= LIMIT_DIM)
        .ok_or_else(|| format!("bad group {group}"))?;
    Ok((window, group))
}

/// Window attributes of Conv / pools, with auto_pad resolved.
fn window(a: &Attrs, xt: &TensorType, kernel: Vec<usize>, ceil_mode: bool) -> R<Window> {
    let nsp = kernel.len();
    if xt.rank() != nsp + 2 {
        return Err(format!(
            "kernel of {nsp} spatial dims does not match input {xt}"
        ));
    }
    let get = |n: &str, default: usize, len: usize| -> R<Vec<usize>> {
        match a.ints(n) {
            Some(v) => {
                if v.len() != len {
                    return Err(format!("attribute '{n}' {v:?} needs {len} entries"));
                }
                dims_of(&v, n)
            }
            None => Ok(vec![default; len]),
        }
    };
    let strides = get("strides", 1, nsp)?;
    let dilations = get("dilations", 1, nsp)?;
    let absurd = |v: &[usize]| v.iter().any(|&x| x > LIMIT_DIM);
    if absurd(&kernel) || absurd(&strides) || absurd(&dilations) {
        return Err("kernel, strides or dilations are absurdly large".into());
    }
    if strides.contains(&0) || dilations.contains(&0) {
        return Err("strides and dilations must be >= 1".into());
    }
    let auto_pad = a.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let pads = match auto_pad.as_str() {
        "NOTSET" | "" => get("pads", 0, 2 * nsp)?,
        "VALID" => vec![0; 2 * nsp],
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut p = vec![0; 2 * nsp];
            for i in 0..nsp {
                let inp = xt.shape[i + 2];
                let out = inp.div_ceil(strides[i]);
                let eff = dilations[i] * (kernel[i].max(1) - 1) + 1;
                let total = ((out.saturating_sub(1)) * strides[i] + eff).saturating_sub(inp);
                let small = total / 2;
                let big = total - small;
                if auto_pad == "SAME_UPPER" {
                    p[i] = small;
                    p[nsp + i] = big;
                } else {
                    p[i] = big;
                    p[nsp + i] = small;
                }
            }
            p
        }
        other => return Err(format!("auto_pad '{other}' is not supported")),
    };
    if absurd(&pads) {
        return Err(format!("pads {pads:?} are absurdly large"));
    }
    Ok(Window {
        kernel,
        strides,
        pads,
        dilations,
        ceil_mode,
    })
}
