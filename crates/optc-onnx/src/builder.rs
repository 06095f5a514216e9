//! A tiny ONNX model builder for tests: make models in Rust, get protobuf bytes.
//!
//! ```
//! use optc_ir::DType;
//! use optc_onnx::builder::ModelBuilder;
//! let mut b = ModelBuilder::new(17);
//! b.input("x", DType::F32, &[1, 4])
//!     .node("Relu", &["x"], &["y"], vec![])
//!     .output("y");
//! let bytes = b.to_bytes();
//! let g = optc_onnx::import_bytes(&bytes, &Default::default()).unwrap();
//! assert_eq!(g.output_types()[0].shape, vec![1, 4]);
//! ```

use optc_ir::{DType, Data, Tensor};
use prost::Message;
use tract_onnx::pb;

/// An attribute value.
#[derive(Clone, Debug)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    Str(String),
    Strs(Vec<String>),
    Tensor(Tensor),
    /// A graph (the body of `If`, `Loop`, `Scan`): the builder's inputs, nodes,
    /// initializers and outputs.
    Graph(Box<ModelBuilder>),
}

/// Builds a `ModelProto` node by node.
#[derive(Clone, Debug)]
pub struct ModelBuilder {
    opset: i64,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    initializers: Vec<pb::TensorProto>,
    nodes: Vec<pb::NodeProto>,
}

/// ONNX `TensorProto.DataType` code of a dtype.
pub fn onnx_dtype(d: DType) -> i32 {
    match d {
        DType::F32 => 1,
        DType::U8 => 2,
        DType::I8 => 3,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::Bool => 9,
        DType::F64 => 11,
    }
}

pub(crate) fn tensor_proto_raw(name: &str, t: &Tensor) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: onnx_dtype(t.dtype()),
        raw_data: t.data().to_le_bytes(),
        ..Default::default()
    }
}

fn tensor_proto_typed(name: &str, t: &Tensor) -> pb::TensorProto {
    let mut p = pb::TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: onnx_dtype(t.dtype()),
        ..Default::default()
    };
    match t.data() {
        Data::F32(v) => p.float_data = v.clone(),
        Data::I64(v) => p.int64_data = v.clone(),
        Data::I32(v) => p.int32_data = v.clone(),
        Data::Bool(v) => p.int32_data = v.iter().map(|&b| b as i32).collect(),
        Data::U8(v) => p.int32_data = v.iter().map(|&b| b as i32).collect(),
        Data::I8(v) => p.int32_data = v.iter().map(|&b| b as i32).collect(),
        Data::F64(v) => p.double_data = v.clone(),
    }
    p
}

fn attr_proto(name: &str, a: Attr) -> pb::AttributeProto {
    use pb::attribute_proto::AttributeType as T;
    let mut p = pb::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match a {
        Attr::Int(i) => {
            p.r#type = T::Int as i32;
            p.i = i;
        }
        Attr::Ints(v) => {
            p.r#type = T::Ints as i32;
            p.ints = v;
        }
        Attr::Float(f) => {
            p.r#type = T::Float as i32;
            p.f = f;
        }
        Attr::Floats(v) => {
            p.r#type = T::Floats as i32;
            p.floats = v;
        }
        Attr::Str(s) => {
            p.r#type = T::String as i32;
            p.s = s.into_bytes();
        }
        Attr::Strs(v) => {
            p.r#type = T::Strings as i32;
            p.strings = v.into_iter().map(String::into_bytes).collect();
        }
        Attr::Tensor(t) => {
            p.r#type = T::Tensor as i32;
            p.t = Some(tensor_proto_raw("", &t));
        }
        Attr::Graph(g) => {
            p.r#type = T::Graph as i32;
            p.g = Some(g.graph_proto());
        }
    }
    p
}

/// A typed value: a negative dim is dynamic (`dim_param` "d<i>").
fn value_info(name: &str, dtype: DType, shape: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::dimension::Value as DV;
    let dims = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| pb::tensor_shape_proto::Dimension {
            denotation: String::new(),
            value: Some(if d < 0 {
                DV::DimParam(format!("d{i}"))
            } else {
                DV::DimValue(d)
            }),
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: onnx_dtype(dtype),
                shape: Some(pb::TensorShapeProto { dim: dims }),
            })),
        }),
        doc_string: String::new(),
    }
}

impl ModelBuilder {
    /// A model importing the default ONNX domain at `opset`.
    pub fn new(opset: i64) -> Self {
        ModelBuilder {
            opset,
            inputs: vec![],
            outputs: vec![],
            initializers: vec![],
            nodes: vec![],
        }
    }

    /// A graph input. A negative dim is dynamic (`dim_param` "d<i>").
    pub fn input(&mut self, name: &str, dtype: DType, shape: &[i64]) -> &mut Self {
        let v = value_info(name, dtype, shape);
        self.inputs.push(v);
        self
    }

    /// A graph output with its type (bodies of control-flow ops declare theirs).
    pub fn output_typed(&mut self, name: &str, dtype: DType, shape: &[i64]) -> &mut Self {
        let v = value_info(name, dtype, shape);
        self.outputs.push(v);
        self
    }

    /// A graph output without type information (tract and optc infer it).
    pub fn output(&mut self, name: &str) -> &mut Self {
        self.outputs.push(pb::ValueInfoProto {
            name: name.to_string(),
            r#type: None,
            doc_string: String::new(),
        });
        self
    }

    /// An initializer stored as `raw_data`.
    pub fn initializer(&mut self, name: &str, t: &Tensor) -> &mut Self {
        self.initializers.push(tensor_proto_raw(name, t));
        self
    }

    /// An initializer stored in the typed fields (`float_data`, `int64_data`, `int32_data`).
    pub fn initializer_typed_fields(&mut self, name: &str, t: &Tensor) -> &mut Self {
        self.initializers.push(tensor_proto_typed(name, t));
        self
    }

    /// A raw initializer proto (for tests of unusual encodings).
    pub fn initializer_proto(&mut self, p: pb::TensorProto) -> &mut Self {
        self.initializers.push(p);
        self
    }

    /// A node named after its first output.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> &mut Self {
        let name = outputs.first().copied().unwrap_or("");
        self.node_named(name, op_type, inputs, outputs, attrs)
    }

    /// A node with an explicit name.
    pub fn node_named(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> &mut Self {
        self.node_in_domain(name, "", op_type, inputs, outputs, attrs)
    }

    /// A node in a custom domain.
    pub fn node_in_domain(
        &mut self,
        name: &str,
        domain: &str,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> &mut Self {
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: name.to_string(),
            op_type: op_type.to_string(),
            domain: domain.to_string(),
            attribute: attrs.into_iter().map(|(n, a)| attr_proto(n, a)).collect(),
            doc_string: String::new(),
        });
        self
    }

    /// The graph proto (the model's graph, or a body for [`Attr::Graph`]).
    pub fn graph_proto(&self) -> pb::GraphProto {
        pb::GraphProto {
            node: self.nodes.clone(),
            name: "g".into(),
            initializer: self.initializers.clone(),
            input: self.inputs.clone(),
            output: self.outputs.clone(),
            ..Default::default()
        }
    }

    /// The model proto.
    pub fn to_proto(&self) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            producer_name: "optc-onnx builder".into(),
            graph: Some(self.graph_proto()),
            ..Default::default()
        }
    }

    /// Protobuf bytes of the model.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Write the model to a file.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}
