//! ONNX → optc IR importer, and a small ONNX model builder for tests.
//!
//! The importer parses the protobuf through `tract-onnx`'s generated types, then walks the
//! `GraphProto` itself: it resolves every ONNX specific (attribute defaults, opset
//! differences, negative axes, `auto_pad`, shape-typed inputs) into the static attributes
//! of [`optc_ir::Op`], and folds shape computations into constants.

pub mod builder;
mod import;
pub mod narrow;
pub mod oracle;
mod proto;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// Options of the importer.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Shapes of graph inputs, by name: required for inputs with dynamic dims, and they
    /// must agree with the static dims of the model (`--input-shape name=1x128`).
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Values of graph inputs known at compile time (e.g. `optc run --inputs DIR`). An
    /// input is bound to its value only where a node needs a constant there (a shape,
    /// pads, clip bounds, …); everywhere else it stays a run-time input, and the model
    /// keeps all its inputs.
    pub input_values: HashMap<String, optc_ir::Tensor>,
}

/// One dimension of a graph input as the model declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A dynamic dimension: its symbolic name (`batch`, `seq`), or `?` when unnamed.
    Named(String),
}

impl Dim {
    /// The size, when fixed.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(v) => Some(*v),
            Dim::Named(_) => None,
        }
    }

    /// Whether a run-time size `n` fits this dimension.
    pub fn admits(&self, n: usize) -> bool {
        self.fixed().is_none_or(|v| v == n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Named(s) => f.write_str(s),
        }
    }
}

/// A graph input as the model declares it (before any shape is chosen).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredInput {
    pub name: String,
    pub dtype: optc_ir::DType,
    /// The declared dims; `None` when the model gives no shape at all.
    pub dims: Option<Vec<Dim>>,
    /// When the ONNX type is a narrow one held as `dtype` (`narrow`): which.
    pub narrow: Option<narrow::Narrow>,
}

impl DeclaredInput {
    /// Whether every dim is fixed (the input has one possible shape).
    pub fn is_static(&self) -> bool {
        self.dims
            .as_ref()
            .is_some_and(|d| d.iter().all(|d| d.fixed().is_some()))
    }

    /// Whether a tensor of `dtype` and `shape` may be given for this input.
    pub fn admits(&self, dtype: optc_ir::DType, shape: &[usize]) -> bool {
        dtype == self.dtype
            && self.dims.as_ref().is_none_or(|d| {
                d.len() == shape.len() && d.iter().zip(shape).all(|(d, &n)| d.admits(n))
            })
    }
}

impl fmt::Display for DeclaredInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dims {
            Some(d) => {
                let dims: Vec<String> = d.iter().map(|d| d.to_string()).collect();
                write!(f, "{}[{}]", self.dtype, dims.join(","))
            }
            None => write!(f, "{}[any shape]", self.dtype),
        }
    }
}

/// An imported model: the graph, and the inputs whose given values it was specialized to.
#[derive(Clone, Debug)]
pub struct Imported {
    pub graph: optc_ir::Graph,
    /// Graph inputs bound to the value given in `ImportOptions::input_values` because a
    /// node needed a constant there (sorted): the graph is valid only for those values.
    pub bound_inputs: Vec<String>,
    /// What the import left to run time, in words: each `If` branch that could not be
    /// compiled for the model's shapes (a run that takes it fails with
    /// [`optc_ir::UNCOMPILED_BRANCH`]).
    pub warnings: Vec<String>,
}

/// Why a model could not be imported. The message names the node (or tensor, or input)
/// and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    msg: String,
    needs_values: Vec<String>,
}

impl ImportError {
    pub fn new(msg: impl Into<String>) -> Self {
        ImportError {
            msg: msg.into(),
            needs_values: vec![],
        }
    }

    /// The message, as displayed.
    pub fn message(&self) -> &str {
        &self.msg
    }

    /// Graph inputs whose values, had they been given (`ImportOptions::input_values`),
    /// would have let the import go on: a node needed a constant computed from them (an
    /// `If` condition over branches of different shapes, a loop's trip count, a shape).
    pub fn needs_values(&self) -> &[String] {
        &self.needs_values
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for ImportError {}

/// Import an ONNX file.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<optc_ir::Graph, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ImportError::new(format!("cannot read ONNX file {}: {}", path.display(), e))
    })?;
    import_bytes(&bytes, opts).map_err(|e| ImportError {
        msg: format!("{}: {}", path.display(), e.msg),
        needs_values: e.needs_values,
    })
}

/// Import an ONNX model from its protobuf bytes.
pub fn import_bytes(bytes: &[u8], opts: &ImportOptions) -> Result<optc_ir::Graph, ImportError> {
    Ok(import_bytes_bound(bytes, opts)?.graph)
}

