//! Rules as data: the terms of a `.rules` rule, matched against the e-graph and built into
//! it, attributes included.
//!
//! A [`DataRule`] is `lhs => rhs if conditions` over [`Term`]s: variables (`?x`, an e-class),
//! op nodes with attributes (`(transpose[perm=?p] ?x)`, `(conv[strides=[1,1]] ?x ?w)`),
//! op variables (`(?f:unary ?x)` binds the whole op) and `(fold t)` (the right side's `t`
//! evaluated at compile time; its leaves must be constants). Attribute values on the right
//! and in conditions are [`Expr`]s: a bound variable, a literal, or a [`Func`] of them.
//! The syntax is parsed by [`crate::rule_file`].
//!
//! Matching is our own (egg's `Pattern` binds only e-classes); a rule whose sides name only
//! ops without attributes and has no condition runs as an egg `Pattern` instead (egg's
//! compiled matcher), with the same type guard. Either way a rewrite only joins a class
//! when its result has exactly that class's dtype and shape (see [`crate::rules`]).

use crate::analysis::OptEGraph;
use crate::lang::{ENode, ENodeKind};
use crate::query::{all_equal, const_of};
use crate::rules::{type_guard, Build, ByClass, ClassRewrite, Rule, TypedPattern};
use egg::{ENodeOrVar, Id, PatternAst, Rewrite};
use optc_ir::{AttrValue, Attrs, Family, Op, OpKind, Tensor};
use std::sync::Arc;

/// One side of a rule.
#[derive(Clone, Debug)]
pub enum Term {
    /// An e-class variable (index into [`DataRule::vars`]).
    Var(usize),
    /// An op node: its head, the attributes the rule names, its children.
    Node {
        head: Head,
        attrs: Vec<(&'static str, Expr)>,
        children: Vec<Term>,
    },
    /// Right side only: the term evaluated at compile time into a constant.
    Fold(Box<Term>),
}

/// What an op node of a term is.
#[derive(Clone, Debug)]
pub enum Head {
    /// An op of this kind; attributes the rule does not name match anything.
    Kind(OpKind),
    /// An op variable: any op of the family (if given), bound with its attributes.
    OpVar(usize, Option<Family>),
    /// Output `i` of a multi-output op.
    Proj(usize),
}

/// An attribute value or a condition: a variable, a literal or a function of them.
#[derive(Clone, Debug)]
pub enum Expr {
    Var(usize),
    Lit(AttrValue),
    Call(Func, Vec<Expr>),
}

/// The functions of attribute expressions and conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    /// `(permute ?list ?perm)`: `list` permuted by `perm` (`out[i] = list[perm[i]]`), as
    /// a transpose by `perm` permutes its input's dims.
    Permute,
    /// `(inverse ?perm)`: the inverse permutation.
    Inverse,
    /// `(single ?list)`: the only element of a one-element list.
    Single,
    /// `(is-identity ?perm)`: whether `perm` is `[0, 1, ..]`.
    IsIdentity,
    /// `(all ?v n)`: every element of `v` equals `n`; `v` is a list attribute, or a class
    /// that must be a constant (with at least one element).
    All,
    /// `(scalar ?c)`: the value of `c`, a class that must be a one-element f32 constant, as
    /// a float attribute.
    Scalar,
}

impl Func {
    /// Every function with its name and number of arguments.
    pub const ALL: [(Func, &'static str, usize); 6] = [
        (Func::Permute, "permute", 2),
        (Func::Inverse, "inverse", 1),
        (Func::Single, "single", 1),
        (Func::IsIdentity, "is-identity", 1),
        (Func::All, "all", 2),
        (Func::Scalar, "scalar", 1),
    ];

    pub fn from_name(name: &str) -> Option<(Func, usize)> {
        Func::ALL.iter().find(|f| f.1 == name).map(|f| (f.0, f.2))
    }

    pub fn name(self) -> &'static str {
        Func::ALL.iter().find(|f| f.0 == self).map_or("?", |f| f.1)
    }

    /// Whether it gives a yes/no answer (usable as a condition).
    pub fn is_condition(self) -> bool {
        matches!(self, Func::IsIdentity | Func::All)
    }
}

/// What a rule variable stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// An e-class (a value).
    Class,
    /// An attribute value.
    Attr,
    /// A whole op with its attributes.
    Op,
}

/// A variable of a rule.
#[derive(Clone, Debug)]
pub struct VarInfo {
    /// As written, without the `?`.
    pub name: String,
    pub sort: Sort,
}

