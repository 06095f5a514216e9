//! Target: the tensor file readers (`.pb` TensorProto for `optc run --inputs`, `.npy` for
//! calibration sets and labels).

/// Read `data` as a TensorProto and as a `.npy` file: an error is fine; a tensor that reads
/// must write back and read again to the same tensor.
pub fn target(data: &[u8]) {
    if let Ok(t) = optc_onnx::tensor_from_pb(data) {
        let again = optc_onnx::tensor_from_pb(&optc_onnx::tensor_to_pb(&t, "t"))
            .expect("a tensor optc wrote reads back");
        assert!(
            same(&t, &again),
            "a .pb tensor changed through a write and a read"
        );
    }
    if let Ok(t) = optc::npy::from_bytes(data) {
        let again =
            optc::npy::from_bytes(&optc::npy::to_bytes(&t)).expect("a .npy optc wrote reads back");
        assert!(
            same(&t, &again),
            "a .npy tensor changed through a write and a read"
        );
    }
}

/// Equal shapes, types and bits (NaN payloads included).
fn same(a: &optc_ir::Tensor, b: &optc_ir::Tensor) -> bool {
    a.shape() == b.shape()
        && a.dtype() == b.dtype()
        && a.data().to_le_bytes() == b.data().to_le_bytes()
}
