//! Rules: rules as data (`.rules` files, see [`crate::pattern`]) and rules written in Rust
//! ([`FnRule`]), both run as egg rewrites.
//!
//! Every rule is type-guarded: a rewrite only fires when the new term has exactly the
//! dtype and shape of the class it joins (broadcasting can change shapes, e.g. `x * 1`
//! with a larger `1`).

use crate::analysis::{OptAnalysis, OptEGraph};
use crate::lang::{ENode, ENodeKind};
use crate::pattern::DataRule;
use egg::{
    Applier, ENodeOrVar, Id, Language, Pattern, PatternAst, Rewrite, SearchMatches, Searcher,
    Subst, Symbol, Var,
};
use optc_ir::{Op, Tensor, TensorType};
use std::sync::Arc;

/// A rule of a pass: the rewrite the e-graph runs, and for a rule written as data, the rule
/// as written (the soundness check instantiates it; a Rust rule needs a `Case` instead).
#[derive(Clone)]
pub struct Rule {
    pub rewrite: Rewrite<ENode, OptAnalysis>,
    pub data: Option<Arc<DataRule>>,
}

impl Rule {
    pub fn name(&self) -> &str {
        self.rewrite.name.as_str()
    }
}

/// A term to build: an existing class, an op over terms, output `i` of a multi-output
/// term, or a new constant.
#[derive(Clone, Debug)]
pub enum Build {
    Class(Id),
    Node(Op, Vec<Build>),
    Proj(usize, Box<Build>),
    Const(Tensor),
}

/// Types a [`Build`] would have, without adding anything.
pub fn build_types(eg: &OptEGraph, b: &Build) -> Option<Vec<TensorType>> {
    match b {
        Build::Class(id) => Some(eg[*id].data.types.clone()).filter(|t| !t.is_empty()),
        Build::Const(t) => Some(vec![t.ty()]),
        Build::Node(op, ch) => {
            let mut tys = vec![];
            for c in ch {
                let t = build_types(eg, c)?;
                if t.len() != 1 {
                    return None;
                }
                tys.extend(t);
            }
            let refs: Vec<&TensorType> = tys.iter().collect();
            op.infer(&refs).ok()
        }
        Build::Proj(i, inner) => Some(vec![build_types(eg, inner)?.get(*i)?.clone()]),
    }
}

/// Add a [`Build`] to the e-graph.
pub fn add_build(eg: &mut OptEGraph, b: &Build) -> Id {
    match b {
        Build::Class(id) => *id,
        Build::Const(t) => {
            let c = eg.analysis.intern(t.clone());
            eg.add(ENode {
                kind: ENodeKind::Const(c),
                children: vec![],
            })
        }
        Build::Node(op, ch) => {
            let children = ch.iter().map(|c| add_build(eg, c)).collect();
            eg.add(ENode::from_op(op.clone(), children))
        }
        Build::Proj(i, inner) => {
            let tuple = add_build(eg, inner);
            eg.add(ENode {
                kind: ENodeKind::Proj(*i),
                children: vec![tuple],
            })
        }
    }
}

/// The type guard: whether `b` may join class `class`: it has exactly the class's types,
/// and it is not the class itself (a no-op rewrite is not a match).
pub fn type_guard(eg: &OptEGraph, class: Id, b: &Build) -> bool {
    build_types(eg, b).as_ref() == Some(&eg[class].data.types)
        && !matches!(b, Build::Class(c) if eg.find(*c) == eg.find(class))
}

/// A rule that says, for an e-class, what to rewrite it to (each result type-guarded).
pub(crate) trait ClassRewrite: Send + Sync + 'static {
    fn results(&self, eg: &OptEGraph, class: Id) -> Vec<Build>;
}

/// A [`ClassRewrite`] as egg's searcher and applier: the search reports each class the rule
/// rewrites (once, with an empty substitution), the applier adds every result there.
pub(crate) struct ByClass<R>(pub Arc<R>);

impl<R: ClassRewrite> ByClass<R> {
    /// The rewrite named `name` running `rule`.
    pub(crate) fn rewrite(name: &str, rule: Arc<R>) -> Rewrite<ENode, OptAnalysis> {
        Rewrite::new(name, ByClass(rule.clone()), ByClass(rule))
            .expect("a ClassRewrite binds no variables")
    }
}

