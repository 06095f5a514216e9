//! Interning constants: identical tensors share one id, bit for bit.

use optc_egraph::analysis::OptAnalysis;
use optc_ir::Tensor;

#[test]
fn identical_tensors_share_an_id_even_with_nan() {
    let mut a = OptAnalysis::new(vec![], vec![], 1 << 16);
    let nan = || Tensor::from_f32(vec![2], vec![f32::NAN, 1.0]).unwrap();
    // With `==`, NaN != NaN: every fold of a NaN made a new constant, and equality saturation
    // never settled (a 4-node graph took 30 s at -O3, found by the `graphs` fuzz target).
    assert_eq!(a.intern(nan()), a.intern(nan()));
    // Bits, not values: -0.0 and 0.0 stay apart (1 / x tells them apart).
    let zero = a.intern(Tensor::from_f32(vec![], vec![0.0]).unwrap());
    let minus_zero = a.intern(Tensor::from_f32(vec![], vec![-0.0]).unwrap());
    assert_ne!(zero, minus_zero);
}
