//! Lossy compression (`--quantize int8`, `--prune F`, `--low-rank`): calibration, per-layer alternatives in the e-graph,
//! extraction under an error budget, measurement of the compiled model, and the report.
//!
//! The steps, in order:
//! 1. input sets: `--calibrate DIR` (else seeded random inputs, with a warning that the task
//!    accuracy is unknown) and `--eval DIR` (else the calibration sets); the model is
//!    re-imported for every input shape they hold (a calibration batch may differ from the
//!    compiled batch);
//! 2. reference outputs: the same model without lossy rewrites, run by the JIT;
//! 3. activation ranges of every conv's input on the calibration sets (static quantization):
//!    min-max, and where they clip a tail the 0.01-99.99th percentiles and the entropy
//!    (least-KL) range (all alternatives, the budget picks);
//! 4. alternatives ([`quantize::add_alternatives`], [`prune::add_alternatives`],
//!    [`lowrank::add_alternatives`]) added to the e-graph of the optimized graph, each with
//!    its estimated cost;
//! 5. with a budget (`--max-error`): each alternative's error measured alone (the model with
//!    only that layer changed, on the calibration sets), in units of the budget;
//! 6. the choice per layer ([`optc_egraph::lossy::choose`]);
//! 7. the compressed model run on the evaluation sets and compared with the reference; over
//!    budget, the layer with the largest estimated error goes back to f32 and it is measured
//!    again (a few rounds), then the compile fails with the report;
//! 8. the report ([`report::CompressionReport`]): per output the errors, per layer the choice,
//!    weight bytes, parameters, FLOPs and latency before and after.

mod alternative;
pub mod bias_correction;
pub mod budget;
pub mod channels;
pub mod dataset;
pub mod eigen;
pub mod input_stats;
pub mod lowrank;
pub mod metrics;
mod progress;
pub mod prune;
pub mod quantize;
pub mod report;

pub use budget::Budget;
pub use dataset::Dataset;
pub use metrics::OutputError;
pub use report::CompressionReport;

use crate::{Error, Options, Result};
use optc_egraph::convert::{to_egraph, to_graph, Converted};
use optc_egraph::lossy::{choose, Alternative, Choice, ChoiceCost};
use optc_egraph::CostModel;
use optc_ir::{Graph, Tensor};
use progress::Progress;
use quantize::ActivationRange;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

/// Lossy quantization asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantization {
    Int8,
}

impl Quantization {
    pub fn parse(s: &str) -> std::result::Result<Quantization, String> {
        match s {
            "int8" => Ok(Quantization::Int8),
            _ => Err(format!("unknown quantization '{s}' (int8)")),
        }
    }
}

/// The lossy options of a compile. Nothing lossy runs unless one is set.
#[derive(Clone, Debug)]
pub struct CompressOptions {
    pub quantize: Option<Quantization>,
    /// Magnitude pruning: per layer, each amount (a fraction of the weights smallest in
    /// magnitude, or a global magnitude threshold) is one alternative (`--prune 0.9`,
    /// `--prune 0.5,0.7,0.9`, `--prune threshold=0.01`).
    pub prune: Vec<prune::PruneAmount>,
    /// Structured channel pruning: each fraction of a dependency group's channels removed
    /// (from its producers, followers and consumers) is one alternative
    /// (`--prune-channels 0.25`).
    pub prune_channels: Vec<f64>,
    /// Low-rank factorization of the weights (`--low-rank energy=0.95 | rank=N | auto`).
    pub low_rank: Option<lowrank::LowRank>,
    /// Offer pruned layers with their remaining weights re-fit to the calibration inputs
    /// (default true; false leaves the plain and bias-corrected variants only).
    pub reconstruct: bool,
    /// Calibration data directories (see [`dataset`]).
    pub calibrate: Vec<PathBuf>,
    /// Evaluation data directories (default: the calibration data).
    pub eval: Vec<PathBuf>,
    /// Integer class labels (`.npy`) of the evaluation sets' rows, for top-1 accuracy.
    pub labels: Option<PathBuf>,
    pub max_error: Budget,
    /// Random calibration sets made when no `calibrate` directory is given.
    pub random_sets: usize,
    /// Measure latency before and after (needs a target this host runs).
    pub measure_latency: bool,
    /// When the measured model is over budget: how many times the layer with the largest
    /// estimated error goes back to f32 before the compile fails.
    pub fallback_rounds: usize,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            quantize: None,
            prune: vec![],
            low_rank: None,
            prune_channels: vec![],
            reconstruct: true,
            calibrate: vec![],
            eval: vec![],
            labels: None,
            max_error: Budget::default(),
            random_sets: 4,
            measure_latency: false,
            fallback_rounds: 32,
        }
    }
}

