//! IR ⇄ e-graph.

use crate::analysis::{OptAnalysis, OptEGraph};
use crate::lang::{ENode, ENodeKind};
use egg::{CostFunction, Extractor, Id};
use optc_ir::{bail, Graph, NodeId, Op, Result, Value};
use std::collections::{HashMap, HashSet};

/// An e-graph made from a graph, with what is needed to turn it back into one.
pub struct Converted {
    pub egraph: OptEGraph,
    /// One class per graph output, in order, with the output's name.
    pub roots: Vec<(String, Id)>,
    pub input_names: Vec<String>,
    /// Preferred node names per class (the IR name of the first node that became it).
    pub names: HashMap<Id, String>,
    /// The class of each graph node (a multi-output node's class is its tuple).
    pub classes: HashMap<NodeId, Id>,
}

/// Build an e-graph holding `graph`. `fold_limit`: see [`OptAnalysis::fold_limit`].
pub fn to_egraph(graph: &Graph, fold_limit: usize) -> Result<Converted> {
    graph.verify()?;
    let analysis = OptAnalysis::new(graph.input_types(), graph.consts.clone(), fold_limit);
    let mut eg = OptEGraph::new(analysis);
    let mut class: HashMap<NodeId, Id> = HashMap::new();
    let mut names = HashMap::new();
    for n in graph.topo_order()? {
        let node = graph.node(n);
        let kind = match &node.op {
            Op::Input { index } => ENodeKind::Input(*index),
            Op::Constant { id } => ENodeKind::Const(*id),
            op => ENodeKind::Op(crate::lang::OpKey::new(op.clone())),
        };
        let mut children = vec![];
        for v in graph.node_inputs(n) {
            children.push(value_class(&mut eg, &class, graph, v)?);
        }
        let id = eg.add(ENode { kind, children });
        names
            .entry(eg.find(id))
            .or_insert_with(|| node.name.clone());
        class.insert(n, id);
    }
    let mut roots = vec![];
    for o in &graph.outputs {
        roots.push((
            o.name.clone(),
            value_class(&mut eg, &class, graph, o.value)?,
        ));
    }
    eg.analysis.roots = roots.iter().map(|r| r.1).collect();
    eg.rebuild();
    Ok(Converted {
        egraph: eg,
        roots,
        input_names: graph.inputs.iter().map(|i| i.name.clone()).collect(),
        names,
        classes: class,
    })
}

fn value_class(
    eg: &mut OptEGraph,
    class: &HashMap<NodeId, Id>,
    graph: &Graph,
    v: Value,
) -> Result<Id> {
    let Some(&id) = class.get(&v.node) else {
        bail!(
            "value of node {} used before it is defined",
            graph.node(v.node).name
        )
    };
    if graph.node(v.node).outputs.len() > 1 {
        Ok(eg.add(ENode {
            kind: ENodeKind::Proj(v.port),
            children: vec![id],
        }))
    } else {
        Ok(id)
    }
}

/// Extract the cheapest graph from the e-graph by `cost`.
pub fn to_graph<C: CostFunction<ENode>>(c: &Converted, cost: C) -> Result<Graph> {
    let eg = &c.egraph;
    let mut x = Extraction {
        eg,
        ex: Extractor::new(eg, cost),
        g: Graph::new(),
        inputs: vec![],
        built: HashMap::new(),
        names: &c.names,
        used: c.input_names.iter().cloned().collect(),
        counter: 0,
    };
    x.g.consts = eg.analysis.consts.clone();
    for (i, name) in c.input_names.iter().enumerate() {
        let v = x.g.add_input(name, eg.analysis.input_types[i].clone());
        x.inputs.push(v);
    }
    for (name, root) in &c.roots {
        let v = x.value(*root, 0)?;
        x.g.add_output(name, v);
    }
    let mut g = x.g;
    g.compact_consts()?;
    g.verify()?;
    Ok(g)
}

/// The state of one extraction: the graph built so far and the IR values of the classes
/// already in it.
struct Extraction<'a, C: CostFunction<ENode>> {
    eg: &'a OptEGraph,
    ex: Extractor<'a, C, ENode, OptAnalysis>,
    g: Graph,
    inputs: Vec<Value>,
    built: HashMap<Id, Vec<Value>>,
    names: &'a HashMap<Id, String>,
    used: HashSet<String>,
    counter: usize,
}

impl<C: CostFunction<ENode>> Extraction<'_, C> {
    /// The IR value of class `id`, building its best term first if needed.
    fn value(&mut self, id: Id, depth: usize) -> Result<Value> {
        let id = self.eg.find(id);
        if let Some(v) = self.built.get(&id) {
            return Ok(v[0]);
        }
        if depth > 100_000 {
            bail!("extraction recursed too deep");
        }
        let node = self.ex.find_best_node(id).clone();
        let v = match &node.kind {
            ENodeKind::Input(i) => self.inputs[*i],
            ENodeKind::Const(cid) => {
                let name = fresh(self.names.get(&id), &mut self.used, &mut self.counter);
                self.g.add_const_ref(&name, *cid)?
            }
            ENodeKind::Proj(i) => {
                let tuple = self.eg.find(node.children[0]);
                if !self.built.contains_key(&tuple) {
                    let tnode = self.ex.find_best_node(tuple).clone();
                    let ENodeKind::Op(k) = &tnode.kind else {
                        bail!("proj of a non-op")
                    };
                    let outs = self.op_node(tuple, &k.op, &tnode.children, depth)?;
                    self.built.insert(tuple, outs);
                }
                self.built[&tuple][*i]
            }
            ENodeKind::Op(k) => {
                let outs = self.op_node(id, &k.op, &node.children, depth)?;
                if outs.len() != 1 {
                    self.built.insert(id, outs.clone());
                    return Ok(outs[0]);
                }
                outs[0]
            }
        };
        self.built.insert(id, vec![v]);
        Ok(v)
    }

    /// Add `op` over the values of `children` as the node of class `id`.
    fn op_node(&mut self, id: Id, op: &Op, children: &[Id], depth: usize) -> Result<Vec<Value>> {
        let mut ch = vec![];
        for &c in children {
            ch.push(self.value(c, depth + 1)?);
        }
        let name = fresh(self.names.get(&id), &mut self.used, &mut self.counter);
        self.g.add_node(&name, op.clone(), &ch)
    }
}

/// A unique node name: the preferred one if free, else `n<k>`.
fn fresh(base: Option<&String>, used: &mut HashSet<String>, counter: &mut usize) -> String {
    if let Some(b) = base {
        if used.insert(b.clone()) {
            return b.clone();
        }
    }
    loop {
        *counter += 1;
        let n = format!("n{counter}");
        if used.insert(n.clone()) {
            return n;
        }
    }
}
