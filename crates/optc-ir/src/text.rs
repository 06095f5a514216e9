//! The deterministic text format: [`print`] and [`parse`] round-trip.
//!
//! # Example
//!
//! ```text
//! graph(%x: f32[1,3,8,8]) {
//!   %w = const c0 #1f2e3d4c5b6a7988 : f32[4,3,3,3]
//!   %eps = const c1 [0.5] : f32[]
//!   %conv1 = conv(%x, %w) {kernel=[3,3], strides=[1,1], pads=[1,1,1,1], dilations=[1,1], group=1} : f32[1,4,8,8]
//!   %s = split(%conv1) {axis=1, sizes=[2,2]} : f32[1,2,8,8], f32[1,2,8,8]
//!   %"/layer1/Relu_output_0" = relu(%s#1) : f32[1,2,8,8]
//!   return %y = %conv1, %z = %"/layer1/Relu_output_0"
//! }
//! ```
//!
//! # Grammar
//!
//! One statement per line; blank lines and lines starting with `//` are ignored.
//!
//! ```text
//! graph    := "graph(" [input ("," input)*] ")" "{" NL stmt* ret? "}"
//! input    := name ":" type
//! stmt     := name "=" (const | node)
//! const    := "const" "c" INT (digest | data) ":" type
//! digest   := "#" HEX16                       -- Tensor::digest of table entry cINT
//! data     := "[" [scalar ("," scalar)*] "]"  -- all elements, row-major (≤ 16 when printed)
//! node     := OP "(" [value ("," value)*] ")" ["{" attr ("," attr)* "}"] [":" type ("," type)*]
//! ret      := "return" [name "=" value ("," name "=" value)*]
//! value    := name ["#" INT]                  -- output port; absent means port 0
//! name     := "%" (IDENT | QUOTED)            -- IDENT = [A-Za-z0-9_.]+; QUOTED = "..." with
//!                                             -- escapes \" \\ \n \t \r \u{HEX}
//! type     := DTYPE "[" [INT ("," INT)*] "]"  -- f32[1,3,8,8], i64[] (scalar)
//! attr     := KEY "=" (word | "[" [word ("," word)*] "]")
//! word     := INT | FLOAT | "true" | "false" | IDENT
//! ```
//!
//! Floats print with Rust's shortest round-trip representation (`0.1`, `1e-5`, `inf`, `-inf`,
//! `NaN`). Values of multi-output nodes are always written with their port (`%s#0`, `%s#1`).
//!
//! Printing: inputs in graph order in the header; then every other node in
//! [`Graph::topo_order`]; then the outputs. Every node line shows its output types.
//! Constants of at most [`INLINE_MAX`] elements are written inline in full; larger ones by
//! table id and digest.
//!
//! Parsing: the output type annotation of op nodes is optional (when present it must equal the
//! inferred type). A constant written by digest is taken from `consts[id]`, whose type and
//! digest must match. The parsed graph's constant table keeps every id: slot `i` holds the
//! inline tensor defined for `ci`, else `consts[i]`, else (for an id no node refers to) an
//! empty placeholder `f32[0]`; its length is `max(consts.len(), highest id + 1)`.

use crate::attr::AttrText;
use crate::{
    bail, AttrValue, Attrs, ConstId, DType, Data, Family, FusedStep, Graph, IrError, Node, NodeId,
    Op, OpKind, Result, Tensor, TensorType, Value,
};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;

/// Constants with at most this many elements are printed inline.
pub const INLINE_MAX: usize = 16;

// ---------------------------------------------------------------------------------------------
// Printing.

fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// `%name`, quoted when it is not a plain identifier.
fn fmt_name(name: &str) -> String {
    if is_plain(name) {
        return format!("%{name}");
    }
    let mut s = String::from("%\"");
    for c in name.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{{{:x}}}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn fmt_f32(x: f32) -> String {
    format!("{x:?}")
}

fn fmt_data(d: &Data) -> String {
    let parts: Vec<String> = match d {
        Data::F32(v) => v.iter().map(|&x| fmt_f32(x)).collect(),
        Data::F64(v) => v.iter().map(|&x| format!("{x:?}")).collect(),
        Data::I64(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::I32(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::U8(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::I8(v) => v.iter().map(|x| x.to_string()).collect(),
    };
    format!("[{}]", parts.join(", "))
}

/// A fused step as one word: `relu`, `clip+0.0+6.0`, `add+3`, `sub+3+swap` (a unary step's
/// attribute values follow its name in table order).
fn step_word(st: &FusedStep) -> String {
    match st {
        FusedStep::Unary(u) => {
            let op = Op::Unary(u.clone());
            let mut w = op.name().to_string();
            for (_, v) in op.attrs() {
                w.push('+');
                w.push_str(&v.to_string());
            }
            w
        }
        FusedStep::Binary { op, input, swap } => {
            let mut w = format!("{}+{input}", Op::Binary(*op).name());
            if *swap {
                w.push_str("+swap");
            }
            w
        }
    }
}

fn parse_step(w: &str) -> Result<FusedStep> {
    let parts: Vec<&str> = w.split('+').collect();
    let Some(kind) = OpKind::from_name(parts[0]) else {
        bail!("unknown op '{}'", parts[0]);
    };
    match kind.info().family {
        Family::Unary => {
            let specs = kind.attr_specs();
            if parts.len() - 1 < specs.len() {
                bail!("fused step '{w}' is missing a parameter");
            }
            if parts.len() - 1 > specs.len() {
                bail!("'{w}' is not a fused step");
            }
            let mut attrs = Attrs::new(parts[0]);
            for (s, p) in specs.iter().zip(&parts[1..]) {
                attrs.insert(
                    s.key,
                    AttrValue::parse(s.key, s.ty, &AttrText::Word(p.to_string()))?,
                )?;
            }
            match kind.build(attrs)? {
                Op::Unary(u) => Ok(FusedStep::Unary(u)),
                _ => bail!("'{w}' is not a fused step"),
            }
        }
        Family::Binary if parts.len() >= 2 && parts.len() <= 3 => {
            let Op::Binary(op) = kind.build(Attrs::new(parts[0]))? else {
                bail!("'{w}' is not a fused step");
            };
            let input = match parts[1].parse() {
                Ok(i) => i,
                Err(_) => bail!("attribute steps: '{}' is not an input index", parts[1]),
            };
            let swap = match parts.get(2) {
                None => false,
                Some(&"swap") => true,
                Some(o) => bail!("fused step '{w}': expected 'swap', found '{o}'"),
            };
            Ok(FusedStep::Binary { op, input, swap })
        }
        _ => bail!("'{w}' is not a fused step"),
    }
}

/// The op word of the text format: the op name, `fused.<base>` for fused ops.
fn op_word(op: &Op) -> String {
    match op {
        Op::Fused { base, .. } => format!("fused.{}", base.name()),
        Op::Pair { first, second, .. } => format!("pair.{}.{}", op_word(first), op_word(second)),
        _ => op.name().to_string(),
    }
}

/// The attributes of an op, in print order: the table's, and for a fused op its base's,
/// `base_inputs` and `steps`.
fn op_attrs(op: &Op) -> Vec<(&'static str, String)> {
    match op {
        Op::Fused {
            base,
            base_inputs,
            steps,
        } => {
            let mut a = op_attrs(base);
            a.push(("base_inputs", base_inputs.to_string()));
            let words: Vec<String> = steps.iter().map(step_word).collect();
            a.push(("steps", format!("[{}]", words.join(", "))));
            a
        }
        // (Printed for reading only: codegen makes pairs, the parser refuses them.)
        Op::Pair {
            first,
            first_inputs,
            second,
        } => {
            let mut a: Vec<(&'static str, String)> = op_attrs(first)
                .into_iter()
                .chain(op_attrs(second))
                .collect();
            a.push(("first_inputs", first_inputs.to_string()));
            a
        }
        _ => op
            .attrs()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect(),
    }
}

fn fmt_types(ts: &[TensorType]) -> String {
    let parts: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
    parts.join(", ")
}

/// Print a graph. Deterministic: same graph, same text.
pub fn print(graph: &Graph) -> String {
    // Nodes in a deterministic order; a graph with a cycle still prints (in index order).
    let order: Vec<NodeId> = match graph.topo_order() {
        Ok(o) => o,
        Err(_) => graph.g.node_indices().collect(),
    };
    // Display names, made unique if the graph reuses a name.
    let mut names: HashMap<NodeId, String> = HashMap::new();
    let mut used: HashSet<String> = HashSet::new();
    let mut assign = |n: NodeId, base: &str| {
        if names.contains_key(&n) {
            return;
        }
        let mut name = base.to_string();
        let mut k = 1;
        while used.contains(&name) {
            name = format!("{base}~{k}");
            k += 1;
        }
        used.insert(name.clone());
        names.insert(n, name);
    };
    for i in &graph.inputs {
        if let Some(node) = graph.g.node_weight(i.node) {
            assign(i.node, &node.name);
        }
    }
    for &n in &order {
        assign(n, &graph.g[n].name);
    }
    let val = |v: Value| -> String {
        let name = match names.get(&v.node) {
            Some(n) => fmt_name(n),
            None => "%<removed>".to_string(),
        };
        let multi = graph
            .g
            .node_weight(v.node)
            .is_some_and(|n| n.outputs.len() != 1);
        if multi || v.port != 0 {
            format!("{name}#{}", v.port)
        } else {
            name
        }
    };

    let mut s = String::from("graph(");
    let mut first = true;
    for i in &graph.inputs {
        if let Some(node) = graph.g.node_weight(i.node) {
            if !first {
                s.push_str(", ");
            }
            first = false;
            let _ = write!(
                s,
                "{}: {}",
                fmt_name(&names[&i.node]),
                fmt_types(&node.outputs)
            );
        }
    }
    s.push_str(") {\n");
    let input_nodes: HashSet<NodeId> = graph.inputs.iter().map(|i| i.node).collect();
    for &n in &order {
        if input_nodes.contains(&n) {
            continue;
        }
        let node: &Node = &graph.g[n];
        let _ = write!(s, "  {} = ", fmt_name(&names[&n]));
        match &node.op {
            Op::Constant { id } => {
                let _ = write!(s, "const c{} ", id.0);
                match graph.consts.get(id.0 as usize) {
                    Some(t) if t.numel() <= INLINE_MAX => s.push_str(&fmt_data(t.data())),
                    Some(t) => {
                        let _ = write!(s, "#{:016x}", t.digest());
                    }
                    None => s.push_str("#<missing>"),
                }
            }
            op => {
                let args: Vec<String> = graph.node_inputs(n).into_iter().map(val).collect();
                let _ = write!(s, "{}({})", op_word(op), args.join(", "));
                let attrs = op_attrs(op);
                if !attrs.is_empty() {
                    let parts: Vec<String> =
                        attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = write!(s, " {{{}}}", parts.join(", "));
                }
            }
        }
        let _ = writeln!(s, " : {}", fmt_types(&node.outputs));
    }
    if !graph.outputs.is_empty() {
        let parts: Vec<String> = graph
            .outputs
            .iter()
            .map(|o| format!("{} = {}", fmt_name(&o.name), val(o.value)))
            .collect();
        let _ = writeln!(s, "  return {}", parts.join(", "));
    }
    s.push_str("}\n");
    s
}

// ---------------------------------------------------------------------------------------------
// Parsing.

/// A cursor over one line.
struct Cur<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cur<'a> {
    fn new(s: &'a str) -> Self {
        Cur { s, pos: 0 }
    }
    fn ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' || c == '\r' {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }
    fn at_end(&mut self) -> bool {
        self.ws();
        self.pos >= self.s.len()
    }
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }
    /// Skip spaces, then consume `c` if it comes next.
    fn eat(&mut self, c: char) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            bail!("expected '{}' at {}", c, self.found())
        }
    }
    fn found(&self) -> String {
        let r = self.rest();
        if r.is_empty() {
            "end of line".to_string()
        } else {
            let short: String = r.chars().take(20).collect();
            format!("'{short}'")
        }
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        self.ws();
        let r = self.rest();
        if r.starts_with(kw)
            && !r[kw.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }
    /// A run of word characters (identifiers, numbers, `inf`, `-1e-5`, ...).
    fn word(&mut self) -> Result<String> {
        self.ws();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+') {
                self.pos += 1;
            } else {
                break;
            }
        }
        if self.pos == start {
            bail!("expected a word or number at {}", self.found());
        }
        Ok(self.s[start..self.pos].to_string())
    }
    /// `%name` or `%"quoted"`.
    fn name(&mut self) -> Result<String> {
        self.ws();
        if !self.eat('%') {
            bail!("expected a %name at {}", self.found());
        }
        if self.peek() == Some('"') {
            self.pos += 1;
            let mut out = String::new();
            loop {
                let c = match self.peek() {
                    Some(c) => c,
                    None => bail!("unterminated quoted name"),
                };
                self.pos += c.len_utf8();
                match c {
                    '"' => return Ok(out),
                    '\\' => {
                        let e = match self.peek() {
                            Some(e) => e,
                            None => bail!("unterminated escape in quoted name"),
                        };
                        self.pos += e.len_utf8();
                        match e {
                            '"' => out.push('"'),
                            '\\' => out.push('\\'),
                            'n' => out.push('\n'),
                            't' => out.push('\t'),
                            'r' => out.push('\r'),
                            'u' => {
                                self.expect('{')?;
                                let start = self.pos;
                                while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                                    self.pos += 1;
                                }
                                let hex = &self.s[start..self.pos];
                                self.expect('}')?;
                                match u32::from_str_radix(hex, 16).ok().and_then(char::from_u32) {
                                    Some(ch) => out.push(ch),
                                    None => bail!("bad \\u escape '{hex}'"),
                                }
                            }
                            e => bail!("unknown escape '\\{e}' in quoted name"),
                        }
                    }
                    c => out.push(c),
                }
            }
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            self.pos += 1;
        }
        if self.pos == start {
            bail!("expected a name after '%'");
        }
        Ok(self.s[start..self.pos].to_string())
    }
    /// `name` optionally followed by `#port`.
    fn value_ref(&mut self) -> Result<(String, Option<usize>)> {
        let n = self.name()?;
        if self.peek() == Some('#') {
            self.pos += 1;
            let start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
            match self.s[start..self.pos].parse() {
                Ok(p) => Ok((n, Some(p))),
                Err(_) => bail!("expected an output port number after '{}#'", fmt_name(&n)),
            }
        } else {
            Ok((n, None))
        }
    }
    fn ty(&mut self) -> Result<TensorType> {
        let w = self.word()?;
        let dtype = match DType::from_name(&w) {
            Some(d) => d,
            None => bail!("unknown dtype '{w}'"),
        };
        self.expect('[')?;
        let mut shape = vec![];
        if !self.eat(']') {
            loop {
                let d = self.word()?;
                match d.parse::<usize>() {
                    Ok(d) => shape.push(d),
                    Err(_) => bail!("bad dimension '{d}' in type"),
                }
                if self.eat(']') {
                    break;
                }
                self.expect(',')?;
            }
        }
        Ok(TensorType::new(dtype, shape))
    }
    fn types(&mut self) -> Result<Vec<TensorType>> {
        let mut v = vec![self.ty()?];
        while self.eat(',') {
            v.push(self.ty()?);
        }
        Ok(v)
    }
    /// `[w, w, ...]` of words.
    fn word_list(&mut self) -> Result<Vec<String>> {
        self.expect('[')?;
        let mut v = vec![];
        if self.eat(']') {
            return Ok(v);
        }
        loop {
            v.push(self.word()?);
            if self.eat(']') {
                return Ok(v);
            }
            self.expect(',')?;
        }
    }
}