impl CompressOptions {
    /// Whether any lossy rewrite is asked for.
    pub fn lossy(&self) -> bool {
        self.quantize.is_some()
            || !self.prune.is_empty()
            || self.low_rank.is_some()
            || !self.prune_channels.is_empty()
    }
}

/// How to get the optimized graph for given input shapes (re-import for other shapes).
pub(crate) type GraphFor<'a> = dyn Fn(&HashMap<String, Vec<usize>>) -> Result<Graph> + 'a;

/// A graph for one input shape, its reference model and its alternatives.
struct Shaped {
    conv: Converted,
    alts: Vec<Alternative>,
    reference: Vec<Vec<Tensor>>,
    sets: Vec<usize>,
}

fn jit(graph: Graph, threads: usize) -> Result<crate::CompiledModel> {
    let opts = Options {
        opt_level: 0,
        threads,
        ..Options::default()
    };
    crate::compile_graph(graph, &opts)
}

fn run_sets(model: &mut crate::CompiledModel, sets: &[&Vec<Tensor>]) -> Result<Vec<Vec<Tensor>>> {
    sets.iter().map(|s| model.run(s)).collect()
}

fn shape_key(set: &[Tensor]) -> Vec<Vec<usize>> {
    set.iter().map(|t| t.shape().to_vec()).collect()
}

/// The choice of `alts` (of one graph) that takes the alternatives named in `taken`
/// (layer, label).
fn choice_by_name(alts: &[Alternative], taken: &[(String, String)]) -> Choice {
    alts.iter()
        .enumerate()
        .filter(|(_, a)| taken.iter().any(|(l, b)| *l == a.layer && *b == a.label))
        .map(|(i, _)| i)
        .collect()
}

fn extract(
    conv: &Converted,
    alts: &[Alternative],
    choice: &Choice,
    model: &CostModel,
) -> Result<Graph> {
    let cost = ChoiceCost::new(&conv.egraph, model, alts, choice);
    Ok(to_graph(conv, cost)?)
}

/// The error of `errs` in units of `budget` (the largest share of any limit).
fn budget_share(budget: &Budget, errs: &[OutputError]) -> f64 {
    let share = |err: f64, allowed: f64| {
        if err <= 0.0 {
            0.0
        } else if allowed <= 0.0 {
            f64::INFINITY
        } else {
            err / allowed
        }
    };
    let mut worst = 0f64;
    for e in errs.iter().filter(|e| budget.applies_to(&e.name)) {
        if let Some(c) = budget.min_cosine {
            worst = worst.max(share(1.0 - e.min_cosine, 1.0 - c));
        }
        // (The smooth flip estimate where the outputs have scores: at least the rows that
        // flipped.)
        let disagreement = e.top1_risk.or(e.top1_agreement.map(|a| 1.0 - a));
        if let (Some(t), Some(d)) = (budget.min_top1, disagreement) {
            worst = worst.max(share(d, 1.0 - t));
        }
        if let Some(d) = budget.max_accuracy_drop {
            // Labels (evaluation sets) measure the drop; without them (calibration sets) a
            // flip can cost at most one correct row.
            match (e.accuracy, disagreement) {
                (Some((r, g)), _) => worst = worst.max(share(r - g, d)),
                (None, Some(x)) => worst = worst.max(share(x, d)),
                _ => {}
            }
        }
        if let Some(a) = budget.max_abs {
            worst = worst.max(share(e.max_abs, a));
        }
        if let Some(r) = budget.max_rel {
            worst = worst.max(share(e.max_rel, r));
        }
    }
    worst
}

