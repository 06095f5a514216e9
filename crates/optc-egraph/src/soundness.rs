//! Checking a rule before trusting it: its left side is instantiated as small graphs on
//! random shapes, dtypes, attributes and values that meet its conditions; where the rule
//! fires, its right side is built next to the left, and both run in the reference
//! interpreter on several input sets (plain random values, special values (NaN, ±inf, ±0,
//! huge and tiny), small integers). The outputs must be equal exactly (NaN equal to NaN,
//! `-0.0` to `0.0`): a rule as data is an identity of the ops' definitions, not an
//! approximation. (Rust rules that do weight math, whose results differ by rounding, are
//! checked on their `Case`s by `tests/soundness.rs` instead.)
//!
//! [`check`] gives a [`Verdict`]; an unsound rule comes with a [`Counterexample`]: the graph
//! (the instance with both sides as outputs `lhs` and `rhs`, in optc's text format), the
//! inputs and both outputs.

use crate::convert::to_egraph;
use crate::lang::{ENode, ENodeKind};
use crate::pattern::{DataRule, Expr, Func, Head, Sort, Term};
use crate::rules::Build;
use egg::Id;
use optc_ir::{
    AttrType, AttrValue, Attrs, DType, Data, Family, Graph, Op, OpKind, Tensor, TensorType, Value,
    OPS,
};
use std::collections::HashMap;
use std::fmt;

/// Instances to try at most, and how many firing ones are enough.
const ATTEMPTS: usize = 600;
const ENOUGH: usize = 64;
/// Input sets per instance (one per kind of values).
const INPUT_SETS: u64 = 4;

/// What checking a rule found.
#[derive(Debug)]
pub enum Verdict {
    /// Both sides agreed on every instance where the rule fired.
    Sound { instances: usize },
    /// The sides differ on this instance.
    Unsound(Box<Counterexample>),
    /// No instance made the rule fire, so nothing was checked.
    NotChecked(String),
}

/// An instance on which the two sides of a rule differ.
#[derive(Debug)]
pub struct Counterexample {
    /// The left side (output `lhs`) and the right side (output `rhs`) over the same inputs.
    pub graph: Graph,
    pub inputs: Vec<Tensor>,
    pub lhs: Tensor,
    pub rhs: Tensor,
}

