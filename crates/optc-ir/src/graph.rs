//! The dataflow graph: a `petgraph::StableDiGraph` of [`Node`]s joined by port edges.

use crate::{bail, ConstId, IrError, Op, Result, Tensor, TensorType};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashSet;
use std::sync::Arc;

pub use petgraph::stable_graph::NodeIndex as NodeId;

/// A node: an op, a stable name, and its output types (one per output port).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub outputs: Vec<TensorType>,
}

/// An edge from output port `src_port` of its source to input port `dst_port` of its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Edge {
    pub src_port: usize,
    pub dst_port: usize,
}

/// A value: output `port` of `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    pub node: NodeIndex,
    pub port: usize,
}

impl Value {
    pub fn new(node: NodeIndex, port: usize) -> Value {
        Value { node, port }
    }
}

/// A named graph input; `node` holds `Op::Input { index }` with `index` its position.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphInput {
    pub name: String,
    pub node: NodeIndex,
}

/// A named graph output.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphOutput {
    pub name: String,
    pub value: Value,
}

/// A model: nodes, inputs, outputs and the constant table.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub g: StableDiGraph<Node, Edge>,
    pub inputs: Vec<GraphInput>,
    pub outputs: Vec<GraphOutput>,
    /// Constant tensors, referenced by `Op::Constant { id }`.
    pub consts: Vec<Arc<Tensor>>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Add a graph input.
    pub fn add_input(&mut self, name: &str, ty: TensorType) -> Value {
        let index = self.inputs.len();
        let node = self.g.add_node(Node {
            name: name.to_string(),
            op: Op::Input { index },
            outputs: vec![ty],
        });
        self.inputs.push(GraphInput {
            name: name.to_string(),
            node,
        });
        Value::new(node, 0)
    }

    /// Put a tensor into the constant table (no node).
    pub fn add_const_tensor(&mut self, t: Arc<Tensor>) -> ConstId {
        self.consts.push(t);
        ConstId(self.consts.len() as u32 - 1)
    }

    /// Add a constant node holding `t`.
    pub fn add_const(&mut self, name: &str, t: impl Into<Arc<Tensor>>) -> Value {
        let t = t.into();
        let ty = t.ty();
        let id = self.add_const_tensor(t);
        let node = self.g.add_node(Node {
            name: name.to_string(),
            op: Op::Constant { id },
            outputs: vec![ty],
        });
        Value::new(node, 0)
    }

    /// Add a constant node referring to an existing table entry.
    pub fn add_const_ref(&mut self, name: &str, id: ConstId) -> Result<Value> {
        let ty = match self.consts.get(id.0 as usize) {
            Some(t) => t.ty(),
            None => bail!("constant c{} does not exist", id.0),
        };
        let node = self.g.add_node(Node {
            name: name.to_string(),
            op: Op::Constant { id },
            outputs: vec![ty],
        });
        Ok(Value::new(node, 0))
    }

    /// Add an op node; infers its output types. The error names the node.
    pub fn add_node(&mut self, name: &str, op: Op, inputs: &[Value]) -> Result<Vec<Value>> {
        if matches!(op, Op::Input { .. } | Op::Constant { .. }) {
            bail!("node {name}: use add_input / add_const for {}", op.name());
        }
        let tys: Vec<TensorType> = inputs
            .iter()
            .map(|v| self.value_type(*v).cloned())
            .collect::<Result<_>>()?;
        let refs: Vec<&TensorType> = tys.iter().collect();
        let outputs = op
            .infer(&refs)
            .map_err(|e| IrError::new(format!("node {name} ({}): {}", op.name(), e)))?;
        for t in &outputs {
            crate::checked_numel(&t.shape)
                .map_err(|e| IrError::new(format!("node {name} ({}): {}", op.name(), e.msg)))?;
        }
        let n = outputs.len();
        let node = self.g.add_node(Node {
            name: name.to_string(),
            op,
            outputs,
        });
        for (dst_port, v) in inputs.iter().enumerate() {
            self.g.add_edge(
                v.node,
                node,
                Edge {
                    src_port: v.port,
                    dst_port,
                },
            );
        }
        Ok((0..n).map(|p| Value::new(node, p)).collect())
    }

    /// Add a single-output op node.
    pub fn add(&mut self, name: &str, op: Op, inputs: &[Value]) -> Result<Value> {
        let v = self.add_node(name, op, inputs)?;
        if v.len() != 1 {
            bail!("node {name} has {} outputs, expected one", v.len());
        }
        Ok(v[0])
    }

    pub fn add_output(&mut self, name: &str, value: Value) {
        self.outputs.push(GraphOutput {
            name: name.to_string(),
            value,
        });
    }

    pub fn node(&self, n: NodeIndex) -> &Node {
        &self.g[n]
    }

    pub fn node_mut(&mut self, n: NodeIndex) -> &mut Node {
        &mut self.g[n]
    }

    pub fn value_type(&self, v: Value) -> Result<&TensorType> {
        match self.g.node_weight(v.node) {
            Some(n) => match n.outputs.get(v.port) {
                Some(t) => Ok(t),
                None => bail!("node {} has no output {}", n.name, v.port),
            },
            None => bail!("value refers to a removed node"),
        }
    }

    /// The tensor of a constant node, if it is one.
    pub fn const_value(&self, v: Value) -> Option<&Arc<Tensor>> {
        match self.g.node_weight(v.node)?.op {
            Op::Constant { id } => self.consts.get(id.0 as usize),
            _ => None,
        }
    }

    pub fn const_tensor(&self, id: ConstId) -> Option<&Arc<Tensor>> {
        self.consts.get(id.0 as usize)
    }

    /// Inputs of a node, ordered by input port.
    pub fn node_inputs(&self, n: NodeIndex) -> Vec<Value> {
        let mut ins: Vec<(usize, Value)> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .map(|e| {
                (
                    e.weight().dst_port,
                    Value::new(e.source(), e.weight().src_port),
                )
            })
            .collect();
        ins.sort_by_key(|(p, _)| *p);
        ins.into_iter().map(|(_, v)| v).collect()
    }

    /// Consumers of a node's outputs: `(consumer, src_port, dst_port)`.
    pub fn node_users(&self, n: NodeIndex) -> Vec<(NodeIndex, usize, usize)> {
        let mut u: Vec<_> = self
            .g
            .edges_directed(n, Direction::Outgoing)
            .map(|e| (e.target(), e.weight().src_port, e.weight().dst_port))
            .collect();
        u.sort();
        u
    }

    /// Redirect every use of `from` (edges and graph outputs) to `to`.
    pub fn replace_uses(&mut self, from: Value, to: Value) {
        let edges: Vec<_> = self
            .g
            .edges_directed(from.node, Direction::Outgoing)
            .filter(|e| e.weight().src_port == from.port)
            .map(|e| (e.id(), e.target(), e.weight().dst_port))
            .collect();
        for (id, target, dst_port) in edges {
            self.g.remove_edge(id);
            self.g.add_edge(
                to.node,
                target,
                Edge {
                    src_port: to.port,
                    dst_port,
                },
            );
        }
        for o in &mut self.outputs {
            if o.value == from {
                o.value = to;
            }
        }
    }

    /// Remove nodes that no graph output depends on (graph inputs are kept).
    pub fn remove_dead(&mut self) -> usize {
        let mut live = HashSet::new();
        let mut stack: Vec<NodeIndex> = self.outputs.iter().map(|o| o.value.node).collect();
        stack.extend(self.inputs.iter().map(|i| i.node));
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<_> = self
            .g
            .node_indices()
            .filter(|n| !live.contains(n))
            .collect();
        for &n in &dead {
            self.g.remove_node(n);
        }
        dead.len()
    }

    /// Drop constants no node uses and renumber the rest in order of first use
    /// (topological order), so the table holds exactly the model's weights.
    pub fn compact_consts(&mut self) -> Result<()> {
        let order = self.topo_order()?;
        let mut map = std::collections::HashMap::new();
        let mut table = vec![];
        for n in order {
            if let Op::Constant { id } = self.g[n].op {
                let new = *map.entry(id).or_insert_with(|| {
                    table.push(self.consts[id.0 as usize].clone());
                    ConstId(table.len() as u32 - 1)
                });
                self.g[n].op = Op::Constant { id: new };
            }
        }
        self.consts = table;
        Ok(())
    }

    /// Nodes in a deterministic topological order (ties broken by insertion order).
    pub fn topo_order(&self) -> Result<Vec<NodeIndex>> {
        let mut indeg: std::collections::HashMap<NodeIndex, usize> = self
            .g
            .node_indices()
            .map(|n| (n, self.g.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: std::collections::BTreeSet<NodeIndex> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| n)
            .collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(&n) = ready.iter().next() {
            ready.remove(&n);
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).unwrap();
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        if order.len() != self.g.node_count() {
            let stuck: Vec<String> = self
                .g
                .node_indices()
                .filter(|n| indeg[n] > 0)
                .take(5)
                .map(|n| self.g[n].name.clone())
                .collect();
            bail!("the graph has a cycle through node(s) {}", stuck.join(", "));
        }
        Ok(order)
    }

    /// Check every invariant: acyclic, input ports complete, types agree with inference,
    /// constants exist, inputs/outputs valid, names unique.
    pub fn verify(&self) -> Result<()> {
        let order = self.topo_order()?;
        let mut names = HashSet::new();
        for &n in &order {
            let node = &self.g[n];
            if !names.insert(node.name.as_str()) {
                bail!("node name {} is used twice", node.name);
            }
            let ins = self.node_inputs(n);
            for (i, _) in ins.iter().enumerate() {
                let ports: Vec<_> = self
                    .g
                    .edges_directed(n, Direction::Incoming)
                    .filter(|e| e.weight().dst_port == i)
                    .collect();
                if ports.len() != 1 {
                    bail!(
                        "node {}: input port {} has {} edges",
                        node.name,
                        i,
                        ports.len()
                    );
                }
            }
            match &node.op {
                Op::Input { index } => {
                    if self.inputs.get(*index).map(|i| i.node) != Some(n) {
                        bail!("input node {} is not graph input {}", node.name, index);
                    }
                }
                Op::Constant { id } => match self.consts.get(id.0 as usize) {
                    Some(t) if node.outputs == [t.ty()] => {}
                    Some(t) => bail!(
                        "constant node {} is typed {:?} but c{} is {}",
                        node.name,
                        node.outputs,
                        id.0,
                        t.ty()
                    ),
                    None => bail!("constant node {} refers to missing c{}", node.name, id.0),
                },
                op => {
                    let tys: Vec<&TensorType> = ins
                        .iter()
                        .map(|v| self.value_type(*v))
                        .collect::<Result<_>>()?;
                    let inferred = op
                        .infer(&tys)
                        .map_err(|e| IrError::new(format!("node {}: {}", node.name, e)))?;
                    if inferred != node.outputs {
                        bail!(
                            "node {}: stored output types {:?} differ from inferred {:?}",
                            node.name,
                            node.outputs,
                            inferred
                        );
                    }
                }
            }
        }
        for (i, inp) in self.inputs.iter().enumerate() {
            match self.g.node_weight(inp.node) {
                Some(Node {
                    op: Op::Input { index },
                    ..
                }) if *index == i => {}
                _ => bail!("graph input {} does not point at its input node", inp.name),
            }
        }
        for o in &self.outputs {
            self.value_type(o.value)
                .map_err(|e| IrError::new(format!("graph output {}: {}", o.name, e)))?;
        }
        Ok(())
    }

    /// Types of the graph inputs, in order.
    pub fn input_types(&self) -> Vec<TensorType> {
        self.inputs
            .iter()
            .map(|i| self.g[i.node].outputs[0].clone())
            .collect()
    }

    /// Types of the graph outputs, in order.
    pub fn output_types(&self) -> Vec<TensorType> {
        self.outputs
            .iter()
            .map(|o| self.value_type(o.value).unwrap().clone())
            .collect()
    }
}
