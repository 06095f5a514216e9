//! Target: the IR text parser.

/// Parse `data` as optc's IR text: an error is fine; a graph that parses must verify,
/// print, and parse back to the same text.
pub fn target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(graph) = optc_ir::text::parse(text, &[]) else {
        return;
    };
    if graph.verify().is_err() {
        return;
    }
    let printed = optc_ir::text::print(&graph);
    let again = match optc_ir::text::parse(&printed, &graph.consts) {
        Ok(g) => g,
        Err(e) => panic!("printed text does not parse back: {e}\n{printed}"),
    };
    assert_eq!(
        optc_ir::text::print(&again),
        printed,
        "printing is not stable across a parse"
    );
    if crate::import::small(&graph) && graph.inputs.len() <= 8 {
        let inputs = optc::random_inputs(&graph.input_types(), 3);
        let _ = optc_ir::interp::run(&graph, &inputs);
    }
}
