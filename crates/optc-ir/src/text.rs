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

use crate::{
    bail, ConstId, DType, Data, Graph, IrError, NodeId, Op, PadMode, ReduceKind, Result, SliceDim,
    Tensor, TensorType, UnaryOp, Value, Window,
};
use crate::{BinaryOp, Node};
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

fn fmt_list<T: std::fmt::Display>(v: &[T]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn fmt_data(d: &Data) -> String {
    let parts: Vec<String> = match d {
        Data::F32(v) => v.iter().map(|&x| fmt_f32(x)).collect(),
        Data::I64(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::I32(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::U8(v) => v.iter().map(|x| x.to_string()).collect(),
        Data::I8(v) => v.iter().map(|x| x.to_string()).collect(),
    };
    format!("[{}]", parts.join(", "))
}

fn window_attrs(w: &Window, pool: bool) -> Vec<(&'static str, String)> {
    let mut a = vec![
        ("kernel", fmt_list(&w.kernel)),
        ("strides", fmt_list(&w.strides)),
        ("pads", fmt_list(&w.pads)),
        ("dilations", fmt_list(&w.dilations)),
    ];
    if pool {
        a.push(("ceil_mode", w.ceil_mode.to_string()));
    }
    a
}

fn pad_mode_name(m: PadMode) -> &'static str {
    match m {
        PadMode::Constant => "constant",
        PadMode::Reflect => "reflect",
        PadMode::Edge => "edge",
    }
}

/// The attributes of an op, in print order.
/// A fused step as one word: `relu`, `clip+0.0+6.0`, `add+3`, `sub+3+swap`.
fn step_word(st: &crate::FusedStep) -> String {
    match st {
        crate::FusedStep::Unary(u) => {
            let mut w = Op::Unary(u.clone()).name().to_string();
            for (_, v) in op_attrs(&Op::Unary(u.clone())) {
                w.push('+');
                w.push_str(&v);
            }
            w
        }
        crate::FusedStep::Binary { op, input, swap } => {
            let mut w = format!("{}+{input}", Op::Binary(*op).name());
            if *swap {
                w.push_str("+swap");
            }
            w
        }
    }
}

fn parse_step(w: &str) -> Result<crate::FusedStep> {
    let parts: Vec<&str> = w.split('+').collect();
    let f = |i: usize| -> Result<f32> {
        match parts.get(i) {
            Some(p) => parse_num(p, "steps", "a number"),
            None => bail!("fused step '{w}' is missing a parameter"),
        }
    };
    let unary = |u: UnaryOp| Ok(crate::FusedStep::Unary(u));
    let mut attrs = Attrs {
        op: parts[0].to_string(),
        map: HashMap::new(),
    };
    match parts[0] {
        "leaky_relu" => unary(UnaryOp::LeakyRelu { alpha: f(1)? }),
        "clip" => unary(UnaryOp::Clip {
            min: f(1)?,
            max: f(2)?,
        }),
        "hard_sigmoid" => unary(UnaryOp::HardSigmoid {
            alpha: f(1)?,
            beta: f(2)?,
        }),
        name => match build_op(name, &mut attrs)? {
            Op::Unary(u) if parts.len() == 1 => unary(u),
            Op::Binary(op) if parts.len() >= 2 && parts.len() <= 3 => {
                let input = parse_num(parts[1], "steps", "an input index")?;
                let swap = match parts.get(2) {
                    None => false,
                    Some(&"swap") => true,
                    Some(o) => bail!("fused step '{w}': expected 'swap', found '{o}'"),
                };
                Ok(crate::FusedStep::Binary { op, input, swap })
            }
            _ => bail!("'{w}' is not a fused step"),
        },
    }
}

/// The op word of the text format: the op name, `fused.<base>` for fused ops.
fn op_word(op: &Op) -> String {
    match op {
        Op::Fused { base, .. } => format!("fused.{}", base.name()),
        _ => op.name().to_string(),
    }
}

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
        Op::Input { .. } | Op::Constant { .. } | Op::Where | Op::MatMul | Op::Binary(_) => vec![],
        Op::Unary(u) => match u {
            UnaryOp::LeakyRelu { alpha } => vec![("alpha", fmt_f32(*alpha))],
            UnaryOp::Clip { min, max } => vec![("min", fmt_f32(*min)), ("max", fmt_f32(*max))],
            UnaryOp::HardSigmoid { alpha, beta } => {
                vec![("alpha", fmt_f32(*alpha)), ("beta", fmt_f32(*beta))]
            }
            _ => vec![],
        },
        Op::Cast { to } => vec![("to", to.name().to_string())],
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => vec![
            ("alpha", fmt_f32(*alpha)),
            ("beta", fmt_f32(*beta)),
            ("trans_a", trans_a.to_string()),
            ("trans_b", trans_b.to_string()),
        ],
        Op::Conv { window, group } => {
            let mut a = window_attrs(window, false);
            a.push(("group", group.to_string()));
            a
        }
        Op::BatchNorm { epsilon } => vec![("epsilon", fmt_f32(*epsilon))],
        Op::MaxPool { window } => window_attrs(window, true),
        Op::AveragePool {
            window,
            count_include_pad,
        } => {
            let mut a = window_attrs(window, true);
            a.push(("count_include_pad", count_include_pad.to_string()));
            a
        }
        Op::Reduce { axes, keepdims, .. } => {
            vec![("axes", fmt_list(axes)), ("keepdims", keepdims.to_string())]
        }
        Op::Softmax { axis } => vec![("axis", axis.to_string())],
        Op::LayerNorm { axis, epsilon } => {
            vec![("axis", axis.to_string()), ("epsilon", fmt_f32(*epsilon))]
        }
        Op::Reshape { shape } | Op::Expand { shape } => vec![("shape", fmt_list(shape))],
        Op::Transpose { perm } => vec![("perm", fmt_list(perm))],
        Op::Concat { axis } | Op::Gather { axis } => vec![("axis", axis.to_string())],
        Op::Split { axis, sizes } => vec![("axis", axis.to_string()), ("sizes", fmt_list(sizes))],
        Op::Slice { dims } => {
            let starts: Vec<i64> = dims.iter().map(|d| d.start).collect();
            let steps: Vec<i64> = dims.iter().map(|d| d.step).collect();
            let lens: Vec<usize> = dims.iter().map(|d| d.len).collect();
            vec![
                ("starts", fmt_list(&starts)),
                ("steps", fmt_list(&steps)),
                ("lens", fmt_list(&lens)),
            ]
        }
        Op::Pad { pads, mode, value } => vec![
            ("pads", fmt_list(pads)),
            ("mode", pad_mode_name(*mode).to_string()),
            ("value", fmt_f32(*value)),
        ],
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

enum AttrVal {
    Word(String),
    List(Vec<String>),
}

/// Attributes of one node, consumed by the op builder; leftovers are an error.
struct Attrs {
    op: String,
    map: HashMap<String, AttrVal>,
}

fn parse_num<T: std::str::FromStr>(s: &str, key: &str, what: &str) -> Result<T> {
    match s.parse() {
        Ok(v) => Ok(v),
        Err(_) => bail!("attribute {key}: '{s}' is not {what}"),
    }
}

impl Attrs {
    fn take(&mut self, key: &str) -> Result<AttrVal> {
        match self.map.remove(key) {
            Some(v) => Ok(v),
            None => bail!("{} needs attribute '{}'", self.op, key),
        }
    }
    fn word(&mut self, key: &str) -> Result<String> {
        match self.take(key)? {
            AttrVal::Word(w) => Ok(w),
            AttrVal::List(_) => bail!("attribute {key} must be a single value, not a list"),
        }
    }
    fn list(&mut self, key: &str) -> Result<Vec<String>> {
        match self.take(key)? {
            AttrVal::List(l) => Ok(l),
            AttrVal::Word(_) => bail!("attribute {key} must be a list [..]"),
        }
    }
    fn usize(&mut self, key: &str) -> Result<usize> {
        parse_num(&self.word(key)?, key, "a non-negative integer")
    }
    fn f32(&mut self, key: &str) -> Result<f32> {
        parse_num(&self.word(key)?, key, "a number")
    }
    fn bool(&mut self, key: &str) -> Result<bool> {
        parse_num(&self.word(key)?, key, "true or false")
    }
    fn usizes(&mut self, key: &str) -> Result<Vec<usize>> {
        self.list(key)?
            .iter()
            .map(|s| parse_num(s, key, "a non-negative integer"))
            .collect()
    }
    fn i64s(&mut self, key: &str) -> Result<Vec<i64>> {
        self.list(key)?
            .iter()
            .map(|s| parse_num(s, key, "an integer"))
            .collect()
    }
    fn window(&mut self, pool: bool) -> Result<Window> {
        Ok(Window {
            kernel: self.usizes("kernel")?,
            strides: self.usizes("strides")?,
            pads: self.usizes("pads")?,
            dilations: self.usizes("dilations")?,
            ceil_mode: if pool { self.bool("ceil_mode")? } else { false },
        })
    }
    fn finish(self) -> Result<()> {
        let mut left: Vec<&String> = self.map.keys().collect();
        left.sort();
        if let Some(k) = left.first() {
            bail!("{} has no attribute '{}'", self.op, k);
        }
        Ok(())
    }
}

fn build_op(name: &str, a: &mut Attrs) -> Result<Op> {
    if let Some(base) = name.strip_prefix("fused.") {
        let base = build_op(base, a)?;
        let base_inputs = a.usize("base_inputs")?;
        let steps = a
            .list("steps")?
            .iter()
            .map(|w| parse_step(w))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Op::Fused {
            base: Box::new(base),
            base_inputs,
            steps,
        });
    }
    use BinaryOp as B;
    use UnaryOp as U;
    let un = |u: UnaryOp| Ok(Op::Unary(u));
    let bin = |b: BinaryOp| Ok(Op::Binary(b));
    let red = |kind: ReduceKind, a: &mut Attrs| -> Result<Op> {
        Ok(Op::Reduce {
            kind,
            axes: a.usizes("axes")?,
            keepdims: a.bool("keepdims")?,
        })
    };
    match name {
        "identity" => un(U::Identity),
        "relu" => un(U::Relu),
        "leaky_relu" => un(U::LeakyRelu {
            alpha: a.f32("alpha")?,
        }),
        "clip" => un(U::Clip {
            min: a.f32("min")?,
            max: a.f32("max")?,
        }),
        "sigmoid" => un(U::Sigmoid),
        "hard_sigmoid" => un(U::HardSigmoid {
            alpha: a.f32("alpha")?,
            beta: a.f32("beta")?,
        }),
        "hard_swish" => un(U::HardSwish),
        "tanh" => un(U::Tanh),
        "erf" => un(U::Erf),
        "exp" => un(U::Exp),
        "log" => un(U::Log),
        "sqrt" => un(U::Sqrt),
        "neg" => un(U::Neg),
        "abs" => un(U::Abs),
        "not" => un(U::Not),
        "is_nan" => un(U::IsNaN),
        "add" => bin(B::Add),
        "sub" => bin(B::Sub),
        "mul" => bin(B::Mul),
        "div" => bin(B::Div),
        "pow" => bin(B::Pow),
        "max" => bin(B::Max),
        "min" => bin(B::Min),
        "equal" => bin(B::Equal),
        "greater" => bin(B::Greater),
        "less" => bin(B::Less),
        "greater_or_equal" => bin(B::GreaterOrEqual),
        "less_or_equal" => bin(B::LessOrEqual),
        "and" => bin(B::And),
        "or" => bin(B::Or),
        "where" => Ok(Op::Where),
        "cast" => {
            let w = a.word("to")?;
            match DType::from_name(&w) {
                Some(to) => Ok(Op::Cast { to }),
                None => bail!("cast: unknown dtype '{w}'"),
            }
        }
        "matmul" => Ok(Op::MatMul),
        "gemm" => Ok(Op::Gemm {
            alpha: a.f32("alpha")?,
            beta: a.f32("beta")?,
            trans_a: a.bool("trans_a")?,
            trans_b: a.bool("trans_b")?,
        }),
        "conv" => Ok(Op::Conv {
            window: a.window(false)?,
            group: a.usize("group")?,
        }),
        "batch_norm" => Ok(Op::BatchNorm {
            epsilon: a.f32("epsilon")?,
        }),
        "max_pool" => Ok(Op::MaxPool {
            window: a.window(true)?,
        }),
        "avg_pool" => Ok(Op::AveragePool {
            window: a.window(true)?,
            count_include_pad: a.bool("count_include_pad")?,
        }),
        "reduce_sum" => red(ReduceKind::Sum, a),
        "reduce_mean" => red(ReduceKind::Mean, a),
        "reduce_max" => red(ReduceKind::Max, a),
        "reduce_l2" => red(ReduceKind::L2, a),
        "softmax" => Ok(Op::Softmax {
            axis: a.usize("axis")?,
        }),
        "layer_norm" => Ok(Op::LayerNorm {
            axis: a.usize("axis")?,
            epsilon: a.f32("epsilon")?,
        }),
        "reshape" => Ok(Op::Reshape {
            shape: a.usizes("shape")?,
        }),
        "transpose" => Ok(Op::Transpose {
            perm: a.usizes("perm")?,
        }),
        "concat" => Ok(Op::Concat {
            axis: a.usize("axis")?,
        }),
        "split" => Ok(Op::Split {
            axis: a.usize("axis")?,
            sizes: a.usizes("sizes")?,
        }),
        "slice" => {
            let starts = a.i64s("starts")?;
            let steps = a.i64s("steps")?;
            let lens = a.usizes("lens")?;
            if starts.len() != steps.len() || starts.len() != lens.len() {
                bail!("slice: starts, steps and lens must have the same length");
            }
            Ok(Op::Slice {
                dims: (0..starts.len())
                    .map(|i| SliceDim {
                        start: starts[i],
                        step: steps[i],
                        len: lens[i],
                    })
                    .collect(),
            })
        }
        "pad" => {
            let pads = a.i64s("pads")?;
            let m = a.word("mode")?;
            let mode = match m.as_str() {
                "constant" => PadMode::Constant,
                "reflect" => PadMode::Reflect,
                "edge" => PadMode::Edge,
                _ => bail!("pad: unknown mode '{m}' (constant, reflect or edge)"),
            };
            Ok(Op::Pad {
                pads,
                mode,
                value: a.f32("value")?,
            })
        }
        "gather" => Ok(Op::Gather {
            axis: a.usize("axis")?,
        }),
        "expand" => Ok(Op::Expand {
            shape: a.usizes("shape")?,
        }),
        "input" => bail!("inputs are declared in the graph(...) header"),
        _ => bail!("unknown op '{name}'"),
    }
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
        let mut attrs = Attrs {
            op: op_name.clone(),
            map: HashMap::new(),
        };
        if c.eat('{') && !c.eat('}') {
            loop {
                let k = c.word()?;
                c.expect('=')?;
                c.ws();
                let v = if c.peek() == Some('[') {
                    AttrVal::List(c.word_list()?)
                } else {
                    AttrVal::Word(c.word()?)
                };
                if attrs.map.insert(k.clone(), v).is_some() {
                    bail!("attribute '{k}' given twice");
                }
                if c.eat('}') {
                    break;
                }
                c.expect(',')?;
            }
        }
        let op = build_op(&op_name, &mut attrs)?;
        attrs.finish()?;
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
