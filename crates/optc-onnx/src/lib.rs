//! ONNX → optc IR importer, and a small ONNX model builder for tests.
//!
//! The importer parses the protobuf through `tract-onnx`'s generated types, then walks the
//! `GraphProto` itself: it resolves every ONNX specific (attribute defaults, opset
//! differences, negative axes, `auto_pad`, shape-typed inputs) into the static attributes
//! of [`optc_ir::Op`], and folds shape computations into constants.

pub mod builder;
mod import;
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

/// Why a model could not be imported. The message names the node (or tensor, or input)
/// and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    msg: String,
}

impl ImportError {
    pub fn new(msg: impl Into<String>) -> Self {
        ImportError { msg: msg.into() }
    }

    /// The message, as displayed.
    pub fn message(&self) -> &str {
        &self.msg
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
    import_bytes(&bytes, opts)
        .map_err(|e| ImportError::new(format!("{}: {}", path.display(), e.msg)))
}

/// Import an ONNX model from its protobuf bytes.
pub fn import_bytes(bytes: &[u8], opts: &ImportOptions) -> Result<optc_ir::Graph, ImportError> {
    use tract_onnx::prelude::Framework;
    let model = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| {
            ImportError::new(format!(
                "the file is not a valid ONNX model (truncated or corrupted protobuf?): {e}"
            ))
        })?;
    import::import_model(&model, opts).map_err(ImportError::new)
}

/// Names of the model's graph inputs (initializers excluded), in order.
pub fn input_names(bytes: &[u8]) -> Result<Vec<String>, ImportError> {
    use tract_onnx::prelude::Framework;
    let model = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| {
            ImportError::new(format!(
                "the file is not a valid ONNX model (truncated or corrupted protobuf?): {e}"
            ))
        })?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::new("the model has no graph"))?;
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    Ok(g.input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(|i| i.name.clone())
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
