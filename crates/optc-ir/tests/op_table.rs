//! The op table does not drift: every kind has one entry, one name, and its attributes
//! round-trip through the text form; every `Op` reaches the entry of its own kind.

use optc_ir::{
    AttrText, AttrType, AttrValue, Attrs, BinaryOp, ConstId, Family, FusedStep, Op, OpKind, Prop,
    ReduceKind, UnaryOp, Window, OPS,
};
use std::collections::HashSet;

/// A value of type `ty` for attribute `i` (varied so that no two attributes look alike).
fn sample(ty: AttrType, i: usize) -> Vec<AttrValue> {
    match ty {
        AttrType::Size => vec![AttrValue::Int(1 + i as i64)],
        AttrType::Float => vec![AttrValue::Float(0.25 + i as f32)],
        AttrType::Bool => vec![AttrValue::Bool(i % 2 == 1)],
        AttrType::Sizes => vec![AttrValue::Ints(vec![1, i as i64, 2])],
        AttrType::Ints => vec![AttrValue::Ints(vec![-1, i as i64, 2])],
        AttrType::Word => optc_ir::attr::words()
            .map(|w| AttrValue::Word(w.to_string()))
            .collect(),
    }
}

/// An op of kind `k` built from sample attributes, if the kind can be built.
fn build(k: OpKind) -> Option<Op> {
    let specs = k.attr_specs();
    // words: the first candidate that builds
    let words: Vec<Vec<AttrValue>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| sample(s.ty, i))
        .collect();
    let mut choice = vec![0; specs.len()];
    loop {
        let mut a = Attrs::new(k.name());
        for (i, s) in specs.iter().enumerate() {
            a.insert(s.key, words[i][choice[i]].clone()).unwrap();
        }
        if let Ok(op) = k.build(a) {
            return Some(op);
        }
        // next combination
        let mut i = 0;
        loop {
            if i == specs.len() {
                return None;
            }
            choice[i] += 1;
            if choice[i] < words[i].len() {
                break;
            }
            choice[i] = 0;
            i += 1;
        }
    }
}

#[test]
fn every_kind_has_one_entry_and_one_name() {
    let mut names = HashSet::new();
    for (i, info) in OPS.iter().enumerate() {
        assert_eq!(info.kind as usize, i, "{} is out of order", info.name);
        assert_eq!(info.kind.info(), info);
        assert!(names.insert(info.name), "{} is named twice", info.name);
        assert_eq!(OpKind::from_name(info.name), Some(info.kind));
        assert!(info.arity.0 <= info.arity.1, "{}", info.name);
    }
    assert_eq!(OpKind::from_name("no_such_op"), None);
}

#[test]
fn every_kind_builds_from_its_attributes_and_prints_back() {
    for info in OPS {
        let k = info.kind;
        if matches!(
            k,
            OpKind::Input | OpKind::Constant | OpKind::Fused | OpKind::Pair
        ) {
            // written by the text format itself, not built from attributes
            assert!(k.build(Attrs::new(k.name())).is_err(), "{}", k.name());
            continue;
        }
        let op = build(k).unwrap_or_else(|| panic!("{} does not build", k.name()));
        // the op reaches its own entry
        assert_eq!(op.kind(), k, "{}", k.name());
        assert_eq!(op.name(), info.name);
        // its attributes are the kind's, in order, and build the same op again
        let attrs = op.attrs();
        let keys: Vec<&str> = attrs.iter().map(|a| a.0).collect();
        let spec_keys: Vec<&str> = k.attr_specs().iter().map(|s| s.key).collect();
        assert_eq!(keys, spec_keys, "{}", k.name());
        let mut a = Attrs::new(k.name());
        for (key, v) in &attrs {
            // through the text form and back
            let spec = k.attr_specs().into_iter().find(|s| s.key == *key).unwrap();
            let text = v.to_string();
            let t = if text.starts_with('[') {
                AttrText::List(
                    text.trim_matches(['[', ']'])
                        .split(',')
                        .filter(|w| !w.is_empty())
                        .map(String::from)
                        .collect(),
                )
            } else {
                AttrText::Word(text.clone())
            };
            let back = AttrValue::parse(key, spec.ty, &t).unwrap();
            assert_eq!(&back, v, "{} {key}={text}", k.name());
            a.insert(key, back).unwrap();
        }
        assert_eq!(k.build(a).unwrap(), op, "{}", k.name());
        // unknown and missing attributes are errors naming them
        let mut extra = Attrs::new(k.name());
        for (key, v) in &attrs {
            extra.insert(key, v.clone()).unwrap();
        }
        extra.insert("colour", AttrValue::Int(3)).unwrap();
        let e = k.build(extra).unwrap_err();
        assert!(e.msg.contains("'colour'"), "{}", e.msg);
        if let Some(first) = attrs.first() {
            let e = k.build(Attrs::new(k.name())).unwrap_err();
            assert!(e.msg.contains(&format!("'{}'", first.0)), "{}", e.msg);
        }
    }
}

