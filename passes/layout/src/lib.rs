//! The `layout` pass: transpose sinking and cancellation. See README.md.
//!
//! All its rules are data (`layout.rules`), checked by `tests/soundness.rs`.

use optc_egraph::{rules, Pass};

const RULES: &str = include_str!("../layout.rules");

/// The pass.
pub fn pass() -> Pass {
    Pass {
        name: "layout",
        level: 2,
        exact: true,
        folds: false,
        rules: rules::load_rules(RULES, "passes/layout/layout.rules").expect("layout.rules parses"),
        cases: vec![],
    }
}
