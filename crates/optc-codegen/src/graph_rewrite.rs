//! The skeleton of the graph rewrites codegen makes before lowering (the border regions of
//! convs that read mostly padding, the AVX-512 swapped 1x1 convs): the nodes a rewrite picks
//! in the original graph, each replaced in a copy, then the dead nodes and constants
//! dropped.

use crate::error::{CodegenError, Result};
use optc_ir::{Graph, NodeId};

/// The graph with every node `pick` returns a plan for rewritten by `apply` (in
/// topological order, the plans made on the original graph: a rewrite only adds nodes and
/// redirects uses, so what `pick` saw of the others stays true), or `None` when `pick`
/// chose none. `what` names the rewrite in errors.
pub(crate) fn rewrite_picked<P>(
    graph: &Graph,
    what: &str,
    pick: impl Fn(&Graph, NodeId) -> Option<P>,
    apply: impl Fn(&mut Graph, NodeId, P) -> std::result::Result<(), String>,
) -> Result<Option<Graph>> {
    let order = graph
        .topo_order()
        .map_err(|e| CodegenError::new(e.msg.clone()))?;
    let picked: Vec<_> = order
        .into_iter()
        .filter_map(|n| pick(graph, n).map(|p| (n, p)))
        .collect();
    if picked.is_empty() {
        return Ok(None);
    }
    let mut g = graph.clone();
    for (n, p) in picked {
        apply(&mut g, n, p).map_err(|e| CodegenError::new(format!("{what}: {e}")))?;
    }
    g.remove_dead();
    g.compact_consts()
        .map_err(|e| CodegenError::new(e.msg.clone()))?;
    Ok(Some(g))
}
