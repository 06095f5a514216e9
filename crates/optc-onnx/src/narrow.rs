//! ONNX element types optc holds widened (see `optc_ir::narrow`): `float16` and `bfloat16`
//! as f32, `int16`, `uint16` and `uint32` as i64. A value of such a type is rounded (or
//! wrapped) back into its type wherever it is produced, so every result is the one the
//! narrow type gives; it crosses the API as the wide type (`optc run` reads and writes the
//! narrow encoding in `.pb` files). `uint64` is held as the same 64 bits in an i64: exact
//! for wrapping arithmetic and bits; orderings go through a sign-bit flip, and the ops that
//! would read the bits as signed are refused (`import/narrowing.rs`).

use optc_ir::{DType, Data, Op, Tensor, UnaryOp};
use tract_onnx::pb;

/// A narrow ONNX element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Narrow {
    F16,
    Bf16,
    I16,
    U16,
    U32,
    U64,
}

impl Narrow {
    /// The narrow type of ONNX element type `code`, if it is one.
    pub fn of(code: i32) -> Option<Narrow> {
        use pb::tensor_proto::DataType as T;
        Some(match T::try_from(code).ok()? {
            T::Float16 => Narrow::F16,
            T::Bfloat16 => Narrow::Bf16,
            T::Int16 => Narrow::I16,
            T::Uint16 => Narrow::U16,
            T::Uint32 => Narrow::U32,
            T::Uint64 => Narrow::U64,
            _ => return None,
        })
    }

    /// Its ONNX element type code.
    pub fn code(self) -> i32 {
        use pb::tensor_proto::DataType as T;
        (match self {
            Narrow::F16 => T::Float16,
            Narrow::Bf16 => T::Bfloat16,
            Narrow::I16 => T::Int16,
            Narrow::U16 => T::Uint16,
            Narrow::U32 => T::Uint32,
            Narrow::U64 => T::Uint64,
        }) as i32
    }

    /// The IR dtype that holds it.
    pub fn wide(self) -> DType {
        match self {
            Narrow::F16 | Narrow::Bf16 => DType::F32,
            _ => DType::I64,
        }
    }

    /// The op that brings a wide value back into the type (none for uint64: every i64
    /// holds a uint64's bits).
    pub fn op(self) -> Option<Op> {
        Some(Op::Unary(match self {
            Narrow::U64 => return None,
            Narrow::F16 => UnaryOp::RoundToHalf { bfloat: false },
            Narrow::Bf16 => UnaryOp::RoundToHalf { bfloat: true },
            Narrow::I16 => UnaryOp::Wrap {
                bits: 16,
                signed: true,
            },
            Narrow::U16 => UnaryOp::Wrap {
                bits: 16,
                signed: false,
            },
            Narrow::U32 => UnaryOp::Wrap {
                bits: 32,
                signed: false,
            },
        }))
    }

    /// Bytes per element in ONNX's raw encoding.
    pub fn size(self) -> usize {
        match self {
            Narrow::U64 => 8,
            Narrow::U32 => 4,
            _ => 2,
        }
    }

    /// Decode `n` elements from a tensor proto's raw bytes or typed field.
    pub fn decode(self, p: &pb::TensorProto, n: usize) -> Result<Data, String> {
        let raw = !p.raw_data.is_empty()
            || (n != 0 && p.int32_data.is_empty() && p.uint64_data.is_empty());
        let words: Vec<u64> = if raw {
            if p.raw_data.len() != n * self.size() {
                return Err(format!(
                    "its data holds {} elements, its dims {n}",
                    p.raw_data.len() / self.size()
                ));
            }
            p.raw_data
                .chunks_exact(self.size())
                .map(|c| c.iter().rev().fold(0u64, |acc, &b| (acc << 8) | b as u64))
                .collect()
        } else {
            // int32_data holds 16-bit types (one per entry), uint64_data the unsigned ones.
            let v: Vec<u64> = if matches!(self, Narrow::U32 | Narrow::U64) {
                p.uint64_data.clone()
            } else {
                p.int32_data.iter().map(|&x| x as u32 as u64).collect()
            };
            if v.len() != n {
                return Err(format!("its data holds {} elements, its dims {n}", v.len()));
            }
            v
        };
        Ok(match self {
            Narrow::F16 => Data::F32(
                words
                    .iter()
                    .map(|&w| optc_ir::narrow::f16_value(w as u16))
                    .collect(),
            ),
            Narrow::Bf16 => Data::F32(
                words
                    .iter()
                    .map(|&w| optc_ir::narrow::bf16_value(w as u16))
                    .collect(),
            ),
            Narrow::I16 => Data::I64(words.iter().map(|&w| w as u16 as i16 as i64).collect()),
            Narrow::U16 => Data::I64(words.iter().map(|&w| w as u16 as i64).collect()),
            Narrow::U32 => Data::I64(words.iter().map(|&w| w as u32 as i64).collect()),
            Narrow::U64 => Data::I64(words.iter().map(|&w| w as i64).collect()),
        })
    }

    /// The raw little-endian encoding of a wide tensor's values in this type (values outside
    /// the type are rounded or wrapped as the narrowing op does).
    pub fn encode(self, t: &Tensor) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(t.numel() * self.size());
        match (self, t.data()) {
            (Narrow::F16, Data::F32(v)) => {
                for &x in v {
                    out.extend(optc_ir::narrow::f16_bits(x).to_le_bytes());
                }
            }
            (Narrow::Bf16, Data::F32(v)) => {
                for &x in v {
                    out.extend(optc_ir::narrow::bf16_bits(x).to_le_bytes());
                }
            }
            (Narrow::I16 | Narrow::U16, Data::I64(v)) => {
                for &x in v {
                    out.extend((x as u16).to_le_bytes());
                }
            }
            (Narrow::U32, Data::I64(v)) => {
                for &x in v {
                    out.extend((x as u32).to_le_bytes());
                }
            }
            (Narrow::U64, Data::I64(v)) => {
                for &x in v {
                    out.extend((x as u64).to_le_bytes());
                }
            }
            _ => {
                return Err(format!(
                    "a {} tensor cannot be written as {:?}",
                    t.dtype(),
                    self
                ))
            }
        }
        Ok(out)
    }
}