impl<R: ClassRewrite> Searcher<ENode, OptAnalysis> for ByClass<R> {
    fn search_eclass_with_limit(
        &self,
        eg: &OptEGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, ENode>> {
        if limit == 0 || self.0.results(eg, eclass).is_empty() {
            return None;
        }
        Some(SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }
    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

impl<R: ClassRewrite> Applier<ENode, OptAnalysis> for ByClass<R> {
    fn apply_one(
        &self,
        eg: &mut OptEGraph,
        eclass: Id,
        _: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let mut changed = vec![];
        for b in self.0.results(eg, eclass) {
            let id = add_build(eg, &b);
            if eg.union(eclass, id) {
                changed.push(id);
            }
        }
        changed
    }
}

/// `f(egraph, class, node)`: the rewrite of `node` (in e-class `class`), if any.
type RuleFn = dyn Fn(&OptEGraph, Id, &ENode) -> Option<Build> + Send + Sync;

/// A conditional rule in Rust: for each e-node, `f` decides whether it rewrites and to what.
pub struct FnRule {
    f: Box<RuleFn>,
}

impl FnRule {
    /// Make a rewrite named `name` from `f`.
    pub fn rewrite(
        name: &str,
        f: impl Fn(&OptEGraph, Id, &ENode) -> Option<Build> + Send + Sync + 'static,
    ) -> Rule {
        Rule {
            rewrite: ByClass::rewrite(name, Arc::new(FnRule { f: Box::new(f) })),
            data: None,
        }
    }
}

impl ClassRewrite for FnRule {
    fn results(&self, eg: &OptEGraph, eclass: Id) -> Vec<Build> {
        eg[eclass]
            .nodes
            .iter()
            .filter_map(|n| (self.f)(eg, eclass, n))
            .filter(|b| type_guard(eg, eclass, b))
            .collect()
    }
}

/// Types of a pattern instantiated with `subst`.
fn pattern_types(
    eg: &OptEGraph,
    ast: &PatternAst<ENode>,
    subst: &Subst,
) -> Option<Vec<TensorType>> {
    let nodes = ast.as_ref();
    let mut tys: Vec<Vec<TensorType>> = Vec::with_capacity(nodes.len());
    for n in nodes {
        let t = match n {
            ENodeOrVar::Var(v) => eg[*subst.get(*v)?].data.types.clone(),
            ENodeOrVar::ENode(e) => match &e.kind {
                ENodeKind::Op(k) => {
                    let ins: Option<Vec<&TensorType>> = e
                        .children()
                        .iter()
                        .map(|c| match tys[usize::from(*c)].as_slice() {
                            [t] => Some(t),
                            _ => None,
                        })
                        .collect();
                    k.op.infer(&ins?).ok()?
                }
                ENodeKind::Proj(i) => vec![tys[usize::from(e.children[0])].get(*i)?.clone()],
                ENodeKind::Input(i) => vec![eg.analysis.input_types.get(*i)?.clone()],
                ENodeKind::Const(c) => vec![eg.analysis.consts.get(c.0 as usize)?.ty()],
            },
        };
        if t.is_empty() {
            return None;
        }
        tys.push(t);
    }
    tys.pop()
}

/// A pattern applier that only fires when the result keeps the class's type.
pub struct TypedPattern {
    pub rhs: Pattern<ENode>,
}

impl Applier<ENode, OptAnalysis> for TypedPattern {
    fn apply_one(
        &self,
        eg: &mut OptEGraph,
        eclass: Id,
        subst: &Subst,
        ast: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let want = eg[eclass].data.types.clone();
        match pattern_types(eg, &self.rhs.ast, subst) {
            Some(t) if t == want => self.rhs.apply_one(eg, eclass, subst, ast, rule),
            _ => vec![],
        }
    }
    fn vars(&self) -> Vec<Var> {
        self.rhs.vars()
    }
}

/// Parse a `.rules` file into rules (see [`crate::rule_file`] for the syntax).
pub fn load_rules(text: &str, origin: &str) -> Result<Vec<Rule>, String> {
    crate::rule_file::parse_rules(text, origin)?
        .into_iter()
        .map(DataRule::to_rule)
        .collect()
}
