//! Soundness of every registered rule. A rule as data is checked by
//! `optc_egraph::soundness::check` (its left side instantiated on random shapes, dtypes,
//! attributes and values, both sides run in the reference interpreter and compared
//! exactly). A Rust rule is checked on its soundness `Case`s: the graph is optimized with
//! the rule's pass and compared with the interpreter (with a tolerance: weight math
//! rounds). A Rust rule without a case fails this test.

use optc_egraph::soundness::{check, Verdict};
use optc_egraph::{CostModel, Limits, Pass};
use optc_ir::{Graph, Op, TensorType, Value};

/// Optimize `g` with `pass` and compare with the interpreter on several random inputs;
/// returns how often `rule` fired.
fn check_equivalent(label: &str, g: &Graph, pass: &Pass, rule: &str) -> usize {
    let (opt, report) = optc_egraph::optimize(
        g,
        std::slice::from_ref(pass),
        3,
        &Limits::default(),
        &CostModel::host(),
    )
    .unwrap_or_else(|e| panic!("{label}: optimize failed: {e}"));
    opt.verify()
        .unwrap_or_else(|e| panic!("{label}: optimized graph invalid: {e}"));
    let fired: usize = report
        .phases
        .iter()
        .map(|p| p.rules_fired.get(rule).copied().unwrap_or(0))
        .sum();
    for seed in 0..4 {
        let inputs = optc::random_inputs(&g.input_types(), seed);
        let a = optc_ir::interp::run(g, &inputs).unwrap_or_else(|e| panic!("{label}: lhs: {e}"));
        let b = optc_ir::interp::run(&opt, &inputs).unwrap_or_else(|e| panic!("{label}: rhs: {e}"));
        for (x, y) in a.iter().zip(&b) {
            let d = optc::compare(y, x, 1e-5, 1e-6).unwrap_or_else(|e| panic!("{label}: {e}"));
            assert!(
                d.allclose,
                "{label}: rewrite changed the result: {d:?}\n{x:?}\n{y:?}"
            );
        }
    }
    fired
}

#[test]
fn every_rule_is_sound_and_has_a_case() {
    let passes = optc::passes();
    let mut missing = vec![];
    let mut checked = 0;
    for p in &passes {
        for rule in &p.rules {
            let name = rule.name().to_string();
            if let Some(data) = &rule.data {
                match check(data) {
                    Verdict::Sound { instances } => checked += instances,
                    Verdict::Unsound(c) => panic!("{}/{name} is unsound:\n{c}", p.name),
                    Verdict::NotChecked(why) => panic!("{}/{name}: not checked: {why}", p.name),
                }
            } else {
                let cases: Vec<_> = p.cases.iter().filter(|c| c.rule == name).collect();
                if cases.is_empty() {
                    missing.push(format!("{}/{name}", p.name));
                    continue;
                }
                for c in cases {
                    for seed in 1..6 {
                        let g = (c.make)(seed);
                        let fired = check_equivalent(
                            &format!("{}/{name} seed {seed}", p.name),
                            &g,
                            p,
                            &name,
                        );
                        assert!(
                            fired > 0,
                            "{}/{name}: its soundness case (seed {seed}) does not make it fire",
                            p.name
                        );
                        checked += 1;
                    }
                }
            }
        }
        // passes without rules (fold) still need their cases to be sound
        for c in p
            .cases
            .iter()
            .filter(|c| !p.rules.iter().any(|r| r.name() == c.rule))
        {
            for seed in 1..6 {
                let g = (c.make)(seed);
                check_equivalent(&format!("{}/{} seed {seed}", p.name, c.rule), &g, p, c.rule);
                checked += 1;
            }
        }
    }
    assert!(
        missing.is_empty(),
        "rules without a soundness case: {}",
        missing.join(", ")
    );
    assert!(checked > 200, "only {checked} soundness checks ran");
}

#[test]
fn folding_removes_constant_subexpressions() {
    let g = optc_pass_fold::case(3);
    let (opt, _) = optc_egraph::optimize(
        &g,
        &optc::passes(),
        1,
        &Limits::default(),
        &CostModel::host(),
    )
    .unwrap();
    let ops: Vec<&str> = opt.g.node_weights().map(|n| n.op.name()).collect();
    assert!(!ops.contains(&"exp") && !ops.contains(&"mul"), "{ops:?}");
    assert!(ops.contains(&"add"), "{ops:?}");
}

#[test]
fn large_generated_graph_terminates_within_limits() {
    // 2,000 nodes of elementwise ops with shared subterms; -O3 must stop on its own.
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[4, 8]));
    let y = g.add_input("y", TensorType::f32(&[4, 8]));
    let mut vals = vec![x, y];
    let ops = [
        Op::Binary(optc_ir::BinaryOp::Add),
        Op::Binary(optc_ir::BinaryOp::Mul),
        Op::Unary(optc_ir::UnaryOp::Relu),
        Op::Unary(optc_ir::UnaryOp::Neg),
        Op::Binary(optc_ir::BinaryOp::Max),
    ];
    let mut s: u64 = 88172645463325252;
    for i in 0..2000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let op = ops[(s % 5) as usize].clone();
        let a = vals[vals.len() - 1 - (s as usize >> 8) % vals.len().min(8)];
        let b = vals[vals.len() - 1 - (s as usize >> 16) % vals.len().min(16)];
        let ins: Vec<Value> = if op.arity().0 == 2 {
            vec![a, b]
        } else {
            vec![a]
        };
        vals.push(g.add(&format!("n{i}"), op, &ins).unwrap());
    }
    g.add_output("out", *vals.last().unwrap());
    let (opt, report) = optc_egraph::optimize(
        &g,
        &optc::passes(),
        3,
        &Limits::default(),
        &CostModel::host(),
    )
    .unwrap();
    assert!(!report.phases[0].stop_reason.is_empty());
    opt.verify().unwrap();
    let inputs = optc::random_inputs(&g.input_types(), 1);
    let a = optc_ir::interp::run(&g, &inputs).unwrap();
    let b = optc_ir::interp::run(&opt, &inputs).unwrap();
    let d = optc::compare(&b[0], &a[0], 1e-4, 1e-5).unwrap();
    assert!(d.allclose, "{d:?}");
    // and it compiles to machine code at -O3 and runs like the interpreter
    let opts = optc::Options {
        opt_level: 3,
        ..Default::default()
    };
    let mut m = optc::compile_graph(g.clone(), &opts).unwrap();
    let c = m.run(&inputs).unwrap();
    let d = optc::compare(&c[0], &a[0], 1e-4, 1e-5).unwrap();
    assert!(d.allclose, "{d:?}");
}
