//! What a lossy compile did and what it cost: the report (`--report md|json`, and a short
//! summary by default).

use super::budget::Budget;
use super::metrics::OutputError;
use optc_egraph::lossy::{Alternative, Selection};
use optc_ir::{Graph, Op, Tensor};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::time::Duration;

/// One layer that had a lossy alternative: what was chosen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerRow {
    pub layer: String,
    /// What it computes (`conv 3x3 64->64`, `matmul 384x1536`).
    pub what: String,
    /// The chosen alternative's label, or `f32`.
    pub choice: String,
    /// Estimated error of the chosen alternative, in units of the budget (0 without one).
    pub estimated_error: Option<f64>,
    /// Estimated time saved (seconds) by the choice.
    pub saving: f64,
    /// The alternatives it had, with their estimated errors and savings (seconds; negative:
    /// estimated slower than f32).
    pub alternatives: Vec<(String, Option<f64>, f64)>,
    /// Why a layer stayed f32.
    pub why_f32: Option<String>,
}

/// Weights and arithmetic of a graph.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Size {
    /// Bytes of every constant the graph holds.
    pub weight_bytes: usize,
    /// Elements of every constant.
    pub parameters: usize,
    /// Nonzero elements of every constant (what a sparse kernel stores of a pruned weight).
    pub nonzeros: usize,
    /// 2 x multiply-adds of the f32 contractions (conv, matmul, gemm).
    pub flops: f64,
    /// The same with the multiply-adds by zero weights left out (what the sparse kernels
    /// skip).
    pub nonzero_flops: f64,
    /// 2 x multiply-adds of the int8 contractions.
    pub int8_ops: f64,
}

impl Size {
    pub fn of(g: &Graph) -> Size {
        let mut s = Size::default();
        let mut seen = HashSet::new();
        for n in g.g.node_indices() {
            let node = &g.g[n];
            if let Op::Constant { id } = node.op {
                if seen.insert(id) {
                    if let Some(t) = g.const_tensor(id) {
                        s.weight_bytes += t.numel() * t.dtype().size();
                        s.parameters += t.numel();
                        s.nonzeros += match t.as_f32() {
                            Some(v) => optc_ir::sparsity::nonzeros(v),
                            None => t.numel(),
                        };
                    }
                }
                continue;
            }
            let base = node.op.base();
            let ins = g.node_inputs(n);
            // The weight's density (constant f32 weights).
            let density = ins
                .get(1)
                .and_then(|&v| g.const_value(v))
                .and_then(|t| {
                    let v = t.as_f32()?;
                    Some(optc_ir::sparsity::nonzeros(v) as f64 / v.len().max(1) as f64)
                })
                .unwrap_or(1.0);
            let f0 = s.flops;
            let work = optc_ir::flops::node_flops(g, n);
            match base {
                Op::QuantizedConv { .. } | Op::QuantizedMatMul { .. } => s.int8_ops += work,
                _ => s.flops += work,
            }
            s.nonzero_flops += (s.flops - f0) * density;
        }
        s
    }
}

/// Latency of the original and the compressed model (median ms), measured in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub before_ms: f64,
    pub after_ms: f64,
}

/// Everything a lossy compile reports.
#[derive(Clone, Debug, Default)]
pub struct CompressionReport {
    pub budget: Budget,
    pub calibration: String,
    pub evaluation: String,
    /// Per output, measured on the evaluation sets against the model without lossy rewrites.
    pub outputs: Vec<OutputError>,
    pub layers: Vec<LayerRow>,
    pub before: Size,
    pub after: Size,
    pub latency: Option<Latency>,
    /// How the budget broke the measured model (empty: within it).
    pub violations: Vec<String>,
    /// Why layers moved off their cheapest alternative.
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
    pub time: Duration,
}

/// The report rows of every layer with alternatives.
pub fn layer_rows(
    alts: &[Alternative],
    sel: &Selection,
    what: &std::collections::HashMap<String, String>,
) -> Vec<LayerRow> {
    let mut rows: BTreeMap<String, LayerRow> = BTreeMap::new();
    for (i, a) in alts.iter().enumerate() {
        let row = rows.entry(a.layer.clone()).or_insert_with(|| LayerRow {
            layer: a.layer.clone(),
            what: what.get(&a.layer).cloned().unwrap_or_default(),
            choice: "f32".into(),
            ..Default::default()
        });
        row.alternatives
            .push((a.label.clone(), a.error, a.saving()));
        if sel.choice.contains(&i) {
            row.choice = a.label.clone();
            row.estimated_error = a.error;
            row.saving = a.saving();
        }
    }
    for row in rows.values_mut().filter(|r| r.choice == "f32") {
        let faster = row.alternatives.iter().any(|(_, _, s)| *s > 0.0);
        let finite = row
            .alternatives
            .iter()
            .any(|(_, e, s)| *s > 0.0 && e.is_none_or(f64::is_finite));
        row.why_f32 = Some(
            if !faster {
                "no alternative is estimated faster than f32"
            } else if !finite {
                "its alternatives' error could not be measured"
            } else {
                "the error budget"
            }
            .to_string(),
        );
    }
    rows.into_values().collect()
}

