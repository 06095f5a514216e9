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

/// `f(egraph, class, node)`: the rewrite of `node` (in e-class `class`), if any.
type RuleFn = dyn Fn(&OptEGraph, Id, &ENode) -> Option<Build> + Send + Sync;

/// A conditional rule in Rust: for each e-node, `f` decides whether it rewrites and to what.
pub struct FnRule {
    f: Arc<RuleFn>,
}

impl FnRule {
    /// Make a rewrite named `name` from `f`.
    pub fn rewrite(
        name: &str,
        f: impl Fn(&OptEGraph, Id, &ENode) -> Option<Build> + Send + Sync + 'static,
    ) -> Rule {
        let f: Arc<RuleFn> = Arc::new(f);
        Rule {
            rewrite: Rewrite::new(name, FnRule { f: f.clone() }, FnRule { f })
                .expect("FnRule binds no variables"),
            data: None,
        }
    }

    fn results(&self, eg: &OptEGraph, eclass: Id) -> Vec<Build> {
        let want = &eg[eclass].data.types;
        eg[eclass]
            .nodes
            .iter()
            .filter_map(|n| (self.f)(eg, eclass, n))
            .filter(|b| {
                // type guard, and no-op rewrites into the same class are not matches
                build_types(eg, b).as_ref() == Some(want)
                    && !matches!(b, Build::Class(c) if eg.find(*c) == eg.find(eclass))
            })
            .collect()
    }
}

impl Searcher<ENode, OptAnalysis> for FnRule {
    fn search_eclass_with_limit(
        &self,
        eg: &OptEGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, ENode>> {
        let n = self.results(eg, eclass).len().min(limit);
        if n == 0 {
            return None;
        }
        Some(SearchMatches {
            eclass,
            substs: vec![Subst::default(); 1],
            ast: None,
        })
    }
    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

impl Applier<ENode, OptAnalysis> for FnRule {
    fn apply_one(
        &self,
        eg: &mut OptEGraph,
        eclass: Id,
        _: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let mut changed = vec![];
        for b in self.results(eg, eclass) {
            let id = add_build(eg, &b);
            if eg.union(eclass, id) {
                changed.push(id);
            }
        }
        changed
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
