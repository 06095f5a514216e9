//! Seeded mutations of ONNX models for the fixed-seed tests: byte-level damage (what a
//! truncated download or a flipped bit does) and structure-aware changes (an attribute,
//! a dim, a data type, an input name, an op type changed to a value an importer must not
//! trust). libFuzzer finds its own mutations; these keep CI's run meaningful without it.

use crate::source::SplitMix;
use prost::Message;
use tract_onnx::pb;

/// Numbers an importer must not trust.
const INTERESTING: [i64; 14] = [
    0,
    1,
    -1,
    2,
    -2,
    3,
    7,
    255,
    -129,
    1 << 31,
    (1 << 31) - 1,
    1 << 40,
    i64::MAX,
    i64::MIN,
];

/// One mutation of `model`, chosen by `rng`.
pub fn mutate(model: &[u8], rng: &mut SplitMix) -> Vec<u8> {
    if rng.below(3) == 0 {
        return bytes(model, rng);
    }
    match pb::ModelProto::decode(model) {
        Ok(mut m) => {
            for _ in 0..1 + rng.below(3) {
                structure(&mut m, rng);
            }
            m.encode_to_vec()
        }
        Err(_) => bytes(model, rng),
    }
}

fn bytes(model: &[u8], rng: &mut SplitMix) -> Vec<u8> {
    let mut b = model.to_vec();
    if b.is_empty() {
        return rng.bytes(16);
    }
    let at = rng.below(b.len());
    match rng.below(6) {
        0 => b.truncate(at),
        1 => b[at] ^= 1 << rng.below(8),
        2 => b[at] = [0, 0xff, 0x7f, 0x80][rng.below(4)],
        3 => {
            let end = (at + 1 + rng.below(16)).min(b.len());
            b.drain(at..end);
        }
        4 => {
            let end = (at + 1 + rng.below(32)).min(b.len());
            let chunk = b[at..end].to_vec();
            b.splice(at..at, chunk);
        }
        _ => {
            let len = 1 + rng.below(8);
            let junk = rng.bytes(len);
            b.splice(at..at, junk);
        }
    }
    b
}

fn number(rng: &mut SplitMix) -> i64 {
    INTERESTING[rng.below(INTERESTING.len())]
}

fn structure(m: &mut pb::ModelProto, rng: &mut SplitMix) {
    if rng.below(12) == 0 {
        if let Some(o) = m.opset_import.first_mut() {
            o.version = [1, 6, 9, 11, 13, 18, 21, 99][rng.below(8)];
        }
        return;
    }
    let Some(g) = m.graph.as_mut() else {
        return;
    };
    let names: Vec<String> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(g.input.iter().map(|i| i.name.clone()))
        .chain(g.initializer.iter().map(|i| i.name.clone()))
        .collect();
    match rng.below(8) {
        0 | 1 => {
            // An attribute's value.
            let Some(n) = pick_mut(&mut g.node, rng) else {
                return;
            };
            let Some(a) = pick_mut(&mut n.attribute, rng) else {
                return;
            };
            match rng.below(4) {
                0 => a.i = number(rng),
                1 => {
                    if a.ints.is_empty() {
                        a.ints.push(number(rng));
                    } else {
                        let k = rng.below(a.ints.len());
                        a.ints[k] = number(rng);
                    }
                }
                2 => {
                    if rng.below(2) == 0 {
                        a.ints.pop();
                    } else {
                        a.ints.push(number(rng));
                    }
                }
                _ => a.f = [f32::NAN, f32::INFINITY, -1.0, 0.0, 1e30][rng.below(5)],
            }
        }
        2 => {
            // A node input renamed, dropped or added.
            let Some(n) = pick_mut(&mut g.node, rng) else {
                return;
            };
            let name = names.get(rng.below(names.len().max(1))).cloned();
            match rng.below(3) {
                0 => {
                    n.input.pop();
                }
                1 => n.input.push(name.unwrap_or_default()),
                _ => {
                    if let (Some(i), Some(name)) = (pick_mut(&mut n.input, rng), name) {
                        *i = name;
                    } else if let Some(i) = pick_mut(&mut n.input, rng) {
                        i.clear();
                    }
                }
            }
        }
        3 => {
            // An op type swapped for another node's, or a node removed.
            let k = rng.below(g.node.len().max(1));
            let types: Vec<String> = g.node.iter().map(|n| n.op_type.clone()).collect();
            if rng.below(3) == 0 && !g.node.is_empty() {
                g.node.remove(k);
            } else if let Some(n) = g.node.get_mut(k) {
                n.op_type = types[rng.below(types.len())].clone();
            }
        }
        4 => {
            // A graph input's declared dim or element type.
            let Some(i) = pick_mut(&mut g.input, rng) else {
                return;
            };
            if let Some(pb::type_proto::Value::TensorType(t)) =
                i.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                if rng.below(4) == 0 {
                    t.elem_type = [0, 1, 2, 7, 9, 10, 11, 16, 99][rng.below(9)];
                } else if let Some(s) = t.shape.as_mut() {
                    if let Some(d) = pick_mut(&mut s.dim, rng) {
                        d.value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(number(
                            rng,
                        )));
                    } else {
                        s.dim.push(pb::tensor_shape_proto::Dimension {
                            denotation: String::new(),
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(
                                number(rng),
                            )),
                        });
                    }
                }
            }
        }
        5 | 6 => {
            // An initializer's dims, element type or data.
            let Some(t) = pick_mut(&mut g.initializer, rng) else {
                return;
            };
            match rng.below(4) {
                0 => {
                    if let Some(d) = pick_mut(&mut t.dims, rng) {
                        *d = number(rng);
                    } else {
                        t.dims.push(number(rng));
                    }
                }
                1 => t.data_type = [0, 1, 2, 3, 6, 7, 9, 10, 11, 16, 99][rng.below(11)],
                2 => {
                    let keep = rng.below(t.raw_data.len() + 1);
                    t.raw_data.truncate(keep);
                }
                _ => {
                    let v = number(rng);
                    t.raw_data = v.to_le_bytes().to_vec();
                    t.int64_data = vec![v];
                }
            }
        }
        _ => {
            // An output dropped or pointed elsewhere.
            let name = names.get(rng.below(names.len().max(1))).cloned();
            if let Some(o) = pick_mut(&mut g.output, rng) {
                match name {
                    Some(n) if rng.below(2) == 0 => o.name = n,
                    _ => o.name = "missing".into(),
                }
            }
        }
    }
}

fn pick_mut<'a, T>(items: &'a mut [T], rng: &mut SplitMix) -> Option<&'a mut T> {
    if items.is_empty() {
        None
    } else {
        let k = rng.below(items.len());
        items.get_mut(k)
    }
}