/// Input names and the sets of `dirs` (or random ones).
fn datasets(
    graph: &Graph,
    opts: &CompressOptions,
    warnings: &mut Vec<String>,
) -> Result<(Dataset, Dataset)> {
    let names: Vec<String> = graph.inputs.iter().map(|i| i.name.clone()).collect();
    let mut cal = Dataset::default();
    for d in &opts.calibrate {
        cal.extend(dataset::load_dir(d, &names)?);
    }
    if cal.is_empty() {
        let n = if opts.random_sets == 0 {
            4
        } else {
            opts.random_sets
        };
        cal = Dataset::random(&graph.input_types(), n, 7);
        warnings.push(format!(
            "no calibration data (--calibrate DIR): calibrated and measured on {}; the task \
             accuracy of the compressed model is unknown",
            cal.source
        ));
    }
    let mut eval = Dataset::default();
    for d in &opts.eval {
        eval.extend(dataset::load_dir(d, &names)?);
    }
    if eval.is_empty() {
        eval = cal.clone();
    }
    for (what, d) in [("calibration", &cal), ("evaluation", &eval)] {
        for (k, set) in d.sets.iter().enumerate() {
            for ((t, ty), name) in set.iter().zip(graph.input_types()).zip(&names) {
                if t.dtype() != ty.dtype || t.shape().len() != ty.shape.len() {
                    return Err(Error::Input(format!(
                        "{what} set {k} ({}): input '{name}' is {}, the model takes {ty}",
                        d.source,
                        t.ty(),
                    )));
                }
            }
        }
    }
    Ok((cal, eval))
}

