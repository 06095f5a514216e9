//! Op attributes as values: what the text format prints and parses, and what `.rules`
//! patterns match, bind and build.
//!
//! Every attribute of an op has a key, a type ([`AttrType`]) and a value ([`AttrValue`]).
//! The op table ([`crate::OpKind`]) says which attributes each op has; a [`Codec`] moves one
//! field of an [`crate::Op`] variant to and from its attribute values (most fields are one
//! attribute; a conv's [`Window`] is four, a pool's five, a slice's dims three).

use crate::{
    bail, ActivationQuantization, DType, IrError, PadMode, Result, ScatterReduction, SliceDim,
    Window,
};
use std::collections::HashMap;
use std::fmt;

/// The type of an attribute: how its text form is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttrType {
    /// A non-negative integer (an axis, a group count).
    Size,
    /// An `f32`.
    Float,
    Bool,
    /// A list of non-negative integers (a shape, a permutation, axes).
    Sizes,
    /// A list of integers (pads that may crop, slice starts and steps).
    Ints,
    /// One word of a fixed set (a dtype name, a pad mode).
    Word,
}

/// One attribute of an op: its key and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttrSpec {
    pub key: &'static str,
    pub ty: AttrType,
}

/// An attribute's value. Integers are `i64` whatever their [`AttrType`] (a `Size` or
/// `Sizes` value is checked to be non-negative when an op is built from it). Floats compare
/// by their bits, so `NaN` equals itself and `-0.0` differs from `0.0`, as in the e-graph.
#[derive(Clone, Debug)]
pub enum AttrValue {
    Int(i64),
    Float(f32),
    Bool(bool),
    Ints(Vec<i64>),
    Word(String),
}

impl PartialEq for AttrValue {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (AttrValue::Int(a), AttrValue::Int(b)) => a == b,
            (AttrValue::Float(a), AttrValue::Float(b)) => a.to_bits() == b.to_bits(),
            (AttrValue::Bool(a), AttrValue::Bool(b)) => a == b,
            (AttrValue::Ints(a), AttrValue::Ints(b)) => a == b,
            (AttrValue::Word(a), AttrValue::Word(b)) => a == b,
            _ => false,
        }
    }
}
impl Eq for AttrValue {}

/// The text form: `3`, `0.5` (Rust's shortest round-trip form: `1.0`, `1e-5`, `inf`, `NaN`),
/// `true`, `[0,2,1]`, `f32`.
impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Float(x) => write!(f, "{x:?}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Ints(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            AttrValue::Word(w) => f.write_str(w),
        }
    }
}

/// An attribute as written in text, before its type is known: a word or a list of words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrText {
    Word(String),
    List(Vec<String>),
}

fn parse_num<T: std::str::FromStr>(s: &str, key: &str, what: &str) -> Result<T> {
    match s.parse() {
        Ok(v) => Ok(v),
        Err(_) => bail!("attribute {key}: '{s}' is not {what}"),
    }
}

impl AttrValue {
    /// Parse the text of attribute `key` of type `ty`.
    pub fn parse(key: &str, ty: AttrType, text: &AttrText) -> Result<AttrValue> {
        let word = || match text {
            AttrText::Word(w) => Ok(w.as_str()),
            AttrText::List(_) => Err(IrError::new(format!(
                "attribute {key} must be a single value, not a list"
            ))),
        };
        let list = || match text {
            AttrText::List(l) => Ok(l),
            AttrText::Word(_) => Err(IrError::new(format!("attribute {key} must be a list [..]"))),
        };
        Ok(match ty {
            AttrType::Size => {
                AttrValue::Int(parse_num::<usize>(word()?, key, "a non-negative integer")? as i64)
            }
            AttrType::Float => AttrValue::Float(parse_num(word()?, key, "a number")?),
            AttrType::Bool => AttrValue::Bool(parse_num(word()?, key, "true or false")?),
            AttrType::Word => AttrValue::Word(word()?.to_string()),
            AttrType::Sizes => AttrValue::Ints(
                list()?
                    .iter()
                    .map(|s| Ok(parse_num::<usize>(s, key, "a non-negative integer")? as i64))
                    .collect::<Result<_>>()?,
            ),
            AttrType::Ints => AttrValue::Ints(
                list()?
                    .iter()
                    .map(|s| parse_num(s, key, "an integer"))
                    .collect::<Result<_>>()?,
            ),
        })
    }

