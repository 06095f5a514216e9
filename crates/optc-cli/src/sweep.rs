//! `optc sweep`: every lossy pass at a grid of settings, each compiled, measured against the
//! model without lossy rewrites and timed next to it; a table, and the error-vs-latency
//! trade-off as an SVG plot with the Pareto front marked.

use crate::options::CompileArgs;
use optc::compress::prune::PruneAmount;
use optc::compress::{lowrank::LowRank, CompressOptions, CompressionReport, Quantization};
use std::fmt::Write as _;

/// One setting of the grid.
pub struct Setting {
    pub name: String,
    pub compress: CompressOptions,
}

/// The grid: int8; magnitude pruning 0.5/0.7/0.9; channel pruning 0.25/0.5; low-rank
/// energies 0.99/0.95/0.9. Every
/// setting applies to every layer where it is faster (no budget), so each row shows what
/// that setting alone costs and buys.
pub fn grid(base: &CompressOptions) -> Vec<Setting> {
    let with = |f: &dyn Fn(&mut CompressOptions)| {
        let mut c = CompressOptions {
            quantize: None,
            prune: vec![],
            prune_channels: vec![],
            low_rank: None,
            ..base.clone()
        };
        f(&mut c);
        c
    };
    let mut v = vec![Setting {
        name: "int8".into(),
        compress: with(&|c| c.quantize = Some(Quantization::Int8)),
    }];
    for p in [0.5, 0.7, 0.9] {
        v.push(Setting {
            name: format!("prune {p}"),
            compress: with(&|c| c.prune = vec![PruneAmount::Fraction(p)]),
        });
    }
    for p in [0.25, 0.5] {
        v.push(Setting {
            name: format!("channels {p}"),
            compress: with(&|c| c.prune_channels = vec![p]),
        });
    }
    for e in [0.99, 0.95, 0.9] {
        v.push(Setting {
            name: format!("low-rank energy={e}"),
            compress: with(&|c| c.low_rank = Some(LowRank::Energy(e))),
        });
    }
    v
}

/// One measured row.
pub struct Row {
    pub name: String,
    /// Error of the first output: 1 - min cosine.
    pub error: f64,
    pub top1_agreement: Option<f64>,
    /// Top-1 accuracy with labels: (original, compressed).
    pub accuracy: Option<(f64, f64)>,
    pub weight_bytes: usize,
    pub nonzeros: usize,
    /// Median ms of the original and of this setting, measured in one run.
    pub latency: (f64, f64),
    pub layers_changed: usize,
}

impl Row {
    /// The model without lossy rewrites: the reference point.
    pub fn original() -> Row {
        Row {
            name: "f32 (original)".into(),
            error: 0.0,
            top1_agreement: None,
            accuracy: None,
            weight_bytes: 0,
            nonzeros: 0,
            latency: (1.0, 1.0),
            layers_changed: 0,
        }
    }
    pub fn of(name: &str, r: &CompressionReport) -> Row {
        let o = r.outputs.first();
        let l = r.latency.unwrap_or_default();
        Row {
            name: name.to_string(),
            error: o.map_or(0.0, |o| (1.0 - o.min_cosine).max(0.0)),
            top1_agreement: o.and_then(|o| o.top1_agreement),
            accuracy: o.and_then(|o| o.accuracy),
            weight_bytes: r.after.weight_bytes,
            nonzeros: r.after.nonzeros,
            latency: (l.before_ms, l.after_ms),
            layers_changed: r.taken(),
        }
    }
    /// Latency as a fraction of the original's (same run): comparable across rows.
    fn relative_latency(&self) -> f64 {
        if self.latency.0 > 0.0 {
            self.latency.1 / self.latency.0
        } else {
            1.0
        }
    }
    /// The error the plot shows: the accuracy drop with labels, else 1 - min cosine.
    fn plotted_error(&self) -> f64 {
        match self.accuracy {
            Some((a, b)) => (a - b).max(0.0),
            None => self.error,
        }
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| setting | layers | 1 - min cosine | top-1 agreement | top-1 accuracy | weight MiB | nonzero weights | latency ms (f32 same run) | speedup |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2e} | {} | {} | {:.2} | {} | {:.3} ({:.3}) | {:.2}x |",
            r.name,
            r.layers_changed,
            r.error,
            r.top1_agreement
                .map_or("-".to_string(), |a| format!("{a:.4}")),
            r.accuracy
                .map_or("-".to_string(), |(a, b)| format!("{a:.4} -> {b:.4}")),
            r.weight_bytes as f64 / (1024.0 * 1024.0),
            r.nonzeros,
            r.latency.1,
            r.latency.0,
            1.0 / r.relative_latency()
        );
    }
    s
}

