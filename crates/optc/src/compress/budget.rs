//! The error budget of lossy compiles (`--max-error cos=0.99,top1=0.995,abs=0.05`), on every
//! output or on the outputs named by `output=NAME` (repeatable).

use super::metrics::OutputError;
use std::fmt;

/// Limits on how far the compressed model's outputs may be from the original's; every output
/// must meet each limit that is set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Budget {
    /// Smallest cosine similarity of any sample (`cos=0.99`).
    pub min_cosine: Option<f64>,
    /// Smallest share of rows whose arg-max agrees (`top1=0.995`, or as the share allowed to
    /// disagree: `top1=0.005`).
    pub min_top1: Option<f64>,
    /// Largest drop of top-1 accuracy against the labels, in [0, 1] (`acc=0.005`).
    pub max_accuracy_drop: Option<f64>,
    /// Largest absolute difference (`abs=0.01`).
    pub max_abs: Option<f64>,
    /// Largest difference relative to the output's largest magnitude (`rel=0.02`).
    pub max_rel: Option<f64>,
    /// The outputs the limits apply to (`output=sentence_embedding`); empty: every output.
    pub outputs: Vec<String>,
}

impl Budget {
    /// Parse `key=value,...` with keys `cos`, `top1`, `acc`, `abs`, `rel` and `output`.
    pub fn parse(s: &str) -> Result<Budget, String> {
        let mut b = Budget::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!("'{part}': expected key=value (keys: cos, top1, acc, abs, rel, output)")
            })?;
            if k.trim() == "output" {
                let name = v.trim();
                if name.is_empty() {
                    return Err(format!("'{part}': expected an output name"));
                }
                b.outputs.push(name.to_string());
                continue;
            }
            let v: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("'{part}': '{v}' is not a number"))?;
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("'{part}': the value must be a finite number >= 0"));
            }
            let unit = |v: f64| {
                if v <= 1.0 {
                    Ok(v)
                } else {
                    Err(format!("'{part}': must be at most 1"))
                }
            };
            match k.trim() {
                "cos" => b.min_cosine = Some(unit(v)?),
                // 0.995 is the agreement to keep; 0.005 the share allowed to flip.
                "top1" => b.min_top1 = Some(if v < 0.5 { 1.0 - v } else { unit(v)? }),
                "acc" => b.max_accuracy_drop = Some(unit(v)?),
                "abs" => b.max_abs = Some(v),
                "rel" => b.max_rel = Some(v),
                other => {
                    return Err(format!(
                        "unknown budget key '{other}' (keys: cos, top1, acc, abs, rel, output)"
                    ))
                }
            }
        }
        Ok(b)
    }

    /// No limit is set (`output=` alone limits nothing).
    pub fn is_empty(&self) -> bool {
        Budget {
            outputs: vec![],
            ..self.clone()
        } == Budget::default()
    }

    /// Whether the limits apply to the output `name`.
    pub fn applies_to(&self, name: &str) -> bool {
        self.outputs.is_empty() || self.outputs.iter().any(|o| o == name)
    }

    /// Every way `errors` break this budget (empty: within it).
    pub fn violations(&self, errors: &[OutputError]) -> Vec<String> {
        let mut v = vec![];
        for e in errors.iter().filter(|e| self.applies_to(&e.name)) {
            if let Some(c) = self.min_cosine {
                if e.min_cosine < c {
                    v.push(format!("{}: cosine {:.5} < {c}", e.name, e.min_cosine));
                }
            }
            if let (Some(t), Some(a)) = (self.min_top1, e.top1_agreement) {
                if a < t {
                    v.push(format!("{}: top-1 agreement {:.4} < {t}", e.name, a));
                }
            }
            if let (Some(d), Some((r, g))) = (self.max_accuracy_drop, e.accuracy) {
                if r - g > d + 1e-12 {
                    v.push(format!(
                        "{}: top-1 accuracy {:.4} is {:.4} below the original's {:.4} (allowed {d})",
                        e.name,
                        g,
                        r - g,
                        r
                    ));
                }
            }
            if let Some(a) = self.max_abs {
                if e.max_abs > a {
                    v.push(format!("{}: max abs error {:.4e} > {a}", e.name, e.max_abs));
                }
            }
            if let Some(r) = self.max_rel {
                if e.max_rel > r {
                    v.push(format!("{}: max rel error {:.4e} > {r}", e.name, e.max_rel));
                }
            }
        }
        v
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![];
        if let Some(c) = self.min_cosine {
            parts.push(format!("cosine >= {c}"));
        }
        if let Some(t) = self.min_top1 {
            parts.push(format!("top-1 agreement >= {t}"));
        }
        if let Some(d) = self.max_accuracy_drop {
            parts.push(format!("accuracy drop <= {d}"));
        }
        if let Some(a) = self.max_abs {
            parts.push(format!("max abs <= {a}"));
        }
        if let Some(r) = self.max_rel {
            parts.push(format!("max rel <= {r}"));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else if self.outputs.is_empty() {
            f.write_str(&parts.join(", "))
        } else {
            write!(f, "{} (on {})", parts.join(", "), self.outputs.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_check() {
        let b = Budget::parse("cos=0.99, top1=0.005,abs=0.5").unwrap();
        assert_eq!(b.min_cosine, Some(0.99));
        assert_eq!(b.min_top1, Some(0.995));
        assert_eq!(Budget::parse("top1=0.995").unwrap().min_top1, Some(0.995));
        assert!(Budget::parse("cos=2").is_err());
        assert!(Budget::parse("speed=1").unwrap_err().contains("speed"));
        assert!(Budget::parse("cos").is_err());
        let e = OutputError {
            name: "y".into(),
            max_abs: 0.6,
            min_cosine: 0.999,
            top1_agreement: Some(0.99),
            ..Default::default()
        };
        let v = b.violations(&[e]);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("top-1") && v[1].contains("abs"), "{v:?}");
        // Limits on named outputs leave the others alone.
        let on = Budget::parse("cos=0.9999,output=z").unwrap();
        assert_eq!(on.outputs, ["z"]);
        assert!(on.violations(&v_errors("y", 0.99)).is_empty());
        assert_eq!(on.violations(&v_errors("z", 0.99)).len(), 1);
        assert_eq!(on.to_string(), "cosine >= 0.9999 (on z)");
        assert!(Budget::parse("output=z").unwrap().is_empty());
        assert!(Budget::parse("output=").is_err());
    }

    fn v_errors(name: &str, cos: f64) -> Vec<OutputError> {
        vec![OutputError {
            name: name.into(),
            min_cosine: cos,
            ..Default::default()
        }]
    }
}
