//! Lossy rewrites as alternatives in the e-graph, and extraction under an error budget.
//!
//! A lossy alternative (an int8 contraction, later a pruned, low-rank or sparse one) is NOT
//! equal to what it approximates, so it never joins the exact machinery as an equal: it is
//! an e-node of its own op variant, added to the class of the node it approximates and
//! recorded here with its estimated cost and error. Extraction then picks, per class, the
//! exact node or one alternative:
//!
//! - a [`Choice`] says which alternatives are taken; every other alternative costs infinity
//!   to the extractor ([`ChoiceCost`]), so the graph it builds contains exactly the taken ones;
//! - [`choose`] picks the alternatives under a budget: each alternative has an error (in
//!   units of the budget: the budget is 1.0) and a saving; errors of different classes add
//!   (they are estimated one layer at a time; the measured error of the compiled model
//!   decides in the end). It is a multiple-choice knapsack, solved greedily: start from the
//!   cheapest alternative of every class, then while over budget move the class whose step
//!   to a more accurate choice (another alternative, or the exact node) gives up the least
//!   saving per unit of error removed. [`choose_exhaustive`] solves small instances exactly;
//!   the tests compare the two.
//!
//! Costs and errors are per class, and each class is counted once, however many users it
//! has (the extraction of a DAG, not of a tree that would count shared subterms twice).

use crate::analysis::OptEGraph;
use crate::cost::{CostModel, EGraphCost};
use crate::lang::ENode;
use egg::{CostFunction, Id};
use std::collections::{HashMap, HashSet};

/// One lossy alternative of an e-class.
#[derive(Clone, Debug)]
pub struct Alternative {
    /// The class of the node it approximates (canonical id).
    pub class: Id,
    /// The alternative e-node (already added to `class`).
    pub node: ENode,
    /// Further (class, e-node) pairs taken together with this one (a channel group's other
    /// consumers): forced in their classes when it is taken, banned when it is not. Its
    /// `cost` covers them all.
    pub also: Vec<(Id, ENode)>,
    /// A layer name (the class's IR node name) and what the alternative is, e.g.
    /// `int8 (7-bit weights)`.
    pub layer: String,
    pub label: String,
    /// Estimated seconds of the exact node and of this alternative.
    pub exact_cost: f64,
    pub cost: f64,
    /// Estimated error in units of the budget (the whole budget is 1.0); `None` when not
    /// measured (no budget: counted as 0).
    pub error: Option<f64>,
}

impl Alternative {
    pub fn saving(&self) -> f64 {
        self.exact_cost - self.cost
    }

    /// Every (class, e-node) pair it sets: its own, then `also`.
    pub fn pairs(&self) -> impl Iterator<Item = (Id, &ENode)> {
        std::iter::once((self.class, &self.node)).chain(self.also.iter().map(|(c, n)| (*c, n)))
    }

    /// Classes and children made canonical (after a rebuild of `egraph`).
    pub fn canonicalize(&mut self, egraph: &OptEGraph) {
        let canon = |c: Id, n: &ENode| {
            (
                egraph.find(c),
                egg::Language::map_children(n.clone(), |x| egraph.find(x)),
            )
        };
        (self.class, self.node) = canon(self.class, &self.node);
        for (c, n) in &mut self.also {
            (*c, *n) = canon(*c, n);
        }
    }
}

/// Which alternatives (indices into the list) are taken; at most one per class.
pub type Choice = HashSet<usize>;

/// The extraction cost with a [`Choice`]: a class with a taken alternative can only be that
/// alternative, alternatives not taken cost infinity, the rest cost what the model says; `adjust` may reprice a taken one
/// (e.g. a kernel scheme the op alone does not show).
pub struct ChoiceCost<'a> {
    pub inner: EGraphCost<'a>,
    /// Alternatives not taken.
    pub banned: HashSet<ENode>,
    /// Repriced nodes: seconds instead of the model's own cost.
    pub repriced: HashMap<ENode, f64>,
}

impl<'a> ChoiceCost<'a> {
    pub fn new(
        egraph: &'a OptEGraph,
        model: &CostModel,
        alternatives: &[Alternative],
        choice: &Choice,
    ) -> Self {
        // Alternatives not taken, and every other node of a class whose alternative is taken
        // (the choice is forced, even where the model thinks the exact node cheaper). A node
        // a taken alternative sets is never banned (two alternatives of one group may share
        // the nodes of consumers they leave alike).
        let taken: HashSet<&ENode> = choice
            .iter()
            .flat_map(|&i| alternatives[i].pairs().map(|(_, n)| n))
            .collect();
        let mut banned: HashSet<ENode> = alternatives
            .iter()
            .enumerate()
            .filter(|(i, _)| !choice.contains(i))
            .flat_map(|(_, a)| a.pairs().map(|(_, n)| n.clone()))
            .filter(|n| !taken.contains(n))
            .collect();
        for &i in choice {
            for (class, node) in alternatives[i].pairs() {
                for n in &egraph[class].nodes {
                    if n != node {
                        banned.insert(n.clone());
                    }
                }
            }
        }
        // A taken alternative's cost covers its whole set: the first node carries it.
        let repriced = alternatives
            .iter()
            .enumerate()
            .filter(|(i, _)| choice.contains(i))
            .flat_map(|(_, a)| {
                a.pairs()
                    .enumerate()
                    .map(|(k, (_, n))| (n.clone(), if k == 0 { a.cost } else { 0.0 }))
            })
            .collect();
        ChoiceCost {
            inner: EGraphCost::new(egraph, model.clone()),
            banned,
            repriced,
        }
    }
}

