//! The `simplify` pass: no-op removal and merging of data movement. See README.md.
//!
//! All its rules are data (`simplify.rules`), checked by `tests/soundness.rs`.

use optc_egraph::{rules, Pass};

const RULES: &str = include_str!("../simplify.rules");

/// The pass.
pub fn pass() -> Pass {
    Pass {
        name: "simplify",
        level: 1,
        exact: true,
        folds: false,
        rules: rules::load_rules(RULES, "passes/simplify/simplify.rules")
            .expect("simplify.rules parses"),
        cases: vec![],
    }
}