/// Import an ONNX model from its protobuf bytes, saying which given input values the graph
/// was specialized to.
pub fn import_bytes_bound(bytes: &[u8], opts: &ImportOptions) -> Result<Imported, ImportError> {
    let model = parse(bytes)?;
    import::import_model(&model, opts)
        .map_err(|(msg, needs_values)| ImportError { msg, needs_values })
}

fn parse(bytes: &[u8]) -> Result<tract_onnx::pb::ModelProto, ImportError> {
    use tract_onnx::prelude::Framework;
    tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| {
            ImportError::new(format!(
                "the file is not a valid ONNX model (truncated or corrupted protobuf?): {e}"
            ))
        })
}

/// What a model takes and gives, as declared, before any import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The graph inputs (initializers excluded), in order.
    pub inputs: Vec<DeclaredInput>,
    /// The names of the graph outputs, in order.
    pub outputs: Vec<String>,
    /// The declared ONNX element type code of each output (0 when not declared).
    pub output_types: Vec<i32>,
}

/// The model's inputs and outputs as declared.
pub fn interface(bytes: &[u8]) -> Result<Interface, ImportError> {
    let model = parse(bytes)?;
    let inputs = import::declared_inputs(&model).map_err(ImportError::new)?;
    let graph_outputs = model.graph.as_ref().map(|g| &g.output[..]).unwrap_or(&[]);
    let outputs = graph_outputs.iter().map(|o| o.name.clone()).collect();
    let output_types = graph_outputs
        .iter()
        .map(|o| match o.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(tract_onnx::pb::type_proto::Value::TensorType(t)) => t.elem_type,
            None => 0,
        })
        .collect();
    Ok(Interface {
        inputs,
        outputs,
        output_types,
    })
}

/// Every unsupported op type of the model in one error (what an import would report
/// first, without importing: for models compiled later, at their first run).
pub fn check_ops(bytes: &[u8]) -> Result<(), ImportError> {
    let model = parse(bytes)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::new("the model has no graph"))?;
    let opset = model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(0);
    import::check_supported(graph, opset).map_err(ImportError::new)
}

/// The model's graph inputs (initializers excluded) as declared, in order.
pub fn declared_inputs(bytes: &[u8]) -> Result<Vec<DeclaredInput>, ImportError> {
    import::declared_inputs(&parse(bytes)?).map_err(ImportError::new)
}

/// Names of the model's graph inputs (initializers excluded), in order.
pub fn input_names(bytes: &[u8]) -> Result<Vec<String>, ImportError> {
    Ok(declared_inputs(bytes)?
        .into_iter()
        .map(|i| i.name)
        .collect())
}

/// Decode a serialized `TensorProto` (an `input_N.pb` / `output_N.pb` file of the ONNX
/// backend-test layout), with the same checks as initializers.
pub fn tensor_from_pb(bytes: &[u8]) -> Result<optc_ir::Tensor, String> {
    use prost::Message;
    let p = tract_onnx::pb::TensorProto::decode(bytes)
        .map_err(|e| format!("not a TensorProto: {e}"))?;
    proto::tensor_from_proto(&p, &format!("tensor '{}'", p.name))
}

/// Encode a tensor as a serialized `TensorProto` named `name` (raw_data).
pub fn tensor_to_pb(t: &optc_ir::Tensor, name: &str) -> Vec<u8> {
    use prost::Message;
    builder::tensor_proto_raw(name, t).encode_to_vec()
}

/// Encode a tensor as a serialized `TensorProto` of ONNX element type `code`: a narrow type
/// (`narrow`) is written in its own encoding from the wide tensor that holds it; any other
/// code writes the tensor as it is.
pub fn tensor_to_pb_as(t: &optc_ir::Tensor, name: &str, code: i32) -> Result<Vec<u8>, String> {
    use prost::Message;
    let Some(n) = narrow::Narrow::of(code) else {
        return Ok(tensor_to_pb(t, name));
    };
    let mut p = builder::tensor_proto_raw(name, t);
    p.data_type = n.code();
    p.raw_data = n.encode(t)?;
    Ok(p.encode_to_vec())
}

/// Parse a shape written as `1x3x224x224`.
pub fn parse_shape(s: &str) -> Result<Vec<usize>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty shape: write the dims separated by 'x', e.g. 1x3x224x224".into());
    }
    s.split(['x', 'X'])
        .map(|d| {
            d.trim().parse::<usize>().map_err(|_| {
                format!("bad dim '{d}' in shape '{s}': write the dims separated by 'x', e.g. 1x3x224x224")
            })
        })
        .collect()
}
