//! The e-graph language: one e-node per IR op, attributes included.
//!
//! Op names in `.rules` files come from the op table (`optc_ir::OpKind::from_name`); see
//! [`crate::pattern`].

use egg::{Id, Language};
use optc_ir::{ConstId, Op};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// An IR op inside an e-node. Equality, order and hash go by a canonical key (the op's
/// `Debug` form, which includes every attribute), so two ops are the same e-node
/// operator exactly when they are the same op with the same attributes.
#[derive(Clone, Debug)]
pub struct OpKey {
    pub op: Op,
    key: String,
}

impl OpKey {
    pub fn new(op: Op) -> OpKey {
        let key = format!("{op:?}");
        OpKey { op, key }
    }
}

impl PartialEq for OpKey {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
    }
}
impl Eq for OpKey {}
impl Hash for OpKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.key.hash(h)
    }
}
impl PartialOrd for OpKey {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OpKey {
    fn cmp(&self, o: &Self) -> Ordering {
        self.key.cmp(&o.key)
    }
}

/// What an e-node computes (its operator; the children are its operands).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ENodeKind {
    /// Graph input number n.
    Input(usize),
    /// A constant from the optimizer's constant table.
    Const(ConstId),
    /// An IR op. Multi-output ops (Split) produce a tuple, read by `Proj`.
    Op(OpKey),
    /// Output `i` of a multi-output op (its only child).
    Proj(usize),
}

/// An e-node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ENode {
    pub kind: ENodeKind,
    pub children: Vec<Id>,
}

impl ENode {
    /// An e-node computing `op` on `children`.
    pub fn from_op(op: Op, children: Vec<Id>) -> ENode {
        ENode {
            kind: ENodeKind::Op(OpKey::new(op)),
            children,
        }
    }

    /// The IR op this e-node computes, unless it is an input, a constant or a projection.
    pub fn op(&self) -> Option<&Op> {
        match &self.kind {
            ENodeKind::Op(k) => Some(&k.op),
            _ => None,
        }
    }
}

impl Language for ENode {
    type Discriminant = ENodeKind;
    fn discriminant(&self) -> ENodeKind {
        self.kind.clone()
    }
    fn matches(&self, other: &Self) -> bool {
        self.kind == other.kind && self.children.len() == other.children.len()
    }
    fn children(&self) -> &[Id] {
        &self.children
    }
    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

impl fmt::Display for ENode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ENodeKind::Input(i) => write!(f, "input{i}"),
            ENodeKind::Const(c) => write!(f, "c{}", c.0),
            ENodeKind::Proj(i) => write!(f, "proj{i}"),
            ENodeKind::Op(k) => f.write_str(k.op.name()),
        }
    }
}
