//! Graphviz DOT output of a graph (`optc explain --emit dot`).

use crate::{Graph, Op};
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The graph as a DOT digraph: one box per op (name, op, output types), ellipses for
/// inputs, small boxes for constants, edges labelled with ports of multi-port nodes.
pub fn to_dot(graph: &Graph) -> String {
    let mut s = String::from(
        "digraph optc {\n  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n",
    );
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.g.node_indices().collect());
    for n in &order {
        let node = graph.node(*n);
        let tys: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
        let (shape, label) = match &node.op {
            Op::Input { .. } => (
                "ellipse",
                format!("{}\\n{}", esc(&node.name), tys.join(", ")),
            ),
            Op::Constant { id } => ("note", format!("c{} {}", id.0, tys.join(", "))),
            op => (
                "box",
                format!("{}\\n{}\\n{}", esc(&node.name), op.name(), tys.join(", ")),
            ),
        };
        let _ = writeln!(s, "  n{} [shape={shape}, label=\"{label}\"];", n.index());
    }
    for n in &order {
        let multi_in = graph.node_inputs(*n).len() > 1;
        for (port, v) in graph.node_inputs(*n).iter().enumerate() {
            let multi_out = graph.node(v.node).outputs.len() > 1;
            let label = match (multi_out, multi_in) {
                (true, _) => format!(" [label=\"{}→{}\"]", v.port, port),
                (false, true) => format!(" [label=\"{port}\"]"),
                _ => String::new(),
            };
            let _ = writeln!(s, "  n{} -> n{}{label};", v.node.index(), n.index());
        }
    }
    for (i, o) in graph.outputs.iter().enumerate() {
        let _ = writeln!(
            s,
            "  out{i} [shape=doublecircle, label=\"{}\"];",
            esc(&o.name)
        );
        let _ = writeln!(s, "  n{} -> out{i};", o.value.node.index());
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use crate::{Graph, Op, TensorType, UnaryOp};

    #[test]
    fn dot_lists_every_node_and_edge() {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::f32(&[2]));
        let y = g.add("r\"1", Op::Unary(UnaryOp::Relu), &[x]).unwrap();
        g.add_output("y", y);
        let d = super::to_dot(&g);
        assert!(d.starts_with("digraph"));
        assert!(d.contains("relu") && d.contains("r\\\"1") && d.contains("->"));
        assert_eq!(d.matches("->").count(), 2);
    }
}