/// Compress the optimized `graph` (compiled for its own input shapes) as `opts.compress`
/// says. `graph_for` gives the optimized graph for other input shapes.
pub(crate) fn compress(
    graph: Graph,
    opts: &Options,
    graph_for: &GraphFor,
) -> Result<(Graph, CompressionReport)> {
    let t0 = Instant::now();
    let copts = &opts.compress;
    let target = crate::pipeline::target(opts)?;
    let model = crate::pipeline::cost_model(&target);
    let dot_product = target.has_int8_dot_product();
    let threads = opts.threads;
    let mut report = CompressionReport {
        budget: copts.max_error.clone(),
        ..Default::default()
    };
    let (cal, eval) = datasets(&graph, copts, &mut report.warnings)?;
    report.calibration = format!("{} ({} set(s))", cal.source, cal.len());
    report.evaluation = format!("{} ({} set(s))", eval.source, eval.len());
    let labels = match &copts.labels {
        Some(p) => Some(metrics::read_labels(p)?),
        None => None,
    };
    let names: Vec<String> = graph.inputs.iter().map(|i| i.name.clone()).collect();
    let output_names: Vec<String> = graph.outputs.iter().map(|o| o.name.clone()).collect();
    if let Some(bad) = copts
        .max_error
        .outputs
        .iter()
        .find(|o| !output_names.contains(o))
    {
        return Err(Error::Input(format!(
            "--max-error output={bad}: the model has no such output (outputs: {})",
            output_names.join(", ")
        )));
    }

    // 1-2. A graph per input shape (calibration sets first, then evaluation sets), and the
    // reference outputs.
    let all_sets: Vec<&Vec<Tensor>> = cal.sets.iter().chain(&eval.sets).collect();
    let mut by_shape: BTreeMap<Vec<Vec<usize>>, Vec<usize>> = BTreeMap::new();
    for (i, s) in all_sets.iter().enumerate() {
        by_shape.entry(shape_key(s)).or_default().push(i);
    }
    let mut progress = Progress::new("reference outputs", by_shape.len());
    let mut shaped: Vec<(Vec<Vec<usize>>, Shaped)> = vec![];
    let mut ranges: HashMap<String, ActivationRange> = HashMap::new();
    // Second moments (costly on wide layers) only for the passes that use them.
    let mut means = input_stats::InputStats::new(
        copts.low_rank.is_some()
            || (copts.reconstruct && (!copts.prune.is_empty() || !copts.prune_channels.is_empty())),
    );
    for (key, sets) in &by_shape {
        let shapes: HashMap<String, Vec<usize>> =
            names.iter().cloned().zip(key.iter().cloned()).collect();
        let own: Vec<Vec<usize>> = graph.input_types().into_iter().map(|t| t.shape).collect();
        let g = if *key == own {
            graph.clone()
        } else {
            graph_for(&shapes)?
        };
        let mut m = jit(g.clone(), threads)?;
        let inputs: Vec<&Vec<Tensor>> = sets.iter().map(|&i| all_sets[i]).collect();
        let reference = run_sets(&mut m, &inputs)?;
        // 3. Activation ranges of conv inputs, from the calibration sets of this shape.
        let cal_sets: Vec<&Vec<Tensor>> = sets
            .iter()
            .filter(|&&i| i < cal.len())
            .map(|&i| all_sets[i])
            .collect();
        if !cal_sets.is_empty() {
            observe_inputs(&g, &cal_sets, threads, &mut ranges, &mut means)?;
        }
        let conv = to_egraph(&g, 0)?;
        shaped.push((
            key.clone(),
            Shaped {
                conv,
                alts: vec![],
                reference,
                sets: sets.clone(),
            },
        ));
        progress.step();
    }
    progress.done();
    let add_alternatives = |conv: &mut Converted| {
        // The layers as the optimizer left them (before any alternative joins their class).
        let layers = quantize::candidates(conv);
        let mut alts = vec![];
        if copts.quantize.is_some() {
            alts = quantize::add_alternatives(conv, &ranges, &model, dot_product);
        }
        if let Some(how) = &copts.low_rank {
            alts.extend(lowrank::add_alternatives(
                conv, &layers, how, &means, &model,
            ));
        }
        let mut producers = vec![];
        let mut group_alts = 0..0;
        if !copts.prune_channels.is_empty() {
            let (a, p) = channels::add_alternatives(
                conv,
                &layers,
                &copts.prune_channels,
                &means,
                copts.reconstruct,
                &model,
            );
            group_alts = alts.len()..alts.len() + a.len();
            alts.extend(a);
            producers = p;
        }
        if !copts.prune.is_empty() || copts.low_rank.is_some() || !copts.prune_channels.is_empty() {
            if !copts.prune.is_empty() {
                alts.extend(prune::add_alternatives(
                    conv,
                    &layers,
                    &copts.prune,
                    &means,
                    copts.reconstruct,
                    &model,
                ));
            }
            // (Classes canonical after the last rebuild.)
            for a in &mut alts {
                a.canonicalize(&conv.egraph);
            }
            // A channel group rebuilds its producers, followers and other consumers: their
            // own alternatives would be dropped when the group is taken, so they are not
            // offered next to it. (They stay in the list, priced as saving nothing: an
            // alternative the list does not name would not be banned from the extraction.)
            let producers: Vec<_> = producers.iter().map(|&p| conv.egraph.find(p)).collect();
            // (A group's own alternatives stay: a class may be one group's consumer and
            // another's producer, and the groups compose there.)
            for (_, a) in alts
                .iter_mut()
                .enumerate()
                .filter(|(i, a)| !group_alts.contains(i) && producers.contains(&a.class))
            {
                a.cost = a.exact_cost;
            }
        }
        alts
    };
    for (_, s) in &mut shaped {
        s.alts = add_alternatives(&mut s.conv);
    }
    let mut main = to_egraph(&graph, 0)?;
    let descriptions = quantize::descriptions(&main);
    let mut alts = add_alternatives(&mut main);

    // Measure `taken` on the sets selected by `pick` (calibration or evaluation sets).
    let measure = |taken: &[(String, String)],
                   shaped: &[(Vec<Vec<usize>>, Shaped)],
                   pick: &dyn Fn(usize) -> bool|
     -> Result<Vec<OutputError>> {
        let (mut want, mut got) = (vec![], vec![]);
        for (_, s) in shaped {
            let idx: Vec<usize> = (0..s.sets.len()).filter(|&j| pick(s.sets[j])).collect();
            if idx.is_empty() {
                continue;
            }
            let choice = choice_by_name(&s.alts, taken);
            let g = extract(&s.conv, &s.alts, &choice, &model)?;
            let mut m = jit(g, threads)?;
            for j in idx {
                got.push(m.run(all_sets[s.sets[j]])?);
                want.push(s.reference[j].clone());
            }
        }
        Ok(metrics::compare(&output_names, &want, &got, None))
    };
    let ncal = cal.len();
    let is_cal = move |i: usize| i < ncal;

    // 5. Per-alternative errors (only with a budget).
    let budget = (!copts.max_error.is_empty()).then_some(&copts.max_error);
    // (Alternatives estimated no faster than f32 are never chosen: not measured.)
    let faster = alts.iter().filter(|a| a.saving() > 0.0).count();
    let mut progress = Progress::new("per-layer sensitivity", faster);
    // Per alternative, how much it moves the outputs alone (1 - mean cosine over the budget's
    // outputs): a continuous tiebreak where the budget's own metric is coarse (top-1 on a
    // few calibration rows is often exactly unchanged by any one layer).
    let mut perturbation = vec![0f64; alts.len()];
    if let Some(b) = budget {
        for (i, a) in alts
            .iter_mut()
            .enumerate()
            .filter(|(_, a)| a.saving() > 0.0)
        {
            let errs = measure(&[(a.layer.clone(), a.label.clone())], &shaped, &is_cal)?;
            a.error = Some(budget_share(b, &errs));
            perturbation[i] = errs
                .iter()
                .filter(|e| b.applies_to(&e.name))
                .map(|e| 1.0 - e.mean_cosine)
                .fold(0.0, f64::max);
            progress.step();
        }
    }
    progress.done();

    // 6-7. Choose, measure on the evaluation sets, back off while over budget.
    let mut selection = choose(&alts, budget.map(|_| 1.0));
    let ncal_eval = cal.len();
    let is_eval = move |i: usize| i >= ncal_eval;
    let eval_labels = labels.as_deref();
    let mut rounds = 0;
    let final_errors = loop {
        let taken: Vec<(String, String)> = selection
            .choice
            .iter()
            .map(|&i| (alts[i].layer.clone(), alts[i].label.clone()))
            .collect();
        let errs = measure_eval(
            &taken,
            &shaped,
            &all_sets,
            &is_eval,
            &output_names,
            eval_labels,
            &model,
            threads,
        )?;
        let over = budget.map(|b| b.violations(&errs)).unwrap_or_default();
        if over.is_empty() || selection.choice.is_empty() || rounds >= copts.fallback_rounds {
            report.violations = over;
            break errs;
        }
        // The taken alternative with the largest estimated error steps back; at equal
        // estimates, the one that moves the outputs most per unit of saving it gives up.
        let harm = |i: usize| {
            let next_saving =
                optc_egraph::lossy::next_option(&alts, i).map_or(0.0, |n| alts[n].saving());
            perturbation[i] / (alts[i].saving() - next_saving).max(1e-12)
        };
        let worst = *selection
            .choice
            .iter()
            .max_by(|&&a, &&b| {
                alts[a]
                    .error
                    .unwrap_or(0.0)
                    .total_cmp(&alts[b].error.unwrap_or(0.0))
                    .then(harm(a).total_cmp(&harm(b)))
            })
            .expect("non-empty");
        // It steps to its class's next (more accurate) alternative, or back to f32.
        let next = optc_egraph::lossy::next_option(&alts, worst);
        selection.notes.push(format!(
            "{}: {} after measuring ({}; estimated {:.3} of the budget)",
            alts[worst].layer,
            match next {
                Some(n) => format!("{} instead of {}", alts[n].label, alts[worst].label),
                None => "back to f32".to_string(),
            },
            over.join("; "),
            alts[worst].error.unwrap_or(0.0)
        ));
        selection.choice.remove(&worst);
        if let Some(n) = next {
            selection.choice.insert(n);
        }
        rounds += 1;
    };
    let compressed = extract(&main, &alts, &selection.choice, &model)?;
    report.outputs = final_errors;
    report.layers = report::layer_rows(&alts, &selection, &descriptions);
    report.notes = selection.notes.clone();
    report.before = report::Size::of(&graph);
    report.after = report::Size::of(&compressed);
    if copts.measure_latency {
        report.latency = report::latency(&graph, &compressed, opts).ok();
    }
    report.time = t0.elapsed();
    Ok((compressed, report))
}

