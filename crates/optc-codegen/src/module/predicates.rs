//! Kernels that only one side of a select needs: the entry function calls them only when
//! the select's condition picks that side.
//!
//! A `where` whose condition is one element (an `If` on a value computed at run time,
//! imported as both branches and a `where` per output) reads both sides, but uses one. A
//! node whose every use is the side a scalar `where` picks when its condition is `c` (or
//! another node that runs only then) runs only when the condition is `c`: its kernel call
//! is skipped otherwise, and the `where` reads whatever its buffer holds on the side it
//! does not pick. Nested `If`s give a node several conditions, all of which must hold; a
//! node with uses under different conditions runs when those they share hold.
//!
//! Whenever a kernel runs, its inputs were computed, and the conditions it tests were too:
//! a producer's conditions are the ones all its uses share, so they are among those of
//! every consumer; a condition computed under other conditions comes after them in the
//! list (ordered by where their values are computed), and the tests stop at the first that
//! fails.

use optc_ir::{Graph, NodeId, Op, Value};
use std::collections::{HashMap, HashSet};

/// A condition of a kernel call: the bool `condition` (one element) is `when`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Predicate {
    pub condition: Value,
    pub when: bool,
}

/// The conditions under which every scheduled node's kernel is called (schedule order),
/// all of which must hold, to be tested in order; empty: always called.
pub(super) fn predicates(graph: &Graph, schedule: &[NodeId]) -> Vec<Vec<Predicate>> {
    let position: HashMap<NodeId, usize> =
        schedule.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    // Graph inputs and constants are not scheduled: they are always there, first.
    let computed_at = |v: Value| position.get(&v.node).map_or(0, |&p| p + 1);
    let outputs: HashSet<NodeId> = graph.outputs.iter().map(|o| o.value.node).collect();
    let mut predicates: Vec<Vec<Predicate>> = vec![vec![]; schedule.len()];
    for (i, &n) in schedule.iter().enumerate().rev() {
        if outputs.contains(&n) {
            continue;
        }
        let mut shared: Option<Vec<Predicate>> = None;
        for (user, _, port) in graph.node_users(n) {
            let Some(&j) = position.get(&user) else {
                shared = Some(vec![]);
                break;
            };
            let mut conditions = predicates[j].clone();
            if let (Op::Where, 1 | 2) = (&graph.node(user).op, port) {
                let condition = graph.node_inputs(user)[0];
                if graph.value_type(condition).is_ok_and(|t| t.numel() == 1) {
                    conditions.push(Predicate {
                        condition,
                        when: port == 1,
                    });
                }
            }
            shared = Some(match shared {
                None => conditions,
                Some(s) => s.into_iter().filter(|p| conditions.contains(p)).collect(),
            });
        }
        let mut conditions = shared.unwrap_or_default();
        conditions.sort_by_key(|p| (computed_at(p.condition), p.condition.port, p.when));
        conditions.dedup();
        // Every condition must be computed before the node runs.
        if conditions.iter().all(|p| computed_at(p.condition) <= i) {
            predicates[i] = conditions;
        }
    }
    predicates
}
