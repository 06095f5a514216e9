//! Eigen-decomposition of a symmetric matrix (cyclic Jacobi rotations, f64): what the
//! low-rank factorization needs (the Gram matrix `W W^T` of a weight gives its left singular
//! vectors and squared singular values).

/// Eigenvalues (descending) and eigenvectors (`v[i * n + j]`: component `i` of vector `j`)
/// of the symmetric `n x n` matrix `a` (row-major).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "a square matrix");
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..60 {
        let mut off = 0f64;
        for p in 0..n {
            for q in p + 1..n {
                off += a[p * n + q] * a[p * n + q];
            }
        }
        if off <= 1e-24 * total || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    if k == p || k == q {
                        continue;
                    }
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    let (np, nq) = (c * akp - s * akq, s * akp + c * akq);
                    a[k * n + p] = np;
                    a[p * n + k] = np;
                    a[k * n + q] = nq;
                    a[q * n + k] = nq;
                }
                a[p * n + p] = app - t * apq;
                a[q * n + q] = aqq + t * apq;
                a[p * n + q] = 0.0;
                a[q * n + p] = 0.0;
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    // Sort descending.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vectors = vec![0f64; n * n];
    for (new, &old) in order.iter().enumerate() {
        for k in 0..n {
            vectors[k * n + new] = v[k * n + old];
        }
    }
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconstructs_a_symmetric_matrix() {
        let n = 7;
        // A = B^T B for a fixed B: symmetric, positive semi-definite.
        let b: Vec<f64> = (0..n * n)
            .map(|i| ((i * 37 + 11) % 17) as f64 / 17.0 - 0.5)
            .collect();
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| b[k * n + i] * b[k * n + j]).sum();
            }
        }
        let (l, v) = symmetric_eigen(&a, n);
        assert!(l.windows(2).all(|w| w[0] >= w[1]), "{l:?}");
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n).map(|k| v[i * n + k] * l[k] * v[j * n + k]).sum();
                assert!(
                    (r - a[i * n + j]).abs() < 1e-10,
                    "{i},{j}: {r} vs {}",
                    a[i * n + j]
                );
                // Orthonormal vectors.
                let d: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                assert!((d - f64::from(u8::from(i == j))).abs() < 1e-10);
            }
        }
    }
}
