//! The e-class analysis: dtype and shape of every class, and constant-ness, with
//! constant folding through the reference interpreter.

use crate::lang::{ENode, ENodeKind};
use egg::{DidMerge, EGraph, Id};
use optc_ir::{ConstId, Op, Tensor, TensorType};
use std::collections::HashMap;
use std::sync::Arc;

/// Per-class facts.
#[derive(Clone, Debug, PartialEq)]
pub struct Data {
    /// Output types: one for ordinary values, several for a multi-output op's tuple.
    /// Empty when the class holds an ill-typed term (a rule built something that does not
    /// type-check); such terms are never extracted.
    pub types: Vec<TensorType>,
    /// The class is the constant `konst`.
    pub konst: Option<ConstId>,
}

impl Data {
    /// The single type of a value class.
    pub fn ty(&self) -> Option<&TensorType> {
        match self.types.as_slice() {
            [t] => Some(t),
            _ => None,
        }
    }
}

/// The analysis state: graph input types and the constant table (the IR's constants plus
/// those the optimizer creates).
#[derive(Clone, Debug, Default)]
pub struct OptAnalysis {
    pub input_types: Vec<TensorType>,
    pub consts: Vec<Arc<Tensor>>,
    /// Constants by [`Tensor::fingerprint`].
    by_digest: HashMap<u64, Vec<ConstId>>,
    /// Fold ops whose inputs are all constant, when the result has at most
    /// `max(fold_limit, largest input)` elements, so folding never grows the model
    /// (0 disables folding).
    pub fold_limit: usize,
    /// Classes of the graph outputs (used outside the graph).
    pub roots: Vec<Id>,
}

pub type OptEGraph = EGraph<ENode, OptAnalysis>;

impl OptAnalysis {
    pub fn new(input_types: Vec<TensorType>, consts: Vec<Arc<Tensor>>, fold_limit: usize) -> Self {
        let mut a = OptAnalysis {
            input_types,
            consts: vec![],
            by_digest: HashMap::new(),
            fold_limit,
            roots: vec![],
        };
        for c in consts {
            a.consts.push(c.clone());
            let id = ConstId(a.consts.len() as u32 - 1);
            a.by_digest.entry(c.fingerprint()).or_default().push(id);
        }
        a
    }

    /// Intern a constant (identical tensors share an id).
    pub fn intern(&mut self, t: Tensor) -> ConstId {
        let d = t.fingerprint();
        if let Some(ids) = self.by_digest.get(&d) {
            for &id in ids {
                if self.consts[id.0 as usize].identical(&t) {
                    return id;
                }
            }
        }
        self.consts.push(Arc::new(t));
        let id = ConstId(self.consts.len() as u32 - 1);
        self.by_digest.entry(d).or_default().push(id);
        id
    }

    pub fn tensor(&self, id: ConstId) -> &Arc<Tensor> {
        &self.consts[id.0 as usize]
    }
}

fn fold(egraph: &mut OptEGraph, op: &Op, children: &[Id], out: &TensorType) -> Option<ConstId> {
    let limit = egraph.analysis.fold_limit;
    // A DequantizeLinear of constants would quadruple int8 weights into f32 ones before the
    // rules of `passes/quantize` see them (they put the int8 weights into int8 ops, and fold
    // the rest themselves: `dequantize-constant`).
    if limit == 0 || matches!(op, Op::DequantizeLinear { .. }) {
        return None;
    }
    let mut ins = Vec::with_capacity(children.len());
    for &c in children {
        let id = egraph[c].data.konst?;
        ins.push(egraph.analysis.tensor(id).clone());
    }
    // Never grow the model: the result may be as large as the largest input, or `limit`.
    let largest = ins.iter().map(|t| t.numel()).max().unwrap_or(0);
    if out.numel() > limit.max(largest) {
        return None;
    }
    let refs: Vec<&Tensor> = ins.iter().map(|t| t.as_ref()).collect();
    let mut outs = optc_ir::interp::eval_op(op, &refs).ok()?;
    if outs.len() != 1 {
        return None;
    }
    Some(egraph.analysis.intern(outs.pop()?))
}

/// Whether `class`'s only consumer is `user` (and it is not a graph output): then fusing
/// it into `user` does not compute it twice.
pub fn single_user(egraph: &OptEGraph, class: Id, user: Id) -> bool {
    let class = egraph.find(class);
    let user = egraph.find(user);
    if is_root(egraph, class) {
        return false;
    }
    only_feeds(egraph, class, user, FEEDS_DEPTH)
}

/// How many consumers deep [`single_user`] follows a value to `user`: GELU's chain reads its
/// input four steps before the product that is `user` (`x r`, `erf`, `+ 1`, `x *`), one
/// more after a reshape (GPT-2's tanh GELU after its `Gemm`).
const FEEDS_DEPTH: usize = 5;