impl CostFunction<ENode> for ChoiceCost<'_> {
    type Cost = f64;
    fn cost<C: FnMut(Id) -> f64>(&mut self, enode: &ENode, mut costs: C) -> f64 {
        if self.banned.contains(enode) {
            return f64::INFINITY;
        }
        match self.repriced.get(enode) {
            Some(&own) => enode.children.iter().fold(own, |acc, &c| acc + costs(c)),
            None => self.inner.cost(enode, costs),
        }
    }
}

/// What [`choose`] decided and why.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub choice: Choice,
    /// Sum of the taken alternatives' errors (budget units).
    pub error: f64,
    /// Sum of their savings (seconds).
    pub saving: f64,
    /// Per class not taken or moved off its cheapest alternative: why.
    pub notes: Vec<String>,
}

fn totals(alts: &[Alternative], choice: &Choice) -> (f64, f64) {
    choice.iter().fold((0.0, 0.0), |(e, s), &i| {
        (e + alts[i].error.unwrap_or(0.0), s + alts[i].saving())
    })
}

/// Per class, its alternatives worth considering (saving > 0), cheapest first.
fn by_class(alts: &[Alternative]) -> Vec<Vec<usize>> {
    let mut classes: Vec<Id> = vec![];
    let mut groups: HashMap<Id, Vec<usize>> = HashMap::new();
    for (i, a) in alts.iter().enumerate() {
        if a.saving() <= 0.0 || a.error.is_some_and(|e| !e.is_finite()) {
            continue;
        }
        if !groups.contains_key(&a.class) {
            classes.push(a.class);
        }
        groups.entry(a.class).or_default().push(i);
    }
    classes
        .into_iter()
        .map(|c| {
            let mut g = groups.remove(&c).unwrap_or_default();
            // Cheapest first; at equal cost, the smaller estimated error.
            let err = |i: usize| alts[i].error.unwrap_or(0.0);
            g.sort_by(|&a, &b| {
                alts[a]
                    .cost
                    .total_cmp(&alts[b].cost)
                    .then(err(a).total_cmp(&err(b)))
                    .then(a.cmp(&b))
            });
            g
        })
        .collect()
}

/// Pick alternatives whose summed error fits `budget` (1.0 = the whole budget; `None`: no
/// budget, take the cheapest of every class), saving as much as the greedy finds.
/// The option after alternative `i` in its class's order (cheapest first): the next
/// costlier, usually more accurate, alternative, or `None` (the exact node comes next).
pub fn next_option(alts: &[Alternative], i: usize) -> Option<usize> {
    by_class(alts)
        .into_iter()
        .find(|g| g.contains(&i))
        .and_then(|g| {
            g.iter()
                .position(|&j| j == i)
                .and_then(|p| g.get(p + 1).copied())
        })
}

pub fn choose(alts: &[Alternative], budget: Option<f64>) -> Selection {
    let groups = by_class(alts);
    // Position of each class in its list of options: 0 = cheapest alternative; len = exact.
    let mut pos: Vec<usize> = vec![0; groups.len()];
    let current = |pos: &[usize]| -> Choice {
        groups
            .iter()
            .zip(pos)
            .filter_map(|(g, &p)| g.get(p).copied())
            .collect()
    };
    let mut notes = vec![];
    if let Some(b) = budget {
        loop {
            let choice = current(&pos);
            let (err, _) = totals(alts, &choice);
            if err <= b {
                break;
            }
            // The move with the least saving lost per unit of error removed: a class steps
            // to any later option (a costlier alternative, or the exact node at the end) with
            // a smaller error (errors need not fall along the cost order).
            let mut best: Option<(usize, usize, f64)> = None;
            for (k, g) in groups.iter().enumerate() {
                let Some(&now) = g.get(pos[k]) else { continue };
                for to in pos[k] + 1..=g.len() {
                    let (next_err, next_saving) = match g.get(to) {
                        Some(&n) => (alts[n].error.unwrap_or(0.0), alts[n].saving()),
                        None => (0.0, 0.0),
                    };
                    let removed = alts[now].error.unwrap_or(0.0) - next_err;
                    if removed <= 0.0 {
                        continue;
                    }
                    let lost = alts[now].saving() - next_saving;
                    let ratio = lost / removed;
                    if best.is_none_or(|(_, _, r)| ratio < r) {
                        best = Some((k, to, ratio));
                    }
                }
            }
            let Some((k, to, _)) = best else { break };
            let now = groups[k][pos[k]];
            pos[k] = to;
            match groups[k].get(pos[k]) {
                Some(&n) => notes.push(format!(
                    "{}: {} instead of {} (estimated error {:.3} of the budget)",
                    alts[now].layer,
                    alts[n].label,
                    alts[now].label,
                    alts[now].error.unwrap_or(0.0)
                )),
                None => notes.push(format!(
                    "{}: kept exact ({} would use {:.3} of the budget)",
                    alts[now].layer,
                    alts[now].label,
                    alts[now].error.unwrap_or(0.0)
                )),
            }
        }
    }
    let choice = current(&pos);
    let (error, saving) = totals(alts, &choice);
    Selection {
        choice,
        error,
        saving,
        notes,
    }
}