    /// Whether this value can be an attribute of type `ty`.
    pub fn fits(&self, ty: AttrType) -> bool {
        match (self, ty) {
            (AttrValue::Int(i), AttrType::Size) => *i >= 0,
            (AttrValue::Float(_), AttrType::Float) => true,
            (AttrValue::Bool(_), AttrType::Bool) => true,
            (AttrValue::Ints(v), AttrType::Sizes) => v.iter().all(|&i| i >= 0),
            (AttrValue::Ints(_), AttrType::Ints) => true,
            (AttrValue::Word(_), AttrType::Word) => true,
            _ => false,
        }
    }
}

/// The attributes an op is built from, by key; building takes them out, and
/// [`Attrs::finish`] rejects what is left.
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    /// The op's name, for errors.
    pub op: String,
    map: HashMap<String, AttrValue>,
}

impl Attrs {
    pub fn new(op: &str) -> Attrs {
        Attrs {
            op: op.to_string(),
            map: HashMap::new(),
        }
    }

    /// Set `key`; an error if it is already set.
    pub fn insert(&mut self, key: &str, v: AttrValue) -> Result<()> {
        if self.map.insert(key.to_string(), v).is_some() {
            bail!("attribute '{key}' given twice");
        }
        Ok(())
    }

    fn take(&mut self, key: &str) -> Result<AttrValue> {
        match self.map.remove(key) {
            Some(v) => Ok(v),
            None => bail!("{} needs attribute '{}'", self.op, key),
        }
    }

    fn int(&mut self, key: &str) -> Result<i64> {
        match self.take(key)? {
            AttrValue::Int(i) => Ok(i),
            v => bail!("attribute {key}: {v} is not an integer"),
        }
    }

    fn size(&mut self, key: &str) -> Result<usize> {
        let i = self.int(key)?;
        usize::try_from(i).or_else(|_| bail!("attribute {key}: {i} is not a non-negative integer"))
    }

    fn float(&mut self, key: &str) -> Result<f32> {
        match self.take(key)? {
            AttrValue::Float(x) => Ok(x),
            AttrValue::Int(i) => Ok(i as f32),
            v => bail!("attribute {key}: {v} is not a number"),
        }
    }

    fn bool(&mut self, key: &str) -> Result<bool> {
        match self.take(key)? {
            AttrValue::Bool(b) => Ok(b),
            v => bail!("attribute {key}: {v} is not true or false"),
        }
    }

    fn ints(&mut self, key: &str) -> Result<Vec<i64>> {
        match self.take(key)? {
            AttrValue::Ints(v) => Ok(v),
            v => bail!("attribute {key}: {v} is not a list of integers"),
        }
    }

    fn sizes(&mut self, key: &str) -> Result<Vec<usize>> {
        self.ints(key)?
            .into_iter()
            .map(|i| {
                usize::try_from(i)
                    .or_else(|_| bail!("attribute {key}: {i} is not a non-negative integer"))
            })
            .collect()
    }

    fn word(&mut self, key: &str) -> Result<String> {
        match self.take(key)? {
            AttrValue::Word(w) => Ok(w),
            v => bail!("attribute {key}: {v} is not a word"),
        }
    }

    /// An error naming the first (by key) attribute no field took.
    pub fn finish(self) -> Result<()> {
        let mut left: Vec<&String> = self.map.keys().collect();
        left.sort();
        if let Some(k) = left.first() {
            bail!("{} has no attribute '{}'", self.op, k);
        }
        Ok(())
    }
}