/// Build the op written `word` with attributes `raw` (as text): the op table gives the
/// attributes' types. `fused.<base>` takes its base's attributes plus `base_inputs` and
/// `steps`.
fn build_op(word: &str, mut raw: HashMap<String, AttrText>) -> Result<Op> {
    if let Some(base) = word.strip_prefix("fused.") {
        let mut take = |key: &str| match raw.remove(key) {
            Some(v) => Ok(v),
            None => bail!("{word} needs attribute '{key}'"),
        };
        let base_inputs = match take("base_inputs")? {
            AttrText::Word(w) => match w.parse() {
                Ok(n) => n,
                Err(_) => bail!("attribute base_inputs: '{w}' is not a non-negative integer"),
            },
            AttrText::List(_) => {
                bail!("attribute base_inputs must be a single value, not a list")
            }
        };
        let steps = match take("steps")? {
            AttrText::List(l) => l
                .iter()
                .map(|w| parse_step(w))
                .collect::<Result<Vec<_>>>()?,
            AttrText::Word(_) => bail!("attribute steps must be a list [..]"),
        };
        let base = build_plain(word, base, raw)?;
        return Ok(Op::Fused {
            base: Box::new(base),
            base_inputs,
            steps,
        });
    }
    build_plain(word, word, raw)
}