/// Median latency of `before` and `after` compiled as `opts` says, interleaved.
pub fn latency(before: &Graph, after: &Graph, opts: &crate::Options) -> crate::Result<Latency> {
    let o = crate::Options {
        opt_level: 0,
        compress: Default::default(),
        ..opts.clone()
    };
    let mut a = crate::compile_graph(before.clone(), &o)?;
    let mut b = crate::compile_graph(after.clone(), &o)?;
    let inputs = crate::random_inputs(&a.input_types(), 1);
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let mut oa: Vec<Tensor> = a
        .output_types()
        .iter()
        .map(|t| Tensor::zeros(t.dtype, t.shape.clone()))
        .collect();
    let mut ob: Vec<Tensor> = b
        .output_types()
        .iter()
        .map(|t| Tensor::zeros(t.dtype, t.shape.clone()))
        .collect();
    let (mut ta, mut tb) = (vec![], vec![]);
    let start = std::time::Instant::now();
    while ta.len() < 5 || (start.elapsed().as_secs_f64() < 1.0 && ta.len() < 2000) {
        let t = std::time::Instant::now();
        a.run_into(&refs, &mut oa)?;
        ta.push(t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        b.run_into(&refs, &mut ob)?;
        tb.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.total_cmp(y));
        v[v.len() / 2]
    };
    Ok(Latency {
        before_ms: median(&mut ta),
        after_ms: median(&mut tb),
    })
}

fn mib(b: usize) -> String {
    format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
}