#[test]
fn every_op_variant_and_case_has_its_kind() {
    // Ops made directly (not through the table): each lands on the entry of its name.
    let w = Window {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        pads: vec![1; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
    };
    let mut ops = vec![
        (Op::Input { index: 0 }, "input"),
        (Op::Constant { id: ConstId(0) }, "const"),
        (Op::Where, "where"),
        (Op::MatMul, "matmul"),
        (
            Op::Conv {
                window: w.clone(),
                group: 1,
            },
            "conv",
        ),
        (Op::MaxPool { window: w.clone() }, "max_pool"),
        (
            Op::AveragePool {
                window: w,
                count_include_pad: true,
            },
            "avg_pool",
        ),
        (
            Op::Fused {
                base: Box::new(Op::MatMul),
                base_inputs: 2,
                steps: vec![FusedStep::Unary(UnaryOp::Relu)],
            },
            "fused",
        ),
        (
            Op::Pair {
                first: Box::new(Op::MatMul),
                first_inputs: 2,
                second: Box::new(Op::Unary(UnaryOp::Relu)),
            },
            "pair",
        ),
    ];
    for (k, name) in [
        (ReduceKind::Sum, "reduce_sum"),
        (ReduceKind::Mean, "reduce_mean"),
        (ReduceKind::Max, "reduce_max"),
        (ReduceKind::L2, "reduce_l2"),
        (ReduceKind::Min, "reduce_min"),
        (ReduceKind::Prod, "reduce_prod"),
    ] {
        ops.push((
            Op::Reduce {
                kind: k,
                axes: vec![0],
                keepdims: true,
            },
            name,
        ));
    }
    for (op, name) in ops {
        assert_eq!(op.name(), name);
        assert_eq!(op.kind(), OpKind::from_name(name).unwrap());
    }
    // every unary and binary op has an entry of its family
    let unary: Vec<&str> = OPS
        .iter()
        .filter(|i| i.family == Family::Unary)
        .map(|i| i.name)
        .collect();
    assert_eq!(unary.len(), 39, "{unary:?}");
    let binary = OPS.iter().filter(|i| i.family == Family::Binary).count();
    assert_eq!(binary, 20);
    for b in [BinaryOp::Add, BinaryOp::Pow, BinaryOp::Or] {
        assert_eq!(Op::Binary(b).info().family, Family::Binary);
    }
}

#[test]
fn properties_are_consistent() {
    for info in OPS {
        // a fused step is an elementwise op that can also be a fused base
        if info.has(Prop::FusedStep) {
            assert!(info.family.is_elementwise(), "{}", info.name);
            assert!(info.has(Prop::FusedBase), "{}", info.name);
        }
        if info.has(Prop::Commutative) {
            assert_eq!(info.family, Family::Binary, "{}", info.name);
        }
    }
    assert!(Op::Unary(UnaryOp::Exp).has(Prop::FusedStep));
    assert!(!Op::Unary(UnaryOp::IsNaN).has(Prop::FusedStep));
    assert!(Op::Binary(BinaryOp::Max).has(Prop::Commutative));
    assert!(!Op::Binary(BinaryOp::Sub).has(Prop::Commutative));
}
