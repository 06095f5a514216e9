//! How far a compressed model's outputs are from the original's, over every input set.
//!
//! Per output: the largest absolute difference; that over the largest reference magnitude
//! (relative to the output's range, which stays meaningful where values cross zero); the
//! cosine similarity per sample (per index of the first dimension: an image of a batch, one
//! sentence), minimum and mean; for outputs whose last dimension holds scores (f32, at least
//! 2 wide) the share of rows whose arg-max agrees, and with labels the top-1 accuracy of both.

use optc_ir::Tensor;

/// The error of one output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputError {
    pub name: String,
    pub max_abs: f64,
    /// `max_abs / max |reference|`.
    pub max_rel: f64,
    pub min_cosine: f64,
    pub mean_cosine: f64,
    /// Rows (over the last dimension) whose arg-max agrees, when the output has scores.
    pub top1_agreement: Option<f64>,
    /// A smooth estimate of the share of rows whose arg-max could flip: per row the share of
    /// the reference's margin (its best score over the runner-up) the change used up, to the
    /// 4th power (a flipped row counts 1). Per-layer estimates under a top-1 budget use it:
    /// on a few calibration rows one layer rarely flips a row outright, but it moves rows
    /// toward flipping, and those moves add up across layers.
    pub top1_risk: Option<f64>,
    /// Top-1 accuracy against labels: `(reference, compressed)`.
    pub accuracy: Option<(f64, f64)>,
    /// Samples the cosine was taken over.
    pub samples: usize,
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || (row[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 && bb == 0.0 {
        1.0
    } else if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Compare `got[set][output]` with `want[set][output]`; `labels` (one class per row of the
/// scored outputs, over all sets in order) adds accuracies.
pub fn compare(
    names: &[String],
    want: &[Vec<Tensor>],
    got: &[Vec<Tensor>],
    labels: Option<&[i64]>,
) -> Vec<OutputError> {
    let mut out = vec![];
    for (o, name) in names.iter().enumerate() {
        let mut e = OutputError {
            name: name.clone(),
            min_cosine: 1.0,
            ..Default::default()
        };
        let (mut cos_sum, mut max_ref) = (0f64, 0f64);
        let (mut rows, mut agree) = (0usize, 0usize);
        let mut risk = 0f64;
        let (mut ref_ok, mut got_ok) = (0usize, 0usize);
        let mut label_rows = 0usize;
        let mut scored = true;
        for (w, g) in want.iter().zip(got) {
            let (w, g) = (&w[o], &g[o]);
            let (Some(wv), Some(gv)) = (w.as_f32(), g.as_f32()) else {
                // Non-float outputs: exact or not.
                let same = w.data() == g.data();
                e.max_abs = e.max_abs.max(if same { 0.0 } else { f64::INFINITY });
                e.min_cosine = e.min_cosine.min(if same { 1.0 } else { 0.0 });
                cos_sum += if same { 1.0 } else { 0.0 };
                e.samples += 1;
                scored = false;
                continue;
            };
            for (&x, &y) in gv.iter().zip(wv) {
                let d = (x as f64 - y as f64).abs();
                e.max_abs = e.max_abs.max(if d.is_nan() { f64::INFINITY } else { d });
                max_ref = max_ref.max((y as f64).abs());
            }
            let n = w.shape().first().copied().unwrap_or(1).max(1);
            let per = wv.len() / n;
            for s in 0..n {
                let c = cosine(&gv[s * per..(s + 1) * per], &wv[s * per..(s + 1) * per]);
                e.min_cosine = e.min_cosine.min(c);
                cos_sum += c;
                e.samples += 1;
            }
            let width = w.shape().last().copied().unwrap_or(1);
            if width < 2 || w.shape().is_empty() {
                scored = false;
                continue;
            }
            for (r, (wr, gr)) in wv.chunks(width).zip(gv.chunks(width)).enumerate() {
                let (a, b) = (argmax(wr), argmax(gr));
                rows += 1;
                agree += (a == b) as usize;
                risk += if a != b {
                    1.0
                } else {
                    // The share of the reference's margin over its runner-up this change
                    // used up (1: flipped), to the 4th power: a smooth step at 1.
                    let best_other = |row: &[f32]| {
                        row.iter()
                            .enumerate()
                            .filter(|&(i, _)| i != a)
                            .map(|(_, &v)| v as f64)
                            .fold(f64::NEG_INFINITY, f64::max)
                    };
                    let margin = wr[a] as f64 - best_other(wr);
                    let now = gr[a] as f64 - best_other(gr);
                    if margin > 0.0 {
                        ((margin - now) / margin).clamp(0.0, 1.0).powi(4)
                    } else {
                        0.0
                    }
                };
                if let Some(l) = labels.and_then(|l| l.get(label_rows + r)) {
                    ref_ok += (a as i64 == *l) as usize;
                    got_ok += (b as i64 == *l) as usize;
                }
            }
            label_rows += wv.len() / width;
        }
        e.max_rel = if max_ref > 0.0 {
            e.max_abs / max_ref
        } else if e.max_abs == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        e.mean_cosine = if e.samples > 0 {
            cos_sum / e.samples as f64
        } else {
            1.0
        };
        if scored && rows > 0 {
            e.top1_agreement = Some(agree as f64 / rows as f64);
            e.top1_risk = Some(risk / rows as f64);
            if let Some(l) = labels {
                if l.len() == rows {
                    e.accuracy = Some((ref_ok as f64 / rows as f64, got_ok as f64 / rows as f64));
                }
            }
        }
        out.push(e);
    }
    out
}

/// Labels from a `.npy` file of integer classes.
pub fn read_labels(path: &std::path::Path) -> crate::Result<Vec<i64>> {
    let t =
        crate::npy::read(path).map_err(|e| crate::Error::Io(format!("{}: {e}", path.display())))?;
    if t.dtype().is_float() {
        return Err(crate::Error::Input(format!(
            "{}: labels must be integer classes, got {}",
            path.display(),
            t.dtype()
        )));
    }
    Ok(t.to_f64_vec().into_iter().map(|v| v as i64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn errors_against_a_hand_computation() {
        // Two samples of 3 scores; the second sample's arg-max flips.
        let want = vec![vec![t(&[2, 3], &[1.0, 2.0, 3.0, 3.0, 2.0, 1.0])]];
        let got = vec![vec![t(&[2, 3], &[1.0, 2.0, 3.5, 1.0, 2.0, 1.0])]];
        let e = &compare(&["y".into()], &want, &got, Some(&[2, 1]))[0];
        assert_eq!(e.max_abs, 2.0);
        assert_eq!(e.max_rel, 2.0 / 3.0);
        // cosines: [1,2,3]·[1,2,3.5] / (|..| |..|) and [3,2,1]·[1,2,1] / ...
        let c1 = (1.0 + 4.0 + 10.5) / (14f64.sqrt() * 17.25f64.sqrt());
        let c2 = (3.0 + 4.0 + 1.0) / (14f64.sqrt() * 6f64.sqrt());
        assert!((e.min_cosine - c2).abs() < 1e-12 && c2 < c1);
        assert!((e.mean_cosine - (c1 + c2) / 2.0).abs() < 1e-12);
        assert_eq!(e.top1_agreement, Some(0.5));
        // Row 1 flipped (1); row 0's margin grew (0).
        assert_eq!(e.top1_risk, Some(1.0 / 2.0));
        // labels 2 and 1: the reference gets the first right only, the other both
        assert_eq!(e.accuracy, Some((0.5, 1.0)));
        assert_eq!(e.samples, 2);
    }

    #[test]
    fn identical_outputs_have_no_error() {
        let a = vec![
            vec![t(&[1, 4], &[0.0, -1.0, 2.0, 0.5])],
            vec![t(&[1, 4], &[0.0; 4])],
        ];
        let e = &compare(&["y".into()], &a, &a, None)[0];
        assert_eq!((e.max_abs, e.max_rel, e.min_cosine), (0.0, 0.0, 1.0));
        assert_eq!(e.top1_agreement, Some(1.0));
        assert_eq!(e.accuracy, None);
    }
}