/// The errors of the compressed model (alternatives `taken`) on the evaluation sets, with
/// labels when given.
#[allow(clippy::too_many_arguments)]
fn measure_eval(
    taken: &[(String, String)],
    shaped: &[(Vec<Vec<usize>>, Shaped)],
    all_sets: &[&Vec<Tensor>],
    pick: &dyn Fn(usize) -> bool,
    output_names: &[String],
    labels: Option<&[i64]>,
    model: &CostModel,
    threads: usize,
) -> Result<Vec<OutputError>> {
    // Evaluation sets in their original order (labels follow it).
    let mut order: Vec<(usize, usize, usize)> = vec![];
    for (si, (_, s)) in shaped.iter().enumerate() {
        for (j, &set) in s.sets.iter().enumerate() {
            if pick(set) {
                order.push((set, si, j));
            }
        }
    }
    order.sort();
    let mut models: HashMap<usize, crate::CompiledModel> = HashMap::new();
    let (mut want, mut got) = (vec![], vec![]);
    for (set, si, j) in order {
        let s = &shaped[si].1;
        let m = match models.entry(si) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let choice = choice_by_name(&s.alts, taken);
                let g = extract(&s.conv, &s.alts, &choice, model)?;
                e.insert(jit(g, threads)?)
            }
        };
        got.push(m.run(all_sets[set])?);
        want.push(s.reference[j].clone());
    }
    Ok(metrics::compare(output_names, &want, &got, labels))
}

