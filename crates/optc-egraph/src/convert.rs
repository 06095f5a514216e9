//! IR ⇄ e-graph.

use crate::analysis::{OptAnalysis, OptEGraph};
use crate::lang::{ENode, Kind};
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
            Op::Input { index } => Kind::Input(*index),
            Op::Constant { id } => Kind::Const(*id),
            op => Kind::Op(crate::lang::OpKey::new(op.clone())),
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
            kind: Kind::Proj(v.port),
            children: vec![id],
        }))
    } else {
        Ok(id)
    }
}

/// Extract the cheapest graph from the e-graph by `cost`.
pub fn to_graph<C: CostFunction<ENode>>(c: &Converted, cost: C) -> Result<Graph> {
    let eg = &c.egraph;
    let ex = Extractor::new(eg, cost);
    let mut g = Graph::new();
    g.consts = eg.analysis.consts.clone();
    let mut inputs = vec![];
    for (i, name) in c.input_names.iter().enumerate() {
        inputs.push(g.add_input(name, eg.analysis.input_types[i].clone()));
    }
    let mut built: HashMap<Id, Vec<Value>> = HashMap::new();
    let mut used_names: HashSet<String> = c.input_names.iter().cloned().collect();
    let mut counter = 0usize;
    for (name, root) in &c.roots {
        let v = build(
            eg,
            &ex,
            *root,
            &mut g,
            &inputs,
            &mut built,
            &c.names,
            &mut used_names,
            &mut counter,
            0,
        )?;
        g.add_output(name, v);
    }
    g.compact_consts()?;
    g.verify()?;
    Ok(g)
}

#[allow(clippy::too_many_arguments)]
fn build<C: CostFunction<ENode>>(
    eg: &OptEGraph,
    ex: &Extractor<C, ENode, OptAnalysis>,
    id: Id,
    g: &mut Graph,
    inputs: &[Value],
    built: &mut HashMap<Id, Vec<Value>>,
    names: &HashMap<Id, String>,
    used: &mut HashSet<String>,
    counter: &mut usize,
    depth: usize,
) -> Result<Value> {
    let id = eg.find(id);
    if let Some(v) = built.get(&id) {
        return Ok(v[0]);
    }
    if depth > 100_000 {
        bail!("extraction recursed too deep");
    }
    let node = ex.find_best_node(id).clone();
    let v = match &node.kind {
        Kind::Input(i) => inputs[*i],
        Kind::Const(cid) => {
            let name = fresh(names.get(&id), used, counter);
            g.add_const_ref(&name, *cid)?
        }
        Kind::Proj(i) => {
            let tuple = eg.find(node.children[0]);
            if !built.contains_key(&tuple) {
                let tnode = ex.find_best_node(tuple).clone();
                let Kind::Op(k) = &tnode.kind else {
                    bail!("proj of a non-op")
                };
                let mut ch = vec![];
                for &c in &tnode.children {
                    ch.push(build(
                        eg,
                        ex,
                        c,
                        g,
                        inputs,
                        built,
                        names,
                        used,
                        counter,
                        depth + 1,
                    )?);
                }
                let name = fresh(names.get(&tuple), used, counter);
                let outs = g.add_node(&name, k.op.clone(), &ch)?;
                built.insert(tuple, outs);
            }
            built[&tuple][*i]
        }
        Kind::Op(k) => {
            let mut ch = vec![];
            for &c in &node.children {
                ch.push(build(
                    eg,
                    ex,
                    c,
                    g,
                    inputs,
                    built,
                    names,
                    used,
                    counter,
                    depth + 1,
                )?);
            }
            let name = fresh(names.get(&id), used, counter);
            let outs = g.add_node(&name, k.op.clone(), &ch)?;
            if outs.len() != 1 {
                built.insert(id, outs.clone());
                return Ok(outs[0]);
            }
            outs[0]
        }
    };
    built.insert(id, vec![v]);
    Ok(v)
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