/// Build the op named `name` (written `word`) from text attributes.
fn build_plain(word: &str, name: &str, raw: HashMap<String, AttrText>) -> Result<Op> {
    let Some(kind) = OpKind::from_name(name) else {
        bail!("unknown op '{name}'");
    };
    let specs = kind.attr_specs();
    let mut attrs = Attrs::new(word);
    let mut unknown = vec![];
    let mut keys: Vec<&String> = raw.keys().collect();
    keys.sort();
    for k in keys {
        match specs.iter().find(|s| s.key == k.as_str()) {
            Some(s) => attrs.insert(k, AttrValue::parse(k, s.ty, &raw[k])?)?,
            None => unknown.push(k),
        }
    }
    let op = kind.build(attrs)?;
    if let Some(k) = unknown.first() {
        bail!("{word} has no attribute '{k}'");
    }
    Ok(op)
}

fn parse_data(words: &[String], ty: &TensorType) -> Result<Data> {
    if words.len() != ty.numel() {
        bail!(
            "inline constant of type {} needs {} elements, got {}",
            ty,
            ty.numel(),
            words.len()
        );
    }
    fn all<T: std::str::FromStr>(w: &[String], what: &str) -> Result<Vec<T>> {
        w.iter()
            .map(|s| match s.parse() {
                Ok(v) => Ok(v),
                Err(_) => bail!("'{s}' is not {what}"),
            })
            .collect()
    }
    Ok(match ty.dtype {
        DType::F32 => Data::F32(all(words, "an f32")?),
        DType::I64 => Data::I64(all(words, "an i64")?),
        DType::I32 => Data::I32(all(words, "an i32")?),
        DType::Bool => Data::Bool(all(words, "a bool (true/false)")?),
        DType::U8 => Data::U8(all(words, "a u8")?),
        DType::I8 => Data::I8(all(words, "an i8")?),
        DType::F64 => Data::F64(all(words, "an f64")?),
    })
}