/// How one field of an op variant maps to attributes. `field` is the field's name, which is
/// the attribute's key for single-attribute codecs.
pub trait Codec {
    type Value;
    fn specs(field: &'static str, out: &mut Vec<AttrSpec>);
    fn write(v: &Self::Value, field: &'static str, out: &mut Vec<(&'static str, AttrValue)>);
    fn read(field: &'static str, attrs: &mut Attrs) -> Result<Self::Value>;
}

/// A `usize` field as a [`AttrType::Size`] attribute.
pub struct Size;
/// An `f32` field.
pub struct Float;
/// A `bool` field.
pub struct Bool;
/// A `Vec<usize>` field.
pub struct Sizes;
/// A `Vec<i64>` field.
pub struct Ints;
/// A [`DType`] field as its name (`f32`, `i64`, ...).
pub struct DTypeName;
/// A [`PadMode`] field as `constant`, `reflect`, `edge` or `wrap`.
pub struct PadModeName;
/// An [`ActivationQuantization`] field as `dynamic` or `static`.
pub struct ActivationQuantizationName;
/// A [`ScatterReduction`] field as `none`, `add`, `mul`, `max` or `min`.
pub struct ScatterReductionName;
/// A conv's [`Window`]: `kernel`, `strides`, `pads`, `dilations` (`ceil_mode` is false).
pub struct ConvWindow;
/// A pool's [`Window`]: `kernel`, `strides`, `pads`, `dilations`, `ceil_mode`.
pub struct PoolWindow;
/// A slice's dims as three lists: `starts`, `steps`, `lens`.
pub struct SliceDims;

fn spec(key: &'static str, ty: AttrType) -> AttrSpec {
    AttrSpec { key, ty }
}

fn ints_of(v: &[usize]) -> AttrValue {
    AttrValue::Ints(v.iter().map(|&x| x as i64).collect())
}

/// The codecs of fields that are one attribute of the field's name.
macro_rules! single_codec {
    ($($codec:ident: $t:ty, $ty:ident, |$v:ident| $write:expr, $read:ident;)*) => {$(
        impl Codec for $codec {
            type Value = $t;
            fn specs(field: &'static str, out: &mut Vec<AttrSpec>) {
                out.push(spec(field, AttrType::$ty));
            }
            fn write($v: &$t, field: &'static str, out: &mut Vec<(&'static str, AttrValue)>) {
                out.push((field, $write));
            }
            fn read(field: &'static str, a: &mut Attrs) -> Result<$t> {
                a.$read(field)
            }
        }
    )*};
}

single_codec! {
    Size: usize, Size, |v| AttrValue::Int(*v as i64), size;
    Float: f32, Float, |v| AttrValue::Float(*v), float;
    Bool: bool, Bool, |v| AttrValue::Bool(*v), bool;
    Sizes: Vec<usize>, Sizes, |v| ints_of(v), sizes;
    Ints: Vec<i64>, Ints, |v| AttrValue::Ints(v.clone()), ints;
}

impl Codec for DTypeName {
    type Value = DType;
    fn specs(field: &'static str, out: &mut Vec<AttrSpec>) {
        out.push(spec(field, AttrType::Word));
    }
    fn write(v: &DType, field: &'static str, out: &mut Vec<(&'static str, AttrValue)>) {
        out.push((field, AttrValue::Word(v.name().to_string())));
    }
    fn read(field: &'static str, a: &mut Attrs) -> Result<DType> {
        let w = a.word(field)?;
        match DType::from_name(&w) {
            Some(d) => Ok(d),
            None => bail!("{}: unknown dtype '{w}'", a.op),
        }
    }
}

/// Every word a [`AttrType::Word`] attribute takes: the dtype names and the pad modes.
pub fn words() -> impl Iterator<Item = &'static str> {
    DType::ALL
        .iter()
        .map(|d| d.name())
        .chain(PadMode::NAMES.iter().map(|m| m.1))
        .chain(ActivationQuantization::NAMES.iter().map(|m| m.1))
        .chain(ScatterReduction::NAMES.iter().map(|m| m.1))
}

impl Codec for ScatterReductionName {
    type Value = ScatterReduction;
    fn specs(field: &'static str, out: &mut Vec<AttrSpec>) {
        out.push(spec(field, AttrType::Word));
    }
    fn write(v: &ScatterReduction, field: &'static str, out: &mut Vec<(&'static str, AttrValue)>) {
        out.push((field, AttrValue::Word(v.name().to_string())));
    }
    fn read(field: &'static str, a: &mut Attrs) -> Result<ScatterReduction> {
        let w = a.word(field)?;
        match ScatterReduction::from_name(&w) {
            Some(r) => Ok(r),
            None => bail!(
                "{}: unknown reduction '{w}' (none, add, mul, max or min)",
                a.op
            ),
        }
    }
}