/// Min and max of the activation input of every conv of `g` over `sets`, by layer name.
/// Observe the inputs of the contractions on the calibration sets: the activation ranges of
/// conv inputs (static int8) and every contraction's per-channel input means (bias
/// correction).
fn observe_inputs(
    g: &Graph,
    sets: &[&Vec<Tensor>],
    threads: usize,
    ranges: &mut HashMap<String, ActivationRange>,
    means: &mut input_stats::InputStats,
) -> Result<()> {
    let mut observed = g.clone();
    let mut layers = vec![];
    for n in g.topo_order()? {
        let node = g.node(n);
        let base = node.op.base();
        let is_conv = matches!(base, optc_ir::Op::Conv { .. });
        if !is_conv && !matches!(base, optc_ir::Op::MatMul | optc_ir::Op::Gemm { .. }) {
            continue;
        }
        let Some(&x) = g.node_inputs(n).first() else {
            continue;
        };
        observed.add_output(&format!("observe {}", node.name), x);
        let window = match base {
            optc_ir::Op::Conv { window, group: 1 } => Some(window.clone()),
            _ => None,
        };
        layers.push((node.name.clone(), is_conv, window));
    }
    if layers.is_empty() {
        return Ok(());
    }
    let first = g.outputs.len();
    let mut m = jit(observed, threads)?;
    for s in sets {
        let outs = m.run(s)?;
        for ((name, is_conv, window), t) in layers.iter().zip(&outs[first..]) {
            means.add(name, t, *is_conv);
            if let Some(w) = window {
                means.add_patches(name, t, w);
            }
            if !is_conv {
                continue;
            }
            let Some(v) = t.as_f32() else { continue };
            let Some(seen) = observe(v) else { continue };
            ranges
                .entry(name.clone())
                .and_modify(|r| {
                    r.min_max.0 = r.min_max.0.min(seen.min_max.0);
                    r.min_max.1 = r.min_max.1.max(seen.min_max.1);
                    let widest = |a: Option<(f32, f32)>, b: Option<(f32, f32)>| match (a, b) {
                        (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
                        (a, b) => a.or(b),
                    };
                    r.percentile = widest(r.percentile, seen.percentile);
                    r.entropy = widest(r.entropy, seen.entropy);
                })
                .or_insert(seen);
        }
    }
    // A percentile or entropy range only where it clips a real tail (at least 10% of the
    // width).
    for r in ranges.values_mut() {
        let width = |(lo, hi): (f32, f32)| hi.max(0.0) - lo.min(0.0);
        let clips = |p: (f32, f32)| width(p) <= 0.9 * width(r.min_max);
        r.percentile = r.percentile.filter(|&p| clips(p));
        r.entropy = r.entropy.filter(|&p| clips(p));
    }
    Ok(())
}

/// The range of the finite values of `v`: smallest and largest, and the 0.01th and 99.99th
/// percentiles and the entropy range of an evenly strided sample of at most 2^16 of them.
fn observe(v: &[f32]) -> Option<ActivationRange> {
    let stride = v.len().div_ceil(1 << 16).max(1);
    let mut sample: Vec<f32> = v
        .iter()
        .step_by(stride)
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    let (lo, hi) = v
        .iter()
        .filter(|x| x.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    if lo > hi {
        return None;
    }
    sample.sort_by(f32::total_cmp);
    let at = |q: f64| sample[((sample.len() - 1) as f64 * q).round() as usize];
    let percentile = (!sample.is_empty()).then(|| (at(0.0001), at(0.9999)));
    let entropy = entropy_threshold(&sample).map(|t| (lo.max(-t), hi.min(t)));
    Some(ActivationRange {
        min_max: (lo, hi),
        percentile,
        entropy,
    })
}

/// The entropy calibration of TensorRT and onnxruntime: the threshold `t` on `|x|` whose
/// clipped, quantized histogram is closest to the observed one. A histogram of `|x|` in 2048
/// bins; for each candidate `t` (from 128 bins up), the reference distribution is the bins
/// below `t` with everything beyond added to the last, the candidate spreads each of 128
/// groups of those bins (their counts without the clipped ones) evenly over its nonzero
/// bins, and `t` minimizes the KL divergence of the two (their defaults: 2048 bins, 128
/// levels). `None` for an empty or all-zero sample.
fn entropy_threshold(sample: &[f32]) -> Option<f32> {
    const BINS: usize = 2048;
    let top = sample.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if top <= 0.0 || !top.is_finite() {
        return None;
    }
    const LEVELS: usize = 128;
    let width = top as f64 / BINS as f64;
    let mut hist = vec![0f64; BINS];
    for &x in sample {
        let b = ((x.abs() as f64 / width) as usize).min(BINS - 1);
        hist[b] += 1.0;
    }
    let mut best = (f64::INFINITY, BINS);
    for end in LEVELS..=BINS {
        let mut p: Vec<f64> = hist[..end].to_vec();
        p[end - 1] += hist[end..].iter().sum::<f64>();
        // The candidate: each group of bins keeps its total, spread over its nonzero bins.
        let mut q = vec![0f64; end];
        for g in 0..LEVELS {
            let (a, b) = (g * end / LEVELS, (g + 1) * end / LEVELS);
            let nonzero = (a..b).filter(|&i| p[i] > 0.0).count();
            if nonzero == 0 {
                continue;
            }
            let each = hist[a..b].iter().sum::<f64>() / nonzero as f64;
            for i in a..b {
                if p[i] > 0.0 {
                    q[i] = each;
                }
            }
        }
        let (ps, qs) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
        if qs == 0.0 {
            continue;
        }
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(&pi, _)| pi > 0.0)
            .map(|(&pi, &qi)| {
                let (pi, qi) = (pi / ps, (qi / qs).max(1e-12));
                pi * (pi / qi).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, end);
        }
    }
    Some((best.1 as f64 * width) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_ranges_and_percentiles() {
        // 0..=99_999 / 1000 plus one outlier, a NaN and an infinity.
        let mut v: Vec<f32> = (0..100_000).map(|i| i as f32 / 1000.0).collect();
        v.extend([1.0e4, f32::NAN, f32::INFINITY]);
        let r = observe(&v).unwrap();
        assert_eq!(r.min_max, (0.0, 1.0e4));
        let (lo, hi) = r.percentile.unwrap();
        // a strided sample of 2^16 values: the percentiles within a stride of the exact ones
        assert!(lo.abs() < 0.05, "{lo}");
        assert!((hi - 99.99).abs() < 0.05, "{hi}");
        assert!(observe(&[f32::NAN]).is_none());
        assert_eq!(observe(&[2.0]).unwrap().percentile, Some((2.0, 2.0)));
    }

    /// The entropy threshold keeps the body of a distribution and clips its sparse tail: an
    /// exponential sample (50,000 values, the largest near 10.8) is cut well inside its
    /// range but beyond most of its mass; a uniform one is kept whole.
    #[test]
    fn entropy_threshold_clips_the_sparse_tail() {
        let n = 50_000;
        let exp: Vec<f32> = (0..n)
            .map(|i| -(1.0 - (i as f64 + 0.5) / n as f64).ln() as f32)
            .collect();
        let top = exp.iter().fold(0.0f32, |m, &x| m.max(x));
        let t = entropy_threshold(&exp).unwrap();
        assert!(t > 3.0 && t < 0.9 * top, "{t} of {top}");
        let uniform: Vec<f32> = (0..n).map(|i| i as f32 / n as f32).collect();
        let t = entropy_threshold(&uniform).unwrap();
        assert!(t > 0.95, "{t}");
        // Two-sided: the threshold bounds both ends.
        let signed: Vec<f32> = exp
            .iter()
            .enumerate()
            .map(|(i, &x)| if i % 2 == 0 { -x } else { x })
            .collect();
        let (lo, hi) = observe(&signed).unwrap().entropy.unwrap();
        assert!(
            lo > -0.9 * top && lo < -3.0 && hi < 0.9 * top && hi > 3.0,
            "{lo} {hi}"
        );
        assert!(entropy_threshold(&[0.0, 0.0]).is_none());
    }
}