struct Parser<'c> {
    g: Graph,
    consts: &'c [Arc<Tensor>],
    /// Name → node.
    vals: HashMap<String, NodeId>,
    /// Constant table slots defined inline by this text.
    inline: HashMap<u32, Arc<Tensor>>,
}

impl Parser<'_> {
    fn define(&mut self, name: &str, n: NodeId) -> Result<()> {
        if self.vals.insert(name.to_string(), n).is_some() {
            bail!("{} is defined twice", fmt_name(name));
        }
        Ok(())
    }

    fn lookup(&self, (name, port): (String, Option<usize>)) -> Result<Value> {
        let n = match self.vals.get(&name) {
            Some(&n) => n,
            None => bail!("undefined value {}", fmt_name(&name)),
        };
        let outs = self.g.g[n].outputs.len();
        let p = match port {
            Some(p) => p,
            None if outs == 1 => 0,
            None => bail!(
                "{} has {} outputs; write {}#0 .. {}#{}",
                fmt_name(&name),
                outs,
                fmt_name(&name),
                fmt_name(&name),
                outs.saturating_sub(1)
            ),
        };
        if p >= outs {
            bail!("{} has no output {} (it has {})", fmt_name(&name), p, outs);
        }
        Ok(Value::new(n, p))
    }

    /// Make table slot `id` exist (holes get a placeholder) and set it.
    fn set_const(&mut self, id: u32, t: Arc<Tensor>) {
        let i = id as usize;
        while self.g.consts.len() <= i {
            self.g
                .consts
                .push(Arc::new(Tensor::zeros(DType::F32, vec![0])));
        }
        self.g.consts[i] = t;
    }

    fn stmt(&mut self, c: &mut Cur) -> Result<()> {
        let name = c.name()?;
        c.expect('=')?;
        if c.eat_kw("const") {
            return self.constant(c, &name);
        }
        let op_name = c.word()?;
        let mut args = vec![];
        c.expect('(')?;
        if !c.eat(')') {
            loop {
                args.push(self.lookup(c.value_ref()?)?);
                if c.eat(')') {
                    break;
                }
                c.expect(',')?;
            }
        }
        let mut attrs: HashMap<String, AttrText> = HashMap::new();
        if c.eat('{') && !c.eat('}') {
            loop {
                let k = c.word()?;
                c.expect('=')?;
                c.ws();
                let v = if c.peek() == Some('[') {
                    AttrText::List(c.word_list()?)
                } else {
                    AttrText::Word(c.word()?)
                };
                if attrs.insert(k.clone(), v).is_some() {
                    bail!("attribute '{k}' given twice");
                }
                if c.eat('}') {
                    break;
                }
                c.expect(',')?;
            }
        }
        let op = build_op(&op_name, attrs)?;
        let stated = if c.eat(':') { Some(c.types()?) } else { None };
        if !c.at_end() {
            bail!("unexpected {} at the end of the line", c.found());
        }
        let outs = self.g.add_node(&name, op, &args)?;
        let node = outs
            .first()
            .map(|v| v.node)
            .ok_or_else(|| IrError::new(format!("{} has no outputs", fmt_name(&name))))?;
        if let Some(st) = stated {
            let inferred = &self.g.g[node].outputs;
            if &st != inferred {
                bail!(
                    "{} is annotated {} but its inferred type is {}",
                    fmt_name(&name),
                    fmt_types(&st),
                    fmt_types(inferred)
                );
            }
        }
        self.define(&name, node)
    }

    fn constant(&mut self, c: &mut Cur, name: &str) -> Result<()> {
        c.ws();
        if !c.eat('c') {
            bail!("expected a constant id like c0 at {}", c.found());
        }
        let w = c.word()?;
        let id: u32 = match w.parse() {
            Ok(i) => i,
            Err(_) => bail!("bad constant id 'c{w}'"),
        };
        c.ws();
        enum Body {
            Digest(String),
            Inline(Vec<String>),
        }
        let body = if c.eat('#') {
            Body::Digest(c.word()?)
        } else if c.peek() == Some('[') {
            Body::Inline(c.word_list()?)
        } else {
            bail!(
                "expected #digest or [data] after c{id}, found {}",
                c.found()
            );
        };
        c.expect(':')?;
        let ty = c.ty()?;
        if !c.at_end() {
            bail!("unexpected {} at the end of the line", c.found());
        }
        match body {
            Body::Digest(hex) => {
                let want = match u64::from_str_radix(&hex, 16) {
                    Ok(d) => d,
                    Err(_) => bail!("bad digest '#{hex}'"),
                };
                let t = match self.inline.get(&id) {
                    Some(t) => t.clone(),
                    None => match self.consts.get(id as usize) {
                        Some(t) => t.clone(),
                        None => bail!(
                            "constant c{id} is not inline and not in the table ({} entries)",
                            self.consts.len()
                        ),
                    },
                };
                if t.ty() != ty {
                    bail!("constant c{id} is {} in the table, not {}", t.ty(), ty);
                }
                if t.digest() != want {
                    bail!(
                        "constant c{id}: digest #{:016x} of the table entry does not match #{hex}",
                        t.digest()
                    );
                }
                self.set_const(id, t);
            }
            Body::Inline(words) => {
                let data = parse_data(&words, &ty)?;
                let t = Arc::new(Tensor::new(ty.shape.clone(), data)?);
                if let Some(prev) = self.inline.get(&id) {
                    if **prev != *t {
                        bail!("constant c{id} is defined twice with different data");
                    }
                }
                self.inline.insert(id, t.clone());
                self.set_const(id, t);
            }
        }
        let v = self.g.add_const_ref(name, ConstId(id))?;
        self.define(name, v.node)
    }
}