/// A rule as data.
#[derive(Clone, Debug)]
pub struct DataRule {
    pub name: String,
    /// The rule as written (one line of a `.rules` file, without its name).
    pub text: String,
    pub lhs: Term,
    pub rhs: Term,
    /// All must hold for the rule to fire.
    pub conditions: Vec<Expr>,
    pub vars: Vec<VarInfo>,
}

/// What a match bound each variable to.
#[derive(Clone, Debug, PartialEq)]
pub enum Bound {
    Class(Id),
    Attr(AttrValue),
    Op(Op),
}

/// A match: one entry per rule variable.
pub type Bindings = Vec<Option<Bound>>;

/// The value of an expression.
enum Val {
    Attr(AttrValue),
    Class(Id),
    Bool(bool),
}

/// Whether two ops are the same op: same kind, same attributes (floats by their bits).
fn same_op(a: &Op, b: &Op) -> bool {
    a.kind() == b.kind() && a.attrs() == b.attrs()
}

fn match_term(eg: &OptEGraph, t: &Term, class: Id, b: Bindings, out: &mut Vec<Bindings>) {
    match t {
        Term::Var(v) => match &b[*v] {
            Some(Bound::Class(c)) => {
                if eg.find(*c) == eg.find(class) {
                    out.push(b);
                }
            }
            _ => {
                let mut b = b;
                b[*v] = Some(Bound::Class(class));
                out.push(b);
            }
        },
        Term::Node {
            head,
            attrs,
            children,
        } => {
            for n in &eg[class].nodes {
                if n.children.len() != children.len() {
                    continue;
                }
                let Some(b) = match_head(n, head, attrs, &b) else {
                    continue;
                };
                let mut states = vec![b];
                for (ct, &cid) in children.iter().zip(&n.children) {
                    let mut next = vec![];
                    for s in states {
                        match_term(eg, ct, cid, s, &mut next);
                    }
                    states = next;
                    if states.is_empty() {
                        break;
                    }
                }
                out.extend(states);
            }
        }
        Term::Fold(_) => {}
    }
}

/// Bindings extended by matching e-node `n` against a term's head and attributes.
fn match_head(
    n: &ENode,
    head: &Head,
    attrs: &[(&'static str, Expr)],
    b: &Bindings,
) -> Option<Bindings> {
    let mut b = b.clone();
    let op = match (head, &n.kind) {
        (Head::Proj(i), ENodeKind::Proj(j)) => return (i == j).then_some(b),
        (Head::Kind(k), ENodeKind::Op(o)) if o.op.kind() == *k => &o.op,
        (Head::OpVar(v, family), ENodeKind::Op(o)) => {
            if family.is_some_and(|f| o.op.info().family != f) {
                return None;
            }
            match &b[*v] {
                Some(Bound::Op(bound)) if !same_op(bound, &o.op) => return None,
                Some(_) => {}
                None => b[*v] = Some(Bound::Op(o.op.clone())),
            }
            &o.op
        }
        _ => return None,
    };
    if attrs.is_empty() {
        return Some(b);
    }
    let values = op.attrs();
    for (key, e) in attrs {
        let (_, val) = values.iter().find(|(k, _)| k == key)?;
        match e {
            Expr::Lit(l) if l == val => {}
            Expr::Var(v) => match &b[*v] {
                Some(Bound::Attr(a)) if a == val => {}
                None => b[*v] = Some(Bound::Attr(val.clone())),
                _ => return None,
            },
            _ => return None,
        }
    }
    Some(b)
}

fn ints(v: &Val) -> Option<&[i64]> {
    match v {
        Val::Attr(AttrValue::Ints(l)) => Some(l),
        _ => None,
    }
}

fn is_permutation(p: &[i64]) -> bool {
    let mut seen = vec![false; p.len()];
    p.iter().all(|&i| {
        let ok = i >= 0 && (i as usize) < p.len() && !seen[i as usize];
        if ok {
            seen[i as usize] = true;
        }
        ok
    })
}

fn number(v: &AttrValue) -> Option<f64> {
    match v {
        AttrValue::Int(i) => Some(*i as f64),
        AttrValue::Float(x) => Some(*x as f64),
        _ => None,
    }
}

fn eval(eg: &OptEGraph, e: &Expr, b: &Bindings) -> Option<Val> {
    match e {
        Expr::Lit(v) => Some(Val::Attr(v.clone())),
        Expr::Var(v) => match b[*v].as_ref()? {
            Bound::Class(c) => Some(Val::Class(*c)),
            Bound::Attr(a) => Some(Val::Attr(a.clone())),
            Bound::Op(_) => None,
        },
        Expr::Call(f, args) => {
            let args: Vec<Val> = args.iter().map(|a| eval(eg, a, b)).collect::<Option<_>>()?;
            call(eg, *f, &args)
        }
    }
}

fn call(eg: &OptEGraph, f: Func, args: &[Val]) -> Option<Val> {
    let ints_val = |v: Vec<i64>| Some(Val::Attr(AttrValue::Ints(v)));
    match f {
        Func::Permute => {
            let (list, perm) = (ints(&args[0])?, ints(&args[1])?);
            if list.len() != perm.len() || !is_permutation(perm) {
                return None;
            }
            ints_val(perm.iter().map(|&i| list[i as usize]).collect())
        }
        Func::Inverse => {
            let perm = ints(&args[0])?;
            if !is_permutation(perm) {
                return None;
            }
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p as usize] = i as i64;
            }
            ints_val(inv)
        }
        Func::Single => match ints(&args[0])? {
            [x] => Some(Val::Attr(AttrValue::Int(*x))),
            _ => None,
        },
        Func::IsIdentity => {
            let perm = ints(&args[0])?;
            Some(Val::Bool(
                perm.iter().enumerate().all(|(i, &p)| p == i as i64),
            ))
        }
        Func::Scalar => {
            let Val::Class(c) = &args[0] else { return None };
            let t = const_of(eg, *c)?;
            match t.as_f32()? {
                [v] => Some(Val::Attr(AttrValue::Float(*v))),
                _ => None,
            }
        }
        Func::All => {
            let Val::Attr(n) = &args[1] else { return None };
            let n = number(n)?;
            Some(Val::Bool(match &args[0] {
                Val::Class(c) => const_of(eg, *c).is_some_and(|t| all_equal(&t, n)),
                Val::Attr(AttrValue::Ints(l)) => l.iter().all(|&x| x as f64 == n),
                _ => false,
            }))
        }
    }
}

