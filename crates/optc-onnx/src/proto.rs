//! Decoding of ONNX protobuf pieces: tensors, dtypes, attributes.

use optc_ir::{checked_numel, DType, Data, Tensor};
use tract_onnx::pb;

/// Name of an ONNX `TensorProto.DataType` code.
pub fn onnx_type_name(code: i32) -> String {
    match pb::tensor_proto::DataType::try_from(code) {
        Ok(t) => format!("{} ({code})", t.as_str_name()),
        Err(_) => format!("unknown type code {code}"),
    }
}

/// Map an ONNX element type to a dtype.
pub fn dtype_of(code: i32) -> Option<DType> {
    Some(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        11 => DType::F64,
        _ => return None,
    })
}

pub const SUPPORTED_TYPES: &str =
    "FLOAT, DOUBLE, FLOAT16, BFLOAT16, UINT8, INT8, INT16, UINT16, INT32, UINT32, INT64, BOOL";

/// The IR dtype that holds ONNX element type `code`: its own, or the wide type of a
/// narrow one (`crate::narrow`).
pub fn held_as(code: i32) -> Option<DType> {
    dtype_of(code).or_else(|| crate::narrow::Narrow::of(code).map(|n| n.wide()))
}

/// Decode a tensor proto. `what` names it in errors ("initializer 'w'").
pub fn tensor_from_proto(p: &pb::TensorProto, what: &str) -> Result<Tensor, String> {
    if p.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
        || !p.external_data.is_empty()
    {
        return Err(format!(
            "{what} stores its data in an external file, which is not supported: \
             save the model with all tensors inside the .onnx file"
        ));
    }
    if p.segment.is_some() {
        return Err(format!(
            "{what} is a segment of a tensor, which is not supported"
        ));
    }
    if let Some(narrow) = crate::narrow::Narrow::of(p.data_type) {
        let mut shape = Vec::with_capacity(p.dims.len());
        for &d in &p.dims {
            let d =
                usize::try_from(d).map_err(|_| format!("{what} has a bad dim in {:?}", p.dims))?;
            shape.push(d);
        }
        let n = checked_numel(&shape).map_err(|e| format!("{what}: {e}"))?;
        let data = narrow.decode(p, n).map_err(|e| format!("{what}: {e}"))?;
        return Tensor::new(shape, data).map_err(|e| format!("{what}: {e}"));
    }
    let dtype = dtype_of(p.data_type).ok_or_else(|| {
        format!(
            "{what} has element type {}, which is not supported (supported: {SUPPORTED_TYPES})",
            onnx_type_name(p.data_type)
        )
    })?;
    let mut shape = Vec::with_capacity(p.dims.len());
    for &d in &p.dims {
        if d < 0 {
            return Err(format!("{what} has a negative dim in {:?}", p.dims));
        }
        shape.push(usize::try_from(d).map_err(|_| format!("{what}: dim {d} is too large"))?);
    }
    let n = checked_numel(&shape).map_err(|e| format!("{what}: {e}"))?;
    let nbytes = n
        .checked_mul(dtype.size())
        .ok_or_else(|| format!("{what}: shape {shape:?} is too large"))?;
    let mismatch = |got: usize| {
        format!(
            "{what} has dims {:?} ({n} elements) but its data holds {got} elements",
            p.dims
        )
    };
    let typed_len = match dtype {
        DType::F32 => p.float_data.len(),
        DType::F64 => p.double_data.len(),
        DType::I64 => p.int64_data.len(),
        _ => p.int32_data.len(),
    };
    let data = if !p.raw_data.is_empty() || (typed_len == 0 && n != 0) {
        if p.raw_data.len() != nbytes {
            return Err(mismatch(p.raw_data.len() / dtype.size()));
        }
        Data::from_le_bytes(dtype, &p.raw_data).map_err(|e| format!("{what}: {e}"))?
    } else {
        if typed_len != n {
            return Err(mismatch(typed_len));
        }
        match dtype {
            DType::F32 => Data::F32(p.float_data.clone()),
            DType::I64 => Data::I64(p.int64_data.clone()),
            DType::I32 => Data::I32(p.int32_data.clone()),
            DType::Bool => Data::Bool(p.int32_data.iter().map(|&x| x != 0).collect()),
            DType::U8 => Data::U8(p.int32_data.iter().map(|&x| x as u8).collect()),
            DType::I8 => Data::I8(p.int32_data.iter().map(|&x| x as i8).collect()),
            DType::F64 => Data::F64(p.double_data.clone()),
        }
    };
    Tensor::new(shape, data).map_err(|e| format!("{what}: {e}"))
}

/// Attribute lookups on a node.
pub struct Attrs<'a> {
    pub node: &'a pb::NodeProto,
}

impl<'a> Attrs<'a> {
    pub fn get(&self, name: &str) -> Option<&'a pb::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|a| a.i)
    }

    pub fn int_or(&self, name: &str, default: i64) -> i64 {
        self.int(name).unwrap_or(default)
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        self.get(name).map(|a| a.f)
    }

    pub fn float_or(&self, name: &str, default: f32) -> f32 {
        self.float(name).unwrap_or(default)
    }

    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }

    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.get(name).map(|a| a.floats.clone())
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    pub fn strings(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
    }

    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(a) => match &a.t {
                Some(t) => tensor_from_proto(t, &format!("attribute '{name}'")).map(Some),
                None => Err(format!("attribute '{name}' holds no tensor")),
            },
        }
    }
}
