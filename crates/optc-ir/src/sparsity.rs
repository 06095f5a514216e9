//! When a constant weight is sparse enough for the sparse kernels: one rule shared by the
//! cost model (`optc_egraph::cost`) and codegen (`optc_codegen`'s x64 sparse strategy), so the
//! extraction prices what the code does.
//!
//! The AVX2 sparse kernel does one 8-wide multiply-add per stored weight and 8 columns, plus
//! an offset load and a broadcast: per stored weight it runs at about [`SPARSE_EFFICIENCY`]
//! of a dense multiply-add's rate (measured by `benches/sparse.rs` on the transformer FFN and
//! conv shapes). Columns are computed in multiples of 8 (a MatMul's rows of A, a conv's
//! output pixels), so few columns waste lanes.

/// Rate of the sparse kernel per stored weight, as a fraction of the dense GEMM's rate per
/// weight (`benches/sparse.rs`).
pub const SPARSE_EFFICIENCY: f64 = 0.45;

/// The same for fewer than 8 columns (a MatMul on a few rows, e.g. a batch-1 classifier):
/// one scalar multiply-add per stored weight and column, against a dense kernel bound by
/// streaming the weights.
pub const SCALAR_EFFICIENCY: f64 = 0.15;

/// The fraction of the dense cost a sparse kernel takes for `nonzeros` of `len` weights
/// over `columns` columns (lanes rounded up to vectors of 8; below 8 columns, scalar).
pub fn sparse_cost_ratio(nonzeros: usize, len: usize, columns: usize) -> f64 {
    if len == 0 || columns == 0 {
        return f64::INFINITY;
    }
    let density = nonzeros as f64 / len as f64;
    if columns < 8 {
        return density / SCALAR_EFFICIENCY;
    }
    let lanes = columns.div_ceil(8) * 8;
    density * (lanes as f64 / columns as f64) / SPARSE_EFFICIENCY
}

/// Whether the sparse kernel beats the dense one (with a margin of 10% for the packing it
/// adds): a cost ratio below 0.9.
pub fn sparse_pays(nonzeros: usize, len: usize, columns: usize) -> bool {
    sparse_pays_over(nonzeros, len, columns, 1.0)
}

/// The same against a dense kernel `dense_gain` times faster than the plain GEMM (a 3x3
/// conv's Winograd: about 2x on 28x28 maps, `benches/sparse.rs`).
pub fn sparse_pays_over(nonzeros: usize, len: usize, columns: usize, dense_gain: f64) -> bool {
    sparse_cost_ratio(nonzeros, len, columns) * dense_gain.max(1.0) < 0.9
}

/// When constant weights take the sparse kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SparseMode {
    /// Where [`sparse_pays`] (the default).
    #[default]
    Auto,
    /// Never (dense kernels only).
    Off,
    /// Wherever the weight has a zero (to measure the kernels; slower than dense on dense
    /// weights).
    Always,
}

impl SparseMode {
    pub fn parse(s: &str) -> Result<SparseMode, String> {
        match s {
            "auto" => Ok(SparseMode::Auto),
            "off" => Ok(SparseMode::Off),
            "always" => Ok(SparseMode::Always),
            _ => Err(format!("must be auto, off or always, not '{s}'")),
        }
    }
    /// Whether a weight with `nonzeros` of `len` values over `columns` columns takes the
    /// sparse kernel, against a dense kernel `dense_gain` times the plain GEMM's speed.
    pub fn takes_sparse(
        self,
        nonzeros: usize,
        len: usize,
        columns: usize,
        dense_gain: f64,
    ) -> bool {
        match self {
            SparseMode::Auto => sparse_pays_over(nonzeros, len, columns, dense_gain),
            SparseMode::Off => false,
            SparseMode::Always => columns >= 1 && nonzeros < len,
        }
    }
}

/// Nonzeros of an f32 tensor's values.
pub fn nonzeros(values: &[f32]) -> usize {
    values.iter().filter(|v| **v != 0.0).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_weights_never_pay() {
        assert!(!sparse_pays(100, 100, 1024));
        assert!(!sparse_pays(50, 100, 1024));
        assert!(sparse_pays(10, 100, 128));
        // Few columns: the scalar kernel, which pays only further down; lanes wasted on 9
        // columns.
        assert!(!sparse_pays(20, 100, 4));
        assert!(sparse_pays(10, 100, 1));
        assert!(sparse_cost_ratio(10, 100, 9) > sparse_cost_ratio(10, 100, 16));
    }
}