fn fmt_tensor(t: &Tensor) -> String {
    let parts: Vec<String> = match t.data() {
        Data::F32(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Data::I64(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::I32(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::U8(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::I8(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::F64(v) => v.iter().map(|x| format!("{x:?}")).collect(),
    };
    format!("{} [{}]", t.ty(), parts.join(", "))
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", optc_ir::text::print(&self.graph))?;
        for (i, t) in self.graph.inputs.iter().zip(&self.inputs) {
            let name = &self.graph.node(i.node).name;
            writeln!(f, "input %{name} = {}", fmt_tensor(t))?;
        }
        writeln!(f, "lhs = {}", fmt_tensor(&self.lhs))?;
        write!(f, "rhs = {}", fmt_tensor(&self.rhs))
    }
}

/// Whether two tensors are equal element by element (NaN equals NaN, `-0.0` equals `0.0`).
pub fn exactly_equal(a: &Tensor, b: &Tensor) -> bool {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return false;
    }
    match (a.data(), b.data()) {
        (Data::F32(x), Data::F32(y)) => x
            .iter()
            .zip(y)
            .all(|(p, q)| p == q || (p.is_nan() && q.is_nan())),
        (x, y) => x == y,
    }
}

/// A small deterministic random source (xorshift).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            Some(&v[self.below(v.len())])
        }
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Input values of type `ty`; `set` chooses the kind: 0 uniform in [-2, 2), 1 special
/// values, 2 small integers, 3 uniform in [-100, 100).
fn random_values(ty: &TensorType, set: u64, rng: &mut Rng) -> Tensor {
    const SPECIAL: [f32; 12] = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        1.0,
        -1.0,
        0.5,
        3.0,
        -2.5,
        1e30,
        -1e-30,
    ];
    let n = ty.numel();
    let small = |rng: &mut Rng| rng.below(11) as i64 - 5;
    let data = match ty.dtype {
        DType::F32 => Data::F32(
            (0..n)
                .map(|_| match set {
                    0 => rng.unit() * 4.0 - 2.0,
                    1 => SPECIAL[rng.below(SPECIAL.len())],
                    2 => small(rng) as f32,
                    _ => rng.unit() * 200.0 - 100.0,
                })
                .collect(),
        ),
        DType::I64 => Data::I64((0..n).map(|_| small(rng)).collect()),
        DType::I32 => Data::I32((0..n).map(|_| small(rng) as i32).collect()),
        DType::I8 => Data::I8((0..n).map(|_| small(rng) as i8).collect()),
        DType::U8 => Data::U8((0..n).map(|_| rng.below(6) as u8).collect()),
        DType::Bool => Data::Bool((0..n).map(|_| rng.next() >> 63 == 1).collect()),
        DType::F64 => Data::F64(
            (0..n)
                .map(|_| match set {
                    0 => rng.unit() as f64 * 4.0 - 2.0,
                    1 => SPECIAL[rng.below(SPECIAL.len())] as f64,
                    2 => small(rng) as f64,
                    _ => rng.unit() as f64 * 200.0 - 100.0,
                })
                .collect(),
        ),
    };
    Tensor::new(ty.shape.clone(), data).expect("length matches shape")
}

fn filled(ty: &TensorType, v: f64) -> Option<Tensor> {
    let n = ty.numel();
    let data = match ty.dtype {
        DType::F32 => Data::F32(vec![v as f32; n]),
        DType::I64 => Data::I64(vec![v as i64; n]),
        DType::I32 => Data::I32(vec![v as i32; n]),
        DType::I8 => Data::I8(vec![v as i8; n]),
        DType::U8 => Data::U8(vec![v as u8; n]),
        DType::Bool => Data::Bool(vec![v != 0.0; n]),
        DType::F64 => Data::F64(vec![v; n]),
    };
    Tensor::new(ty.shape.clone(), data).ok()
}

/// The types a rule variable may take.
fn candidate_types() -> Vec<TensorType> {
    let f = TensorType::f32;
    vec![
        f(&[2, 3]),
        f(&[3, 3]),
        f(&[2, 2, 2]),
        f(&[2, 3, 4]),
        f(&[4]),
        f(&[1, 3, 1, 2]),
        f(&[3, 1]),
        f(&[1, 2, 5, 5]),
        f(&[]),
        TensorType::new(DType::Bool, vec![2, 3]),
        TensorType::new(DType::I64, vec![2, 3]),
        TensorType::new(DType::I32, vec![3, 1]),
    ]
}

/// How a class variable is instantiated.
#[derive(Clone, Debug)]
enum Leaf {
    /// A graph input.
    Input,
    /// A constant whose elements all equal this (a condition `(all ?c n)` asks for it).
    Filled(f64),
    /// A constant of random values (it is folded on the right side).
    Random,
}

fn leaves(rule: &DataRule) -> Vec<Leaf> {
    let mut out: Vec<Leaf> = rule.vars.iter().map(|_| Leaf::Input).collect();
    fn folded(t: &Term, inside: bool, out: &mut Vec<Leaf>) {
        match t {
            Term::Var(v) if inside => {
                if matches!(out[*v], Leaf::Input) {
                    out[*v] = Leaf::Random;
                }
            }
            Term::Var(_) => {}
            Term::Node { children, .. } => {
                for c in children {
                    folded(c, inside, out);
                }
            }
            Term::Fold(inner) => folded(inner, true, out),
        }
    }
    folded(&rule.rhs, false, &mut out);
    // A class read as a value (`(scalar ?c)`) must be a constant.
    fn read_classes(e: &Expr, out: &mut Vec<Leaf>) {
        if let Expr::Call(f, args) = e {
            for a in args {
                match a {
                    Expr::Var(v) if *f == Func::Scalar => out[*v] = Leaf::Random,
                    _ => read_classes(a, out),
                }
            }
        }
    }
    fn attr_reads(t: &Term, out: &mut Vec<Leaf>) {
        if let Term::Node {
            attrs, children, ..
        } = t
        {
            for (_, e) in attrs {
                read_classes(e, out);
            }
            for c in children {
                attr_reads(c, out);
            }
        } else if let Term::Fold(inner) = t {
            attr_reads(inner, out);
        }
    }
    attr_reads(&rule.rhs, &mut out);
    for c in &rule.conditions {
        if let Expr::Call(Func::All, args) = c {
            if let [Expr::Var(v), Expr::Lit(n)] = args.as_slice() {
                let n = match n {
                    AttrValue::Int(i) => Some(*i as f64),
                    AttrValue::Float(x) => Some(*x as f64),
                    _ => None,
                };
                if let (Some(n), Sort::Class) = (n, rule.vars[*v].sort) {
                    out[*v] = Leaf::Filled(n);
                }
            }
        }
    }
    out
}

/// Candidate values of attribute `key` of type `ty` for an op whose inputs have types
/// `ins`. Keys with a known meaning get values that make sense for it (a permutation of
/// the input's dims for `perm`, the input's shape for `shape`, ...); others get small
/// generic values. The op's inference rejects what does not fit.
fn attr_candidates(key: &str, ty: AttrType, ins: &[&TensorType]) -> Vec<AttrValue> {
    let shape: Vec<i64> = ins
        .first()
        .map(|t| t.shape.iter().map(|&d| d as i64).collect())
        .unwrap_or_default();
    let r = shape.len();
    let nsp = r.saturating_sub(2);
    let n: i64 = shape.iter().product();
    let fill = |len: usize, v: i64| vec![v; len];
    let ints = |v: Vec<Vec<i64>>| v.into_iter().map(AttrValue::Ints).collect::<Vec<_>>();
    let perms = || {
        let mut ps = vec![(0..r as i64).collect::<Vec<_>>()];
        if r >= 2 {
            ps.push((0..r as i64).rev().collect());
            let mut rot: Vec<i64> = (1..r as i64).collect();
            rot.push(0);
            ps.push(rot);
            let mut swap: Vec<i64> = (0..r as i64).collect();
            swap.swap(r - 2, r - 1);
            ps.push(swap);
        }
        ps
    };
    match ty {
        AttrType::Size => {
            let v: Vec<i64> = match key {
                "axis" => (0..r.max(1) as i64).collect(),
                "group" => vec![1, shape.get(1).copied().unwrap_or(1)],
                _ => vec![0, 1, 2],
            };
            v.into_iter().map(AttrValue::Int).collect()
        }
        AttrType::Float => {
            let v: &[f32] = match key {
                "epsilon" => &[1e-5, 0.5],
                "min" => &[-1.0, 0.0],
                "max" => &[1.0, 6.0],
                _ => &[0.0, 1.0, 0.5, -1.5, 2.0],
            };
            v.iter().map(|&x| AttrValue::Float(x)).collect()
        }
        AttrType::Bool => vec![AttrValue::Bool(false), AttrValue::Bool(true)],
        AttrType::Word => optc_ir::attr::words()
            .map(|w| AttrValue::Word(w.to_string()))
            .collect(),
        AttrType::Sizes | AttrType::Ints => {
            let mut rev = shape.clone();
            rev.reverse();
            let lists = match key {
                "perm" => perms(),
                "shape" => vec![
                    shape.clone(),
                    vec![n],
                    vec![1, n],
                    vec![n, 1],
                    rev,
                    [vec![1], shape.clone()].concat(),
                    fill(r, 1),
                ],
                "axes" => {
                    let mut v = vec![vec![0], (0..r as i64).collect()];
                    if r >= 2 {
                        v.push(vec![r as i64 - 1]);
                        v.push((1..r as i64).collect());
                    }
                    v
                }
                "starts" => vec![fill(r, 0), shape.iter().map(|d| d - 1).collect()],
                "steps" => vec![fill(r, 1), fill(r, -1), fill(r, 2)],
                "lens" => vec![shape.clone(), fill(r, 1)],
                "sizes" => (0..r)
                    .map(|d| {
                        let s = shape[d];
                        if s >= 2 {
                            vec![1, s - 1]
                        } else {
                            vec![s]
                        }
                    })
                    .collect(),
                "pads" => vec![
                    fill(2 * r, 0),
                    fill(2 * r, 1),
                    fill(2 * nsp, 0),
                    fill(2 * nsp, 1),
                    [fill(r, 1), fill(r, -1)].concat(),
                ],
                "kernel" => {
                    let mut v = vec![fill(nsp, 1), fill(nsp, 2), fill(nsp, 3)];
                    if let Some(w) = ins.get(1) {
                        v.push(w.shape.iter().skip(2).map(|&d| d as i64).collect());
                    }
                    v
                }
                "strides" | "dilations" => vec![fill(nsp, 1), fill(nsp, 2)],
                _ => vec![
                    shape.clone(),
                    fill(r, 0),
                    fill(r, 1),
                    fill(2 * r, 0),
                    (0..r as i64).collect(),
                ],
            };
            ints(lists)
        }
    }
}

/// A left side instantiated as a graph.
struct Instance {
    graph: Graph,
    root: Value,
}

/// Builds one instance of a rule's left side, choosing what the rule leaves open at random.
struct Instantiator<'a> {
    rule: &'a DataRule,
    leaves: &'a [Leaf],
    rng: Rng,
    g: Graph,
    /// Per rule variable: its value (class variables), attribute, or op.
    classes: Vec<Option<Value>>,
    attrs: Vec<Option<AttrValue>>,
    ops: Vec<Option<Op>>,
    /// One type for every class variable, or `None` for a random type each.
    common: Option<TensorType>,
    counter: usize,
}