/// Evaluate a term made of constants (a [`Term::Fold`]) through the interpreter.
fn fold(eg: &OptEGraph, b: &Build) -> Option<Tensor> {
    match b {
        Build::Class(id) => Some((*const_of(eg, *id)?).clone()),
        Build::Const(t) => Some(t.clone()),
        Build::Node(op, ch) => {
            let ins: Vec<Tensor> = ch.iter().map(|c| fold(eg, c)).collect::<Option<_>>()?;
            let refs: Vec<&Tensor> = ins.iter().collect();
            let mut outs = optc_ir::interp::eval_op(op, &refs).ok()?;
            (outs.len() == 1).then(|| outs.pop())?
        }
        Build::Proj(i, inner) => {
            let Build::Node(op, ch) = &**inner else {
                return None;
            };
            let ins: Vec<Tensor> = ch.iter().map(|c| fold(eg, c)).collect::<Option<_>>()?;
            let refs: Vec<&Tensor> = ins.iter().collect();
            let mut outs = optc_ir::interp::eval_op(op, &refs).ok()?;
            (*i < outs.len()).then(|| outs.swap_remove(*i))
        }
    }
}

fn build(eg: &OptEGraph, t: &Term, b: &Bindings) -> Option<Build> {
    match t {
        Term::Var(v) => match b[*v].as_ref()? {
            Bound::Class(c) => Some(Build::Class(*c)),
            _ => None,
        },
        Term::Node {
            head,
            attrs,
            children,
        } => {
            let ch: Vec<Build> = children
                .iter()
                .map(|c| build(eg, c, b))
                .collect::<Option<_>>()?;
            match head {
                Head::Proj(i) => Some(Build::Proj(*i, Box::new(ch.into_iter().next()?))),
                Head::OpVar(v, _) => match b[*v].as_ref()? {
                    Bound::Op(op) => Some(Build::Node(op.clone(), ch)),
                    _ => None,
                },
                Head::Kind(k) => {
                    let mut a = Attrs::new(k.name());
                    for (key, e) in attrs {
                        let Val::Attr(v) = eval(eg, e, b)? else {
                            return None;
                        };
                        a.insert(key, v).ok()?;
                    }
                    Some(Build::Node(k.build(a).ok()?, ch))
                }
            }
        }
        Term::Fold(inner) => Some(Build::Const(fold(eg, &build(eg, inner, b)?)?)),
    }
}

