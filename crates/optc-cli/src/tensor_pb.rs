//! ONNX `TensorProto` files (`input_N.pb` / `output_N.pb`, the ONNX backend-test layout).

use optc::{DType, Data, Tensor};
use prost::Message;
use tract_onnx::pb::TensorProto;

fn onnx_type(d: DType) -> i32 {
    match d {
        DType::F32 => 1,
        DType::U8 => 2,
        DType::I8 => 3,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::Bool => 9,
    }
}

/// Decode one serialized `TensorProto`.
pub fn decode(bytes: &[u8]) -> Result<Tensor, String> {
    let p = TensorProto::decode(bytes).map_err(|e| format!("not a TensorProto: {e}"))?;
    let dtype = match p.data_type {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        t => {
            return Err(format!(
                "tensor '{}' has ONNX data type {t}, which optc does not support \
                 (supported: float, uint8, int8, int32, int64, bool)",
                p.name
            ))
        }
    };
    let mut shape = vec![];
    for &d in &p.dims {
        shape.push(usize::try_from(d).map_err(|_| format!("negative dim {d}"))?);
    }
    let count = optc::checked_numel(&shape).map_err(|e| e.to_string())?;
    let data = if !p.raw_data.is_empty() || count == 0 {
        Data::from_le_bytes(dtype, &p.raw_data).map_err(|e| e.to_string())?
    } else {
        match dtype {
            DType::F32 => Data::F32(p.float_data.clone()),
            DType::I64 => Data::I64(p.int64_data.clone()),
            DType::I32 => Data::I32(p.int32_data.clone()),
            DType::Bool => Data::Bool(p.int32_data.iter().map(|&x| x != 0).collect()),
            DType::U8 => Data::U8(p.int32_data.iter().map(|&x| x as u8).collect()),
            DType::I8 => Data::I8(p.int32_data.iter().map(|&x| x as i8).collect()),
        }
    };
    Tensor::new(shape, data).map_err(|e| format!("tensor '{}': {e}", p.name))
}

/// Encode a tensor as a serialized `TensorProto` (raw_data).
pub fn encode(t: &Tensor, name: &str) -> Vec<u8> {
    let p = TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: onnx_type(t.dtype()),
        name: name.to_string(),
        raw_data: t.data().to_le_bytes(),
        ..Default::default()
    };
    p.encode_to_vec()
}
