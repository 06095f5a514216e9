//! The tract oracle: runs the *original* ONNX model in tract, for `optc check`,
//! `optc bench` and the tests. Independent of optc's importer, IR and codegen.

use optc_ir::{DType, Data, Tensor};
use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue, TValue,
    Tensor as TTensor, TypedRunnableModel,
};

/// A model loaded and optimized by tract, ready to run.
pub struct TractModel {
    plan: std::sync::Arc<TypedRunnableModel>,
}

fn dt(d: DType) -> DatumType {
    match d {
        DType::F32 => DatumType::F32,
        DType::I64 => DatumType::I64,
        DType::I32 => DatumType::I32,
        DType::Bool => DatumType::Bool,
        DType::U8 => DatumType::U8,
        DType::I8 => DatumType::I8,
        DType::F64 => DatumType::F64,
    }
}

fn to_tract(t: &Tensor) -> Result<TTensor, String> {
    let s = t.shape();
    let r = match t.data() {
        Data::F32(v) => TTensor::from_shape(s, v),
        Data::I64(v) => TTensor::from_shape(s, v),
        Data::I32(v) => TTensor::from_shape(s, v),
        Data::Bool(v) => TTensor::from_shape(s, v),
        Data::U8(v) => TTensor::from_shape(s, v),
        Data::I8(v) => TTensor::from_shape(s, v),
        Data::F64(v) => TTensor::from_shape(s, v),
    };
    r.map_err(|e| format!("tract: {e}"))
}

fn from_tract(t: &TTensor) -> Result<Tensor, String> {
    let shape = t.shape().to_vec();
    let err = |e: tract_onnx::prelude::TractError| format!("tract output: {e}");
    let view = t.try_as_plain_ram().map_err(err)?;
    let data = match t.datum_type() {
        DatumType::F32 => Data::F32(view.as_slice::<f32>().map_err(err)?.to_vec()),
        DatumType::I64 => Data::I64(view.as_slice::<i64>().map_err(err)?.to_vec()),
        DatumType::F64 => Data::F64(view.as_slice::<f64>().map_err(err)?.to_vec()),
        // tract computes some integer results (shape arithmetic) as symbolic dims
        DatumType::TDim => {
            let c = t.cast_to::<i64>().map_err(err)?;
            let v = c
                .try_as_plain_ram()
                .map_err(err)?
                .as_slice::<i64>()
                .map_err(err)?
                .to_vec();
            Data::I64(v)
        }
        DatumType::I32 => Data::I32(view.as_slice::<i32>().map_err(err)?.to_vec()),
        DatumType::Bool => Data::Bool(view.as_slice::<bool>().map_err(err)?.to_vec()),
        DatumType::U8 => Data::U8(view.as_slice::<u8>().map_err(err)?.to_vec()),
        DatumType::I8 => Data::I8(view.as_slice::<i8>().map_err(err)?.to_vec()),
        other => return Err(format!("tract output has unsupported type {other:?}")),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

impl TractModel {
    /// Load ONNX bytes, fixing every input's type and shape to `inputs`' (in graph order).
    pub fn load(onnx: &[u8], inputs: &[(DType, Vec<usize>)]) -> Result<TractModel, String> {
        guarded("loading the model", || Self::load_inner(onnx, inputs))
    }

    fn load_inner(onnx: &[u8], inputs: &[(DType, Vec<usize>)]) -> Result<TractModel, String> {
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .map_err(|e| format!("tract could not load the model: {e:#}"))?;
        for (i, (d, s)) in inputs.iter().enumerate() {
            model
                .set_input_fact(i, InferenceFact::dt_shape(dt(*d), s.clone()))
                .map_err(|e| format!("tract: input {i}: {e:#}"))?;
        }
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("tract could not prepare the model: {e:#}"))?;
        Ok(TractModel { plan })
    }

    /// Run on inputs in graph order.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        guarded("running the model", || self.run_inner(inputs))
    }

    fn run_inner(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        let mut tv = tvec![];
        for t in inputs {
            let x: TValue = to_tract(t)?.into_tvalue();
            tv.push(x);
        }
        let out = self
            .plan
            .run(tv)
            .map_err(|e| format!("tract failed to run the model: {e:#}"))?;
        out.iter().map(|t| from_tract(t)).collect()
    }
}

/// Load and run once.
pub fn run_tract(onnx: &[u8], inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    let facts: Vec<_> = inputs
        .iter()
        .map(|t| (t.dtype(), t.shape().to_vec()))
        .collect();
    TractModel::load(onnx, &facts)?.run(inputs)
}

/// Run `f`, turning a panic inside tract into an error (tract is the oracle, not the
/// product: its bugs must not crash `optc check`).
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    // The panic hook is left alone: it is process-global, and swapping it here would
    // race with (and silence) panics on other threads, e.g. failing tests running in
    // parallel. tract's panic message is printed by the default hook; we add the error.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("tract panicked while {what}: {msg}"))
        }
    }
}