/// The best choice by enumeration (every class: exact or one of its alternatives), for
/// small instances (the greedy's check). `None` when there are over 2^20 combinations.
pub fn choose_exhaustive(alts: &[Alternative], budget: f64) -> Option<Selection> {
    let groups = by_class(alts);
    let combos = groups
        .iter()
        .try_fold(1u64, |acc, g| acc.checked_mul(g.len() as u64 + 1))?;
    if combos > 1 << 20 {
        return None;
    }
    let mut best: Option<Selection> = None;
    for mut n in 0..combos {
        let mut choice = Choice::new();
        for g in &groups {
            let k = (n % (g.len() as u64 + 1)) as usize;
            n /= g.len() as u64 + 1;
            if let Some(&i) = g.get(k) {
                choice.insert(i);
            }
        }
        let (error, saving) = totals(alts, &choice);
        if error <= budget && best.as_ref().is_none_or(|b| saving > b.saving) {
            best = Some(Selection {
                choice,
                error,
                saving,
                notes: vec![],
            });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::ENodeKind;

    fn alt(class: usize, cost: f64, error: f64) -> Alternative {
        Alternative {
            class: Id::from(class),
            node: ENode {
                kind: ENodeKind::Input(class * 100 + (cost * 1000.0) as usize),
                children: vec![],
            },
            also: vec![],
            layer: format!("layer{class}"),
            label: format!("alt{cost}"),
            exact_cost: 1.0,
            cost,
            error: Some(error),
        }
    }

    #[test]
    fn without_a_budget_every_class_takes_its_cheapest() {
        let alts = vec![
            alt(0, 0.5, 0.9),
            alt(0, 0.6, 0.1),
            alt(1, 0.4, 2.0),
            alt(2, 1.5, 0.0),
        ];
        let s = choose(&alts, None);
        // class 2's alternative saves nothing: never taken
        assert_eq!(s.choice, [0, 2].into_iter().collect());
    }

    #[test]
    fn a_budget_moves_the_cheapest_loss_first() {
        // class 0: 0.5 s saved for 0.9 error, or 0.4 s for 0.1; class 1: 0.6 s for 0.5.
        let alts = vec![alt(0, 0.5, 0.9), alt(0, 0.6, 0.1), alt(1, 0.4, 0.5)];
        let s = choose(&alts, Some(1.0));
        assert_eq!(s.choice, [1, 2].into_iter().collect());
        assert!(s.error <= 1.0 && (s.saving - 1.0).abs() < 1e-12);
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
        // A budget nothing fits: everything exact.
        let s = choose(&alts, Some(0.01));
        assert!(s.choice.is_empty());
    }

    #[test]
    fn greedy_against_the_exhaustive_optimum() {
        // Pseudo-random instances of up to 8 layers x 2 alternatives: the greedy stays within
        // the budget and close to the optimum saving.
        let mut s = 12345u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut total_greedy, mut total_best) = (0.0, 0.0);
        for _ in 0..200 {
            let layers = 2 + (next() * 7.0) as usize;
            let mut alts = vec![];
            for l in 0..layers {
                let c7 = 0.2 + 0.5 * next();
                alts.push(alt(l, c7, next() * 0.6));
                alts.push(alt(l, c7 + 0.2 * next(), next() * 0.2));
            }
            let budget = 0.3 + next();
            let g = choose(&alts, Some(budget));
            let b = choose_exhaustive(&alts, budget).unwrap();
            assert!(g.error <= budget + 1e-12);
            assert!(g.saving <= b.saving + 1e-12);
            total_greedy += g.saving;
            total_best += b.saving;
        }
        assert!(
            total_greedy >= 0.9 * total_best,
            "greedy {total_greedy} vs optimum {total_best}"
        );
    }
}