fn is_root(egraph: &OptEGraph, c: Id) -> bool {
    egraph.analysis.roots.iter().any(|&r| egraph.find(r) == c)
}

/// Whether every consumer of `class` is `user` or, within `depth` more consumers, only feeds
/// `user` (breadth first, each class once). Consumers are classes holding an unfused e-node
/// that reads the class; fused e-nodes are alternative forms of those consumers. A consumer
/// that only feeds `user` is part of another form of `user` (e.g. `Q` in `DQ(Q(x))` when
/// `user` also holds the fake-quantize of `x`, or GELU's chain when `user` also holds
/// `gelu(x)`): extraction takes one node of `user`, so never both. A consumer that can be
/// computed from `user` alone (a node of it reads only `user`: `reshape(gelu(x))` in the class
/// of `gelu(reshape(x))`) needs nothing else either. (A rule that adds inputs to the fused
/// node checks that they do not read `class`: `fuse-binary`.)
fn only_feeds(egraph: &OptEGraph, class: Id, user: Id, depth: usize) -> bool {
    let consumers = |c: Id| -> Vec<Id> {
        let mut v: Vec<Id> = egraph[c]
            .parents()
            .map(|p| egraph.find(p))
            .filter(|&p| {
                egraph[p].nodes.iter().any(|n| {
                    let fused = matches!(n.op(), Some(Op::Fused { .. }));
                    !fused && n.children.iter().any(|&k| egraph.find(k) == c)
                })
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let from_user = |p: Id| {
        egraph[p]
            .nodes
            .iter()
            .any(|n| !n.children.is_empty() && n.children.iter().all(|&k| egraph.find(k) == user))
    };
    let mut seen = std::collections::HashSet::from([class]);
    let mut level = vec![class];
    for d in 0..=depth {
        let mut next = vec![];
        for &c in &level {
            for p in consumers(c) {
                if p == user || from_user(p) || !seen.insert(p) {
                    continue;
                }
                if d == depth || is_root(egraph, p) {
                    return false;
                }
                next.push(p);
            }
        }
        if next.is_empty() {
            return true;
        }
        level = next;
    }
    true
}

impl egg::Analysis<ENode> for OptAnalysis {
    type Data = Data;

    fn make(egraph: &mut OptEGraph, enode: &ENode, _id: Id) -> Data {
        match &enode.kind {
            ENodeKind::Input(i) => Data {
                types: egraph
                    .analysis
                    .input_types
                    .get(*i)
                    .cloned()
                    .into_iter()
                    .collect(),
                konst: None,
            },
            ENodeKind::Const(c) => Data {
                types: egraph
                    .analysis
                    .consts
                    .get(c.0 as usize)
                    .map(|t| t.ty())
                    .into_iter()
                    .collect(),
                konst: Some(*c),
            },
            ENodeKind::Proj(i) => {
                let t = enode
                    .children
                    .first()
                    .and_then(|&c| egraph[c].data.types.get(*i).cloned());
                Data {
                    types: t.into_iter().collect(),
                    konst: None,
                }
            }
            ENodeKind::Op(k) => {
                let tys: Option<Vec<TensorType>> = enode
                    .children
                    .iter()
                    .map(|&c| egraph[c].data.ty().cloned())
                    .collect();
                let Some(tys) = tys else {
                    return Data {
                        types: vec![],
                        konst: None,
                    };
                };
                let refs: Vec<&TensorType> = tys.iter().collect();
                let types = k.op.infer(&refs).unwrap_or_default();
                let konst = match types.as_slice() {
                    [t] if !enode.children.is_empty() => {
                        let t = t.clone();
                        fold(egraph, &k.op, &enode.children, &t)
                    }
                    _ => None,
                };
                Data { types, konst }
            }
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed_a = false;
        if a.types.is_empty() && !b.types.is_empty() {
            a.types = b.types.clone();
            changed_a = true;
        }
        if a.konst.is_none() && b.konst.is_some() {
            a.konst = b.konst;
            changed_a = true;
        }
        let changed_b =
            (b.types.is_empty() && !a.types.is_empty()) || (b.konst.is_none() && a.konst.is_some());
        DidMerge(changed_a, changed_b)
    }

    fn modify(egraph: &mut OptEGraph, id: Id) {
        if let Some(c) = egraph[id].data.konst {
            let has = egraph[id]
                .nodes
                .iter()
                .any(|n| n.kind == ENodeKind::Const(c));
            if !has {
                let k = egraph.add(ENode {
                    kind: ENodeKind::Const(c),
                    children: vec![],
                });
                egraph.union(id, k);
            }
        }
    }
}