impl Codec for ActivationQuantizationName {
    type Value = ActivationQuantization;
    fn specs(field: &'static str, out: &mut Vec<AttrSpec>) {
        out.push(spec(field, AttrType::Word));
    }
    fn write(
        v: &ActivationQuantization,
        field: &'static str,
        out: &mut Vec<(&'static str, AttrValue)>,
    ) {
        out.push((field, AttrValue::Word(v.name().to_string())));
    }
    fn read(field: &'static str, a: &mut Attrs) -> Result<ActivationQuantization> {
        let w = a.word(field)?;
        match ActivationQuantization::from_name(&w) {
            Some(m) => Ok(m),
            None => bail!(
                "{}: unknown activation quantization '{w}' (dynamic or static)",
                a.op
            ),
        }
    }
}

impl Codec for PadModeName {
    type Value = PadMode;
    fn specs(field: &'static str, out: &mut Vec<AttrSpec>) {
        out.push(spec(field, AttrType::Word));
    }
    fn write(v: &PadMode, field: &'static str, out: &mut Vec<(&'static str, AttrValue)>) {
        out.push((field, AttrValue::Word(v.name().to_string())));
    }
    fn read(field: &'static str, a: &mut Attrs) -> Result<PadMode> {
        let w = a.word(field)?;
        match PadMode::from_name(&w) {
            Some(m) => Ok(m),
            None => bail!("{}: unknown mode '{w}' ({})", a.op, PadMode::names()),
        }
    }
}

const WINDOW_KEYS: [&str; 4] = ["kernel", "strides", "pads", "dilations"];

fn window_specs(out: &mut Vec<AttrSpec>) {
    for k in WINDOW_KEYS {
        out.push(spec(k, AttrType::Sizes));
    }
}

fn window_write(w: &Window, out: &mut Vec<(&'static str, AttrValue)>) {
    for (k, v) in WINDOW_KEYS
        .iter()
        .zip([&w.kernel, &w.strides, &w.pads, &w.dilations])
    {
        out.push((k, ints_of(v)));
    }
}

fn window_read(a: &mut Attrs, ceil_mode: bool) -> Result<Window> {
    Ok(Window {
        kernel: a.sizes("kernel")?,
        strides: a.sizes("strides")?,
        pads: a.sizes("pads")?,
        dilations: a.sizes("dilations")?,
        ceil_mode,
    })
}

impl Codec for ConvWindow {
    type Value = Window;
    fn specs(_: &'static str, out: &mut Vec<AttrSpec>) {
        window_specs(out);
    }
    fn write(w: &Window, _: &'static str, out: &mut Vec<(&'static str, AttrValue)>) {
        window_write(w, out);
    }
    fn read(_: &'static str, a: &mut Attrs) -> Result<Window> {
        window_read(a, false)
    }
}

impl Codec for PoolWindow {
    type Value = Window;
    fn specs(_: &'static str, out: &mut Vec<AttrSpec>) {
        window_specs(out);
        out.push(spec("ceil_mode", AttrType::Bool));
    }
    fn write(w: &Window, _: &'static str, out: &mut Vec<(&'static str, AttrValue)>) {
        window_write(w, out);
        out.push(("ceil_mode", AttrValue::Bool(w.ceil_mode)));
    }
    fn read(_: &'static str, a: &mut Attrs) -> Result<Window> {
        let w = window_read(a, false)?;
        Ok(Window {
            ceil_mode: a.bool("ceil_mode")?,
            ..w
        })
    }
}

impl Codec for SliceDims {
    type Value = Vec<SliceDim>;
    fn specs(_: &'static str, out: &mut Vec<AttrSpec>) {
        out.push(spec("starts", AttrType::Ints));
        out.push(spec("steps", AttrType::Ints));
        out.push(spec("lens", AttrType::Sizes));
    }
    fn write(dims: &Vec<SliceDim>, _: &'static str, out: &mut Vec<(&'static str, AttrValue)>) {
        out.push((
            "starts",
            AttrValue::Ints(dims.iter().map(|d| d.start).collect()),
        ));
        out.push((
            "steps",
            AttrValue::Ints(dims.iter().map(|d| d.step).collect()),
        ));
        out.push((
            "lens",
            AttrValue::Ints(dims.iter().map(|d| d.len as i64).collect()),
        ));
    }
    fn read(_: &'static str, a: &mut Attrs) -> Result<Vec<SliceDim>> {
        let starts = a.ints("starts")?;
        let steps = a.ints("steps")?;
        let lens = a.sizes("lens")?;
        if starts.len() != steps.len() || starts.len() != lens.len() {
            bail!("slice: starts, steps and lens must have the same length");
        }
        Ok((0..starts.len())
            .map(|i| SliceDim {
                start: starts[i],
                step: steps[i],
                len: lens[i],
            })
            .collect())
    }
}
