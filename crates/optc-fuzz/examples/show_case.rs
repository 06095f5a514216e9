//! Print a case of a fuzz target: the graph it builds (or imports) with its constants,
//! and the interpreter's and optc's outputs.
//! `cargo run -p optc-fuzz --example show_case -- import|graphs FILE [LEVEL]`
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[2]).expect("file reads");
    let graph = match args[1].as_str() {
        "graphs" => optc_fuzz::graphs::generate(&data).expect("a graph"),
        _ => optc_fuzz::import::import(&data).expect("imports"),
    };
    println!("{}", optc_ir::text::print(&graph));
    for (i, c) in graph.consts.iter().enumerate() {
        println!("c{i}: {:?}", c.to_f64_vec());
    }
    let level: u8 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(2);
    let inputs = optc::random_inputs(&graph.input_types(), 1);
    let want = optc_ir::interp::run(&graph, &inputs);
    println!(
        "interpreter: {:?}",
        want.map(|w| w.iter().map(|t| t.to_f64_vec()).collect::<Vec<_>>())
    );
    let opts = optc::Options {
        opt_level: level,
        ..Default::default()
    };
    let got = optc::compile_graph(graph.clone(), &opts).and_then(|mut m| m.run(&inputs));
    println!(
        "optc -O{level}: {:?}",
        got.map(|w| w.iter().map(|t| t.to_f64_vec()).collect::<Vec<_>>())
    );
}