impl DataRule {
    /// Every match of the left side at root class `class` (conditions not checked).
    pub fn matches(&self, eg: &OptEGraph, class: Id) -> Vec<Bindings> {
        let mut out = vec![];
        match_term(eg, &self.lhs, class, vec![None; self.vars.len()], &mut out);
        out
    }

    /// Whether every condition holds for match `b`.
    pub fn conditions_hold(&self, eg: &OptEGraph, b: &Bindings) -> bool {
        self.conditions
            .iter()
            .all(|c| matches!(eval(eg, c, b), Some(Val::Bool(true))))
    }

    /// The right side built for match `b`, if its attributes compute and its folds fold.
    pub fn instantiate(&self, eg: &OptEGraph, b: &Bindings) -> Option<Build> {
        build(eg, &self.rhs, b)
    }

    /// What the rule rewrites class `class` to: for each match whose conditions hold, the
    /// right side, when it has exactly the class's type (the type guard) and is not the
    /// class itself.
    pub fn results(&self, eg: &OptEGraph, class: Id) -> Vec<Build> {
        self.matches(eg, class)
            .iter()
            .filter(|b| self.conditions_hold(eg, b))
            .filter_map(|b| self.instantiate(eg, b))
            .filter(|r| type_guard(eg, class, r))
            .collect()
    }

    /// Whether egg's own `Pattern` can run this rule: both sides name only ops without
    /// attributes, projections and variables, and there is no condition.
    pub fn is_plain(&self) -> bool {
        fn plain(t: &Term) -> bool {
            match t {
                Term::Var(_) => true,
                Term::Fold(_) => false,
                Term::Node { head, children, .. } => {
                    let head_ok = match head {
                        Head::Kind(k) => k.attr_specs().is_empty(),
                        Head::Proj(_) => true,
                        Head::OpVar(..) => false,
                    };
                    head_ok && children.iter().all(plain)
                }
            }
        }
        self.conditions.is_empty() && plain(&self.lhs) && plain(&self.rhs)
    }

    /// The rewrite the e-graph runs.
    pub fn to_rule(self) -> Result<Rule, String> {
        let rule = Arc::new(self);
        let err = |e: String| format!("rule {}: {e}", rule.name);
        let rewrite = if rule.is_plain() {
            let lhs = egg::Pattern::new(rule.pattern_ast(&rule.lhs).map_err(err)?);
            let rhs = egg::Pattern::new(rule.pattern_ast(&rule.rhs).map_err(err)?);
            Rewrite::new(rule.name.as_str(), lhs, TypedPattern { rhs })
        } else {
            Ok(ByClass::rewrite(&rule.name, rule.clone()))
        }
        .map_err(err)?;
        Ok(Rule {
            rewrite,
            data: Some(rule),
        })
    }

    fn pattern_ast(&self, t: &Term) -> Result<PatternAst<ENode>, String> {
        fn add(r: &DataRule, t: &Term, ast: &mut PatternAst<ENode>) -> Result<Id, String> {
            Ok(match t {
                Term::Var(v) => {
                    let var: egg::Var = format!("?{}", r.vars[*v].name)
                        .parse()
                        .map_err(|e| format!("{e}"))?;
                    ast.add(ENodeOrVar::Var(var))
                }
                Term::Node { head, children, .. } => {
                    let ch = children
                        .iter()
                        .map(|c| add(r, c, ast))
                        .collect::<Result<Vec<_>, _>>()?;
                    let node = match head {
                        Head::Kind(k) => {
                            let op = k.build(Attrs::new(k.name())).map_err(|e| e.msg)?;
                            ENode::from_op(op, ch)
                        }
                        Head::Proj(i) => ENode {
                            kind: ENodeKind::Proj(*i),
                            children: ch,
                        },
                        Head::OpVar(..) => return Err("an op variable is not plain".into()),
                    };
                    ast.add(ENodeOrVar::ENode(node))
                }
                Term::Fold(_) => return Err("fold is not plain".into()),
            })
        }
        let mut ast = PatternAst::default();
        add(self, t, &mut ast)?;
        Ok(ast)
    }
}

impl ClassRewrite for DataRule {
    fn results(&self, eg: &OptEGraph, class: Id) -> Vec<Build> {
        DataRule::results(self, eg, class)
    }
}