impl Instantiator<'_> {
    fn fresh(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}{}", self.counter)
    }

    fn term(&mut self, t: &Term) -> Option<Value> {
        match t {
            Term::Var(v) => {
                if let Some(val) = self.classes[*v] {
                    return Some(val);
                }
                let ty = match &self.common {
                    Some(t) => t.clone(),
                    None => self.rng.pick(&candidate_types())?.clone(),
                };
                let name = self.rule.vars[*v].name.clone();
                let val = match self.leaves[*v] {
                    Leaf::Input => self.g.add_input(&name, ty),
                    Leaf::Filled(n) => self.g.add_const(&name, filled(&ty, n)?),
                    Leaf::Random => {
                        let t = random_values(&ty, 0, &mut self.rng);
                        self.g.add_const(&name, t)
                    }
                };
                self.classes[*v] = Some(val);
                Some(val)
            }
            Term::Node {
                head,
                attrs,
                children,
            } => {
                let ins: Vec<Value> = children
                    .iter()
                    .map(|c| self.term(c))
                    .collect::<Option<_>>()?;
                if let Head::Proj(i) = head {
                    let v = ins.first()?;
                    let n = self.g.node(v.node).outputs.len();
                    return (*i < n).then(|| Value::new(v.node, *i));
                }
                let tys: Vec<TensorType> = ins
                    .iter()
                    .map(|v| self.g.value_type(*v).ok().cloned())
                    .collect::<Option<_>>()?;
                let refs: Vec<&TensorType> = tys.iter().collect();
                let op = match head {
                    Head::Kind(k) => self.op_of_kind(*k, attrs, &refs)?,
                    Head::OpVar(v, family) => match &self.ops[*v] {
                        Some(op) => op.clone(),
                        None => {
                            let kinds: Vec<OpKind> = OPS
                                .iter()
                                .filter(|i| {
                                    family.is_none_or(|f| i.family == f)
                                        && !matches!(i.family, Family::Source | Family::Fused)
                                        && i.arity.0 <= ins.len()
                                        && ins.len() <= i.arity.1
                                })
                                .map(|i| i.kind)
                                .collect();
                            let k = *self.rng.pick(&kinds)?;
                            let op = self.op_of_kind(k, &[], &refs)?;
                            self.ops[*v] = Some(op.clone());
                            op
                        }
                    },
                    Head::Proj(_) => unreachable!("handled above"),
                };
                let name = self.fresh("n");
                let outs = self.g.add_node(&name, op, &ins).ok()?;
                outs.first().copied()
            }
            Term::Fold(_) => None,
        }
    }

    /// An op of kind `k` over inputs of types `ins`: attributes from the pattern (a literal,
    /// or a variable's value once bound), the rest chosen at random.
    fn op_of_kind(
        &mut self,
        k: OpKind,
        given: &[(&'static str, Expr)],
        ins: &[&TensorType],
    ) -> Option<Op> {
        let mut a = Attrs::new(k.name());
        for spec in k.attr_specs() {
            let v = match given.iter().find(|(key, _)| *key == spec.key).map(|g| &g.1) {
                Some(Expr::Lit(l)) => l.clone(),
                Some(Expr::Var(v)) => match &self.attrs[*v] {
                    Some(b) => b.clone(),
                    None => {
                        let c = attr_candidates(spec.key, spec.ty, ins);
                        let x = self.rng.pick(&c)?.clone();
                        self.attrs[*v] = Some(x.clone());
                        x
                    }
                },
                Some(Expr::Call(..)) => return None,
                None => {
                    let c = attr_candidates(spec.key, spec.ty, ins);
                    self.rng.pick(&c)?.clone()
                }
            };
            a.insert(spec.key, v).ok()?;
        }
        let op = k.build(a).ok()?;
        op.infer(ins).ok()?;
        Some(op)
    }
}

fn instantiate(rule: &DataRule, leaves: &[Leaf], attempt: usize) -> Option<Instance> {
    let types = candidate_types();
    let common = attempt
        .is_multiple_of(2)
        .then(|| types[(attempt / 2) % types.len()].clone());
    let n = rule.vars.len();
    let mut inst = Instantiator {
        rule,
        leaves,
        rng: Rng::new(attempt as u64 + 1),
        g: Graph::new(),
        classes: vec![None; n],
        attrs: vec![None; n],
        ops: vec![None; n],
        common,
        counter: 0,
    };
    let root = inst.term(&rule.lhs)?;
    let proj = matches!(
        rule.lhs,
        Term::Node {
            head: Head::Proj(_),
            ..
        }
    );
    if !proj && inst.g.node(root.node).outputs.len() != 1 {
        return None;
    }
    let mut graph = inst.g;
    graph.add_output("lhs", root);
    Some(Instance { graph, root })
}

/// The IR value of each e-class of an e-graph made from `g`.
fn class_values(g: &Graph, conv: &crate::convert::Converted) -> HashMap<Id, Value> {
    let eg = &conv.egraph;
    let mut out = HashMap::new();
    for (&node, &class) in &conv.classes {
        let outs = g.node(node).outputs.len();
        if outs == 1 {
            out.insert(eg.find(class), Value::new(node, 0));
        } else {
            for p in 0..outs {
                let proj = ENode {
                    kind: ENodeKind::Proj(p),
                    children: vec![class],
                };
                if let Some(c) = eg.lookup(proj) {
                    out.insert(eg.find(c), Value::new(node, p));
                }
            }
        }
    }
    out
}

/// Add `b` to graph `g`; `values` gives the IR value of each class.
fn add_to_graph(
    g: &mut Graph,
    eg: &crate::OptEGraph,
    values: &HashMap<Id, Value>,
    b: &Build,
    counter: &mut usize,
) -> Option<Vec<Value>> {
    *counter += 1;
    let name = format!("r{counter}");
    match b {
        Build::Class(id) => Some(vec![*values.get(&eg.find(*id))?]),
        Build::Const(t) => Some(vec![g.add_const(&name, t.clone())]),
        Build::Node(op, ch) => {
            let mut ins = vec![];
            for c in ch {
                ins.push(
                    add_to_graph(g, eg, values, c, counter)?
                        .into_iter()
                        .next()?,
                );
            }
            g.add_node(&name, op.clone(), &ins).ok()
        }
        Build::Proj(i, inner) => Some(vec![*add_to_graph(g, eg, values, inner, counter)?.get(*i)?]),
    }
}

/// Check `rule` on random instances (see the module doc).
pub fn check(rule: &DataRule) -> Verdict {
    let leaves = leaves(rule);
    let mut fired = 0;
    for attempt in 0..ATTEMPTS {
        if fired >= ENOUGH {
            break;
        }
        let Some(inst) = instantiate(rule, &leaves, attempt) else {
            continue;
        };
        let Ok(conv) = to_egraph(&inst.graph, 0) else {
            continue;
        };
        let eg = &conv.egraph;
        let values = class_values(&inst.graph, &conv);
        let Some(root) = values
            .iter()
            .find(|(_, v)| **v == inst.root)
            .map(|(c, _)| *c)
        else {
            continue;
        };
        let results = rule.results(eg, root);
        if results.is_empty() {
            continue;
        }
        fired += 1;
        for (k, b) in results.iter().enumerate() {
            let mut g = inst.graph.clone();
            let mut counter = 0;
            let Some(rhs) = add_to_graph(&mut g, eg, &values, b, &mut counter)
                .and_then(|v| v.into_iter().next())
            else {
                continue;
            };
            g.add_output("rhs", rhs);
            for set in 0..INPUT_SETS {
                let mut rng = Rng::new((attempt as u64) << 8 | (k as u64) << 4 | set);
                let inputs: Vec<Tensor> = g
                    .input_types()
                    .iter()
                    .map(|t| random_values(t, set, &mut rng))
                    .collect();
                let Ok(outs) = optc_ir::interp::run(&g, &inputs) else {
                    continue;
                };
                if !exactly_equal(&outs[0], &outs[1]) {
                    return Verdict::Unsound(Box::new(Counterexample {
                        graph: g,
                        inputs,
                        lhs: outs[0].clone(),
                        rhs: outs[1].clone(),
                    }));
                }
            }
        }
    }
    if fired == 0 {
        Verdict::NotChecked(format!(
            "no instance of its left side made it fire ({ATTEMPTS} tried: random shapes, \
             dtypes and attributes, with its conditions)"
        ))
    } else {
        Verdict::Sound { instances: fired }
    }
}