fn gflop(f: f64) -> String {
    format!("{:.3}", f / 1e9)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

impl CompressionReport {
    /// Within budget (or no budget given).
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Layers that took an alternative.
    pub fn taken(&self) -> usize {
        self.layers.iter().filter(|l| l.choice != "f32").count()
    }

    /// A few lines for stderr.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        let _ = writeln!(
            s,
            "compression: {}/{} layers changed; weights {} -> {}; budget: {}",
            self.taken(),
            self.layers.len(),
            mib(self.before.weight_bytes),
            mib(self.after.weight_bytes),
            self.budget
        );
        for o in &self.outputs {
            let mut line = format!(
                "  {}: cosine min {:.5}, max abs {:.3e}, max rel {:.3e}",
                o.name, o.min_cosine, o.max_abs, o.max_rel
            );
            if let Some(a) = o.top1_agreement {
                let _ = write!(line, ", top-1 agreement {:.4}", a);
            }
            if let Some((r, g)) = o.accuracy {
                let _ = write!(line, ", accuracy {:.4} -> {:.4}", r, g);
            }
            let _ = writeln!(s, "{line}");
        }
        if let Some(l) = self.latency {
            let _ = writeln!(
                s,
                "  latency {:.3} ms -> {:.3} ms ({:.2}x)",
                l.before_ms,
                l.after_ms,
                l.before_ms / l.after_ms
            );
        }
        for v in &self.violations {
            let _ = writeln!(s, "  OVER BUDGET: {v}");
        }
        s
    }

    /// The whole report in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::from("# Compression report\n\n");
        for w in &self.warnings {
            let _ = writeln!(s, "> warning: {w}\n");
        }
        let _ = writeln!(s, "- calibration: {}", self.calibration);
        let _ = writeln!(s, "- evaluation: {}", self.evaluation);
        let _ = writeln!(s, "- budget: {}", self.budget);
        let _ = writeln!(
            s,
            "- verdict: {}\n",
            if self.passed() {
                "within budget"
            } else {
                "OVER BUDGET"
            }
        );
        s.push_str("## Outputs (against the model without lossy rewrites)\n\n");
        s.push_str("| output | max abs | max rel | min cosine | mean cosine | top-1 agreement | top-1 accuracy before -> after |\n|---|---:|---:|---:|---:|---:|---|\n");
        for o in &self.outputs {
            let _ = writeln!(
                s,
                "| {} | {:.3e} | {:.3e} | {:.6} | {:.6} | {} | {} |",
                o.name,
                o.max_abs,
                o.max_rel,
                o.min_cosine,
                o.mean_cosine,
                opt(o.top1_agreement, 4),
                o.accuracy
                    .map_or("-".into(), |(r, g)| format!("{r:.4} -> {g:.4}"))
            );
        }
        s.push_str("\n## Layers\n\n| layer | what | choice | estimated error (budget units) | estimated saving | alternatives |\n|---|---|---|---:|---:|---|\n");
        for l in &self.layers {
            let alts: Vec<String> = l
                .alternatives
                .iter()
                .map(|(a, e, sv)| format!("{a}: {}, {:.1} us", opt(*e, 3), sv * 1e6))
                .collect();
            let choice = match &l.why_f32 {
                Some(w) => format!("f32 ({w})"),
                None => l.choice.clone(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} us | {} |",
                l.layer,
                l.what,
                choice,
                opt(l.estimated_error, 3),
                l.saving * 1e6,
                alts.join("; ")
            );
        }
        s.push_str("\n## Size and speed\n\n| | before | after |\n|---|---:|---:|\n");
        let _ = writeln!(
            s,
            "| weight bytes | {} | {} |",
            mib(self.before.weight_bytes),
            mib(self.after.weight_bytes)
        );
        let _ = writeln!(
            s,
            "| parameters | {} | {} |",
            self.before.parameters, self.after.parameters
        );
        let _ = writeln!(
            s,
            "| nonzero parameters | {} | {} |",
            self.before.nonzeros, self.after.nonzeros
        );
        let _ = writeln!(
            s,
            "| f32 GFLOP | {} | {} |",
            gflop(self.before.flops),
            gflop(self.after.flops)
        );
        let _ = writeln!(
            s,
            "| f32 GFLOP on nonzero weights | {} | {} |",
            gflop(self.before.nonzero_flops),
            gflop(self.after.nonzero_flops)
        );
        let _ = writeln!(
            s,
            "| int8 GOP | {} | {} |",
            gflop(self.before.int8_ops),
            gflop(self.after.int8_ops)
        );
        if let Some(l) = self.latency {
            let _ = writeln!(
                s,
                "| latency (ms, same run) | {:.3} | {:.3} |",
                l.before_ms, l.after_ms
            );
        }
        if !self.notes.is_empty() {
            s.push_str("\n## Decisions\n\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        if !self.violations.is_empty() {
            s.push_str("\n## Over budget\n\n");
            for v in &self.violations {
                let _ = writeln!(s, "- {v}");
            }
        }
        let _ = writeln!(s, "\n(compression took {:.1} s)", self.time.as_secs_f64());
        s
    }

    /// The whole report as JSON.
    pub fn json(&self) -> String {
        fn esc(s: &str) -> String {
            let mut o = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => o.push_str("\\\""),
                    '\\' => o.push_str("\\\\"),
                    '\n' => o.push_str("\\n"),
                    c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
                    c => o.push(c),
                }
            }
            o.push('"');
            o
        }
        fn num(x: f64) -> String {
            if x.is_finite() {
                format!("{x}")
            } else {
                "null".into()
            }
        }
        fn onum(x: Option<f64>) -> String {
            x.map_or("null".into(), num)
        }
        let outputs: Vec<String> = self
            .outputs
            .iter()
            .map(|o| {
                format!(
                    "{{\"name\": {}, \"max_abs\": {}, \"max_rel\": {}, \"min_cosine\": {}, \"mean_cosine\": {}, \"top1_agreement\": {}, \"accuracy_before\": {}, \"accuracy_after\": {}}}",
                    esc(&o.name),
                    num(o.max_abs),
                    num(o.max_rel),
                    num(o.min_cosine),
                    num(o.mean_cosine),
                    onum(o.top1_agreement),
                    onum(o.accuracy.map(|a| a.0)),
                    onum(o.accuracy.map(|a| a.1))
                )
            })
            .collect();
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|l| {
                format!(
                    "{{\"layer\": {}, \"what\": {}, \"choice\": {}, \"estimated_error\": {}, \"saving_s\": {}, \"why_f32\": {}}}",
                    esc(&l.layer),
                    esc(&l.what),
                    esc(&l.choice),
                    onum(l.estimated_error),
                    num(l.saving),
                    l.why_f32.as_deref().map_or("null".to_string(), esc)
                )
            })
            .collect();
        let size = |s: &Size| {
            format!(
                "{{\"weight_bytes\": {}, \"parameters\": {}, \"nonzeros\": {}, \"flops\": {}, \"nonzero_flops\": {}, \"int8_ops\": {}}}",
                s.weight_bytes,
                s.parameters,
                s.nonzeros,
                num(s.flops),
                num(s.nonzero_flops),
                num(s.int8_ops)
            )
        };
        let list = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|x| esc(x)).collect::<Vec<_>>().join(", ")
            )
        };
        format!(
            "{{\"budget\": {}, \"within_budget\": {}, \"calibration\": {}, \"evaluation\": {}, \"outputs\": [{}], \"layers\": [{}], \"before\": {}, \"after\": {}, \"latency_ms\": {}, \"violations\": {}, \"notes\": {}, \"warnings\": {}}}",
            esc(&self.budget.to_string()),
            self.passed(),
            esc(&self.calibration),
            esc(&self.evaluation),
            outputs.join(", "),
            layers.join(", "),
            size(&self.before),
            size(&self.after),
            self.latency.map_or("null".into(), |l| format!(
                "{{\"before\": {}, \"after\": {}}}",
                num(l.before_ms),
                num(l.after_ms)
            )),
            list(&self.violations),
            list(&self.notes),
            list(&self.warnings)
        )
    }
}