/// Parse a graph. Constants too large to print inline are looked up by id in `consts`.
pub fn parse(text: &str, consts: &[Arc<Tensor>]) -> Result<Graph> {
    let mut p = Parser {
        g: Graph::new(),
        consts,
        vals: HashMap::new(),
        inline: HashMap::new(),
    };
    let at = |line: usize, e: IrError| IrError::new(format!("line {}: {}", line + 1, e.msg));
    let lines: Vec<&str> = text.lines().collect();
    let skip = |l: &str| {
        let t = l.trim();
        t.is_empty() || t.starts_with("//")
    };
    let mut i = 0;
    while i < lines.len() && skip(lines[i]) {
        i += 1;
    }
    if i == lines.len() {
        bail!("empty text: expected 'graph(...) {{'");
    }
    // Header.
    {
        let mut c = Cur::new(lines[i]);
        let r: Result<()> = (|| {
            if !c.eat_kw("graph") {
                bail!("expected 'graph(' at {}", c.found());
            }
            c.expect('(')?;
            if !c.eat(')') {
                loop {
                    let name = c.name()?;
                    c.expect(':')?;
                    let ty = c.ty()?;
                    let v = p.g.add_input(&name, ty);
                    p.define(&name, v.node)?;
                    if c.eat(')') {
                        break;
                    }
                    c.expect(',')?;
                }
            }
            c.expect('{')?;
            if !c.at_end() {
                bail!("unexpected {} after 'graph(...) {{'", c.found());
            }
            Ok(())
        })();
        r.map_err(|e| at(i, e))?;
    }
    i += 1;
    let mut returned = false;
    let mut closed = false;
    while i < lines.len() {
        let line = lines[i];
        if skip(line) {
            i += 1;
            continue;
        }
        if closed {
            return Err(at(
                i,
                IrError::new("unexpected text after the closing '}'".to_string()),
            ));
        }
        let mut c = Cur::new(line);
        let r: Result<()> = (|| {
            if c.eat('}') {
                if !c.at_end() {
                    bail!("unexpected {} after '}}'", c.found());
                }
                closed = true;
                return Ok(());
            }
            if returned {
                bail!("expected '}}' after the return line");
            }
            if c.eat_kw("return") {
                returned = true;
                if c.at_end() {
                    return Ok(());
                }
                loop {
                    let name = c.name()?;
                    c.expect('=')?;
                    let v = p.lookup(c.value_ref()?)?;
                    p.g.add_output(&name, v);
                    if c.at_end() {
                        return Ok(());
                    }
                    c.expect(',')?;
                }
            }
            p.stmt(&mut c)
        })();
        r.map_err(|e| at(i, e))?;
        i += 1;
    }
    if !closed {
        bail!("line {}: missing the closing '}}'", lines.len());
    }
    // Table slots no node mentions keep the caller's tensors (so ids stay stable).
    for (j, t) in consts.iter().enumerate() {
        if !p.inline.contains_key(&(j as u32)) {
            if j < p.g.consts.len() {
                p.g.consts[j] = t.clone();
            } else {
                p.g.consts.push(t.clone());
            }
        }
    }
    Ok(p.g)
}
