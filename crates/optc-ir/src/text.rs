//! The deterministic text format: [`print`] and [`parse`] round-trip.

use crate::{bail, Graph, Result, Tensor};
use std::sync::Arc;

/// Print a graph. Deterministic: same graph, same text.
pub fn print(graph: &Graph) -> String {
    let _ = graph;
    String::new()
}

/// Parse a graph. Constants too large to print inline are looked up by id in `consts`.
pub fn parse(text: &str, consts: &[Arc<Tensor>]) -> Result<Graph> {
    let _ = (text, consts);
    bail!("text format: parser not implemented yet")
}