/// Indices of the rows no other row beats on both relative latency and error.
pub fn pareto(rows: &[Row]) -> Vec<usize> {
    let mut front: Vec<usize> = (0..rows.len())
        .filter(|&i| {
            !rows.iter().enumerate().any(|(j, o)| {
                j != i
                    && o.relative_latency() <= rows[i].relative_latency()
                    && o.plotted_error() <= rows[i].plotted_error()
                    && (o.relative_latency() < rows[i].relative_latency()
                        || o.plotted_error() < rows[i].plotted_error())
            })
        })
        .collect();
    front.sort_by(|&a, &b| {
        rows[a]
            .relative_latency()
            .total_cmp(&rows[b].relative_latency())
    });
    front
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The trade-off plot: relative latency (x) against error (y), the Pareto front joined.
pub fn svg(rows: &[Row], title: &str, labels: bool) -> String {
    let (w, h, ml, mr, mt, mb) = (720.0, 480.0, 80.0, 200.0, 50.0, 60.0);
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let xmax = rows
        .iter()
        .map(Row::relative_latency)
        .fold(1.0f64, f64::max)
        * 1.05;
    let ymax = rows
        .iter()
        .map(Row::plotted_error)
        .fold(0.0f64, f64::max)
        .max(1e-6)
        * 1.1;
    let x = |v: f64| ml + pw * v / xmax;
    let y = |v: f64| mt + ph * (1.0 - v / ymax);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        ml + pw / 2.0,
        esc(title)
    );
    // Axes and ticks.
    let _ = writeln!(
        s,
        r#"<path d="M{ml} {mt} V{} H{}" stroke="black" fill="none"/>"#,
        mt + ph,
        ml + pw
    );
    for i in 0..=5 {
        let xv = xmax * i as f64 / 5.0;
        let yv = ymax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="black"/><text x="{0}" y="{3}" text-anchor="middle">{4:.2}</text>"#,
            x(xv),
            mt + ph,
            mt + ph + 5.0,
            mt + ph + 20.0,
            xv
        );
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="black"/><text x="{3}" y="{4}" text-anchor="end">{5}</text>"#,
            ml - 5.0,
            y(yv),
            ml,
            ml - 8.0,
            y(yv) + 4.0,
            if ymax >= 0.01 {
                format!("{yv:.3}")
            } else {
                format!("{yv:.1e}")
            }
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">latency relative to f32 (same run; lower is faster)</text>"#,
        ml + pw / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{}</text>"#,
        mt + ph / 2.0,
        mt + ph / 2.0,
        if labels {
            "top-1 accuracy drop"
        } else {
            "1 - min cosine"
        }
    );
    // The Pareto front.
    let front = pareto(rows);
    let pts: Vec<String> = front
        .iter()
        .map(|&i| {
            format!(
                "{:.1},{:.1}",
                x(rows[i].relative_latency()),
                y(rows[i].plotted_error())
            )
        })
        .collect();
    if pts.len() > 1 {
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#d62728" stroke-width="2" stroke-dasharray="6 3"/>"##,
            pts.join(" ")
        );
    }
    // Labels right of their point, moved to the nearest line free of labels placed before.
    let mut placed: Vec<(f64, f64)> = vec![];
    for (i, r) in rows.iter().enumerate() {
        let on = front.contains(&i);
        let (cx, cy) = (x(r.relative_latency()), y(r.plotted_error()));
        // The nearest free line: 0, one up, one down, two up, ... inside the plot area.
        let lx = cx + 8.0;
        let free = |y: f64| {
            y > mt + 10.0
                && y < mt + ph - 6.0
                && !placed
                    .iter()
                    .any(|&(px, py): &(f64, f64)| (px - lx).abs() < 150.0 && (py - y).abs() < 14.0)
        };
        let ly = (0..40)
            .map(|i| {
                let step = 14.0 * ((i + 1) / 2) as f64;
                cy + 4.0 + if i % 2 == 1 { -step } else { step }
            })
            .find(|&y| free(y))
            .unwrap_or(cy + 4.0);
        placed.push((lx, ly));
        if (ly - cy - 4.0).abs() > 1.0 {
            let _ = writeln!(
                s,
                r##"<line x1="{cx:.1}" y1="{cy:.1}" x2="{lx:.1}" y2="{:.1}" stroke="#999"/>"##,
                ly - 4.0
            );
        }
        let _ = writeln!(
            s,
            r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="5" fill="{}" stroke="black"/><text x="{lx:.1}" y="{ly:.1}">{}</text>"##,
            if on { "#d62728" } else { "#1f77b4" },
            esc(&r.name)
        );
    }
    let _ = writeln!(
        s,
        r##"<circle cx="{0}" cy="{1}" r="5" fill="#d62728" stroke="black"/><text x="{2}" y="{3}">Pareto front</text>"##,
        w - mr + 20.0,
        mt + 10.0,
        w - mr + 30.0,
        mt + 14.0
    );
    s.push_str("</svg>\n");
    s
}

/// The sweep's options for `setting` from the command line's.
pub fn options_for(
    c: &CompileArgs,
    setting: &Setting,
    threads: usize,
) -> Result<optc::Options, String> {
    let mut o = c.options(2)?;
    o.threads = threads;
    o.compress = CompressOptions {
        measure_latency: true,
        ..setting.compress.clone()
    };
    Ok(o)
}
