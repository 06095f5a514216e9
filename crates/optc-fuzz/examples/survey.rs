//! Run the graphs target on N seeded inputs and print one line per failure (a survey of
//! what differs, before fixing): `cargo run -p optc-fuzz --example survey -- N [SEED]`;
//! each failing input is written to /tmp/survey/<k>.bin for `show_case`.
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    std::panic::set_hook(Box::new(|_| {}));
    let seed: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(99);
    let mut rng = optc_fuzz::source::SplitMix::new(seed);
    let mut failures = 0;
    for k in 0..n {
        let data = rng.bytes(96);
        let r = std::panic::catch_unwind(|| optc_fuzz::graphs::target(&data));
        if let Err(e) = r {
            failures += 1;
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
            let first = msg.lines().next().unwrap_or("").to_string();
            let graph: Vec<&str> = msg
                .lines()
                .skip_while(|l| !l.starts_with("graph("))
                .collect();
            let ops: Vec<String> = graph
                .iter()
                .filter_map(|l| l.split(" = ").nth(1))
                .map(|r| r.split('(').next().unwrap_or("").to_string())
                .collect();
            let path = format!("/tmp/survey/{k}.bin");
            let _ = std::fs::create_dir_all("/tmp/survey");
            let _ = std::fs::write(&path, &data);
            println!("{k}: {first} | {}", ops.join(","));
        }
    }
    println!("{failures} of {n} failed");
}
