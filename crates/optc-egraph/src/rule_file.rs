//! The `.rules` file syntax, parsed into [`DataRule`]s.
//!
//! ```text
//! # a comment
//! name: LHS => RHS [if COND ...]      one direction
//! name: LHS <=> RHS                   both (the reverse is named name-rev)
//!
//! term  := ?x                                   an e-class
//!        | (HEAD[key=attr, ...] term ...)       an op node; [..] is optional
//!        | (fold term)                          right side: evaluated now into a constant
//! HEAD  := op name (relu, transpose, conv, ...) | ?f | ?f:family | projN
//! attr  := ?p | literal | (function attr ...)   functions on the right side only
//! COND  := (function ...)                       e.g. (is-identity ?p), (all ?c 1)
//! ```
//!
//! Op names and attribute keys are the text format's (`optc_ir::OPS`). On the left, an
//! attribute the rule does not name matches any value, `key=?p` binds it and `key=literal`
//! requires it; a variable used twice must match the same value. On the right every
//! attribute of a named op is given. `?f:unary` (any family of `optc_ir::Family`: unary,
//! binary, movement, ...) matches any op of that family with its attributes, and `(?f ...)`
//! on the right rebuilds it over new operands. Functions: see [`Func`].

use crate::pattern::{DataRule, Expr, Func, Head, Sort, Term, VarInfo};
use optc_ir::{AttrText, AttrType, AttrValue, Family, OpKind};

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Open,
    Close,
    LBracket,
    RBracket,
    Comma,
    Eq,
    Word(String),
}

fn tokenize(s: &str) -> Vec<Tok> {
    let mut out = vec![];
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        let single = match c {
            '(' => Some(Tok::Open),
            ')' => Some(Tok::Close),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            ',' => Some(Tok::Comma),
            '=' => Some(Tok::Eq),
            _ => None,
        };
        if let Some(t) = single {
            out.push(t);
            chars.next();
        } else if c.is_whitespace() {
            chars.next();
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || "()[],=".contains(c) {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(Tok::Word(w));
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    vars: &'a mut Vec<VarInfo>,
    side: Side,
}

fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "the end of the side".into(),
        Some(Tok::Open) => "'('".into(),
        Some(Tok::Close) => "')'".into(),
        Some(Tok::LBracket) => "'['".into(),
        Some(Tok::RBracket) => "']'".into(),
        Some(Tok::Comma) => "','".into(),
        Some(Tok::Eq) => "'='".into(),
        Some(Tok::Word(w)) => format!("'{w}'"),
    }
}

impl<'a> Parser<'a> {
    fn new(toks: &'a [Tok], vars: &'a mut Vec<VarInfo>, side: Side) -> Parser<'a> {
        Parser {
            toks,
            pos: 0,
            vars,
            side,
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn expect(&mut self, t: Tok) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            x => Err(format!(
                "expected {} but found {}",
                describe(Some(&t)),
                describe(x.as_ref())
            )),
        }
    }

    /// The variable `name` used as `sort`: declared on the left, looked up on the right.
    fn var(&mut self, name: &str, sort: Sort) -> Result<usize, String> {
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(format!("bad variable name '?{name}'"));
        }
        match self.vars.iter().position(|v| v.name == name) {
            Some(i) if self.vars[i].sort == sort => Ok(i),
            Some(i) => Err(format!(
                "?{name} is used as {} and as {}",
                sort_word(self.vars[i].sort),
                sort_word(sort)
            )),
            None if self.side == Side::Left => {
                self.vars.push(VarInfo {
                    name: name.to_string(),
                    sort,
                });
                Ok(self.vars.len() - 1)
            }
            None => Err(format!("?{name} is not bound by the left side")),
        }
    }

    fn term(&mut self) -> Result<Term, String> {
        match self.next() {
            Some(Tok::Word(w)) if w.starts_with('?') => {
                Ok(Term::Var(self.var(&w[1..], Sort::Class)?))
            }
            Some(Tok::Open) => self.node(),
            t => Err(format!(
                "expected ?var or '(' but found {}",
                describe(t.as_ref())
            )),
        }
    }

    fn node(&mut self) -> Result<Term, String> {
        let head = match self.next() {
            Some(Tok::Word(w)) => w,
            t => {
                return Err(format!(
                    "expected an op name after '(' but found {}",
                    describe(t.as_ref())
                ))
            }
        };
        if head == "fold" {
            if self.side == Side::Left {
                return Err("fold is only for the right side".into());
            }
            let inner = self.term()?;
            self.expect(Tok::Close)?;
            return Ok(Term::Fold(Box::new(inner)));
        }
        let head = if let Some(v) = head.strip_prefix('?') {
            let (name, family) = match v.split_once(':') {
                Some((n, f)) => match Family::from_name(f) {
                    Some(f) => (n, Some(f)),
                    None => {
                        return Err(format!(
                            "unknown op family '{f}' (families: {})",
                            Family::names()
                        ));
                    }
                },
                None => (v, None),
            };
            Head::OpVar(self.var(name, Sort::Op)?, family)
        } else if let Some(i) = head.strip_prefix("proj").and_then(|s| s.parse().ok()) {
            Head::Proj(i)
        } else {
            match OpKind::from_name(&head) {
                Some(k) if !matches!(k.info().family, Family::Source | Family::Fused) => {
                    Head::Kind(k)
                }
                Some(_) => return Err(format!("{head} cannot appear in a rule")),
                None => return Err(format!("unknown op '{head}'")),
            }
        };
        let attrs = if self.peek() == Some(&Tok::LBracket) {
            self.next();
            self.attrs(&head)?
        } else {
            vec![]
        };
        let mut children = vec![];
        while self.peek() != Some(&Tok::Close) {
            if self.peek().is_none() {
                return Err("missing ')'".into());
            }
            children.push(self.term()?);
        }
        self.next();
        match &head {
            Head::Kind(k) => {
                let (lo, hi) = k.info().arity;
                if children.len() < lo || children.len() > hi {
                    return Err(format!(
                        "{} takes {lo}..={hi} operands, got {}",
                        k.name(),
                        children.len()
                    ));
                }
                if self.side == Side::Right {
                    for s in k.attr_specs() {
                        if !attrs.iter().any(|(key, _)| *key == s.key) {
                            return Err(format!(
                                "{} on the right side needs attribute '{}'",
                                k.name(),
                                s.key
                            ));
                        }
                    }
                }
            }
            Head::Proj(_) if children.len() != 1 => {
                return Err("projN takes one operand".into());
            }
            _ => {}
        }
        Ok(Term::Node {
            head,
            attrs,
            children,
        })
    }

    fn attrs(&mut self, head: &Head) -> Result<Vec<(&'static str, Expr)>, String> {
        let Head::Kind(k) = head else {
            return Err("only a named op can have [attributes]".into());
        };
        let specs = k.attr_specs();
        let mut out: Vec<(&'static str, Expr)> = vec![];
        loop {
            let key = match self.next() {
                Some(Tok::Word(w)) => w,
                t => {
                    return Err(format!(
                        "expected an attribute name but found {}",
                        describe(t.as_ref())
                    ))
                }
            };
            let Some(spec) = specs.iter().find(|s| s.key == key) else {
                let keys: Vec<&str> = specs.iter().map(|s| s.key).collect();
                return Err(format!(
                    "{} has no attribute '{key}' (it has: {})",
                    k.name(),
                    if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    }
                ));
            };
            if out.iter().any(|(k, _)| *k == spec.key) {
                return Err(format!("attribute '{key}' given twice"));
            }
            self.expect(Tok::Eq)?;
            let e = self.attr_expr(spec.key, spec.ty)?;
            out.push((spec.key, e));
            match self.next() {
                Some(Tok::Comma) => continue,
                Some(Tok::RBracket) => return Ok(out),
                t => {
                    return Err(format!(
                        "expected ',' or ']' but found {}",
                        describe(t.as_ref())
                    ))
                }
            }
        }
    }

    /// An attribute's value: on the left a variable or a literal, on the right an
    /// expression.
    fn attr_expr(&mut self, key: &str, ty: AttrType) -> Result<Expr, String> {
        match self.peek() {
            Some(Tok::Word(w)) if w.starts_with('?') => {
                let name = w[1..].to_string();
                self.next();
                Ok(Expr::Var(self.var(&name, Sort::Attr)?))
            }
            Some(Tok::Open) if self.side == Side::Right => self.call(),
            Some(Tok::Open) => Err("functions are only for the right side and conditions".into()),
            _ => {
                let text = self.literal_text()?;
                AttrValue::parse(key, ty, &text)
                    .map(Expr::Lit)
                    .map_err(|e| e.msg)
            }
        }
    }

    fn literal_text(&mut self) -> Result<AttrText, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(AttrText::Word(w)),
            Some(Tok::LBracket) => {
                let mut l = vec![];
                if self.peek() == Some(&Tok::RBracket) {
                    self.next();
                    return Ok(AttrText::List(l));
                }
                loop {
                    match self.next() {
                        Some(Tok::Word(w)) => l.push(w),
                        t => {
                            return Err(format!(
                                "expected a list element but found {}",
                                describe(t.as_ref())
                            ))
                        }
                    }
                    match self.next() {
                        Some(Tok::Comma) => {}
                        Some(Tok::RBracket) => return Ok(AttrText::List(l)),
                        t => {
                            return Err(format!(
                                "expected ',' or ']' but found {}",
                                describe(t.as_ref())
                            ))
                        }
                    }
                }
            }
            t => Err(format!(
                "expected a value but found {}",
                describe(t.as_ref())
            )),
        }
    }

    /// A function argument or condition: a bound variable, an untyped literal or a call.
    fn expr(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(Tok::Word(w)) if w.starts_with('?') => {
                let name = w[1..].to_string();
                self.next();
                match self.vars.iter().position(|v| v.name == name) {
                    Some(i) if self.vars[i].sort != Sort::Op => Ok(Expr::Var(i)),
                    Some(_) => Err(format!("?{name} is an op, not a value")),
                    None => Err(format!("?{name} is not bound by the left side")),
                }
            }
            Some(Tok::Open) => self.call(),
            _ => Ok(Expr::Lit(untyped(self.literal_text()?)?)),
        }
    }

    fn call(&mut self) -> Result<Expr, String> {
        self.expect(Tok::Open)?;
        let name = match self.next() {
            Some(Tok::Word(w)) => w,
            t => {
                return Err(format!(
                    "expected a function name but found {}",
                    describe(t.as_ref())
                ))
            }
        };
        let Some((f, n)) = Func::from_name(&name) else {
            let names: Vec<&str> = Func::ALL.iter().map(|f| f.1).collect();
            return Err(format!(
                "unknown function '{name}' (functions: {})",
                names.join(", ")
            ));
        };
        let mut args = vec![];
        while self.peek() != Some(&Tok::Close) {
            if self.peek().is_none() {
                return Err("missing ')'".into());
            }
            args.push(self.expr()?);
        }
        self.next();
        if args.len() != n {
            return Err(format!("{name} takes {n} arguments, got {}", args.len()));
        }
        Ok(Expr::Call(f, args))
    }
}

fn sort_word(s: Sort) -> &'static str {
    match s {
        Sort::Class => "a value",
        Sort::Attr => "an attribute",
        Sort::Op => "an op",
    }
}

/// A literal whose type no attribute gives: a bool, an integer, a float, a list of
/// integers, or a word.
fn untyped(t: AttrText) -> Result<AttrValue, String> {
    match t {
        AttrText::Word(w) => Ok(match w.as_str() {
            "true" => AttrValue::Bool(true),
            "false" => AttrValue::Bool(false),
            _ => match (w.parse::<i64>(), w.parse::<f32>()) {
                (Ok(i), _) => AttrValue::Int(i),
                (_, Ok(x)) => AttrValue::Float(x),
                _ => AttrValue::Word(w),
            },
        }),
        AttrText::List(l) => l
            .iter()
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| format!("'{s}' in a list is not an integer"))
            })
            .collect::<Result<_, _>>()
            .map(AttrValue::Ints),
    }
}

/// Parse one rule (`lhs => rhs [if ...]`) named `name`.
fn parse_rule(name: &str, lhs: &str, rhs: &str) -> Result<DataRule, String> {
    let lt = tokenize(lhs);
    let rt_all = tokenize(rhs);
    // `if` at depth 0 starts the conditions
    let mut depth = 0i32;
    let mut split = rt_all.len();
    for (i, t) in rt_all.iter().enumerate() {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => depth -= 1,
            Tok::Word(w) if w == "if" && depth == 0 => {
                split = i;
                break;
            }
            _ => {}
        }
    }
    let (rt, ct) = rt_all.split_at(split);
    let mut vars = vec![];
    let lhs = {
        let mut p = Parser::new(&lt, &mut vars, Side::Left);
        let t = p.term()?;
        if p.pos != lt.len() {
            return Err(format!(
                "unexpected {} after the left side",
                describe(p.peek())
            ));
        }
        if !matches!(t, Term::Node { .. }) {
            return Err("the left side must be an op, not a variable".into());
        }
        t
    };
    let mut p = Parser::new(rt, &mut vars, Side::Right);
    let rhs = p.term()?;
    if p.pos != rt.len() {
        return Err(format!(
            "unexpected {} after the right side (conditions start with `if`)",
            describe(p.peek())
        ));
    }
    let mut conditions = vec![];
    if !ct.is_empty() {
        let ct = &ct[1..];
        let mut p = Parser::new(ct, &mut vars, Side::Right);
        while p.pos < ct.len() {
            let c = p.call()?;
            match &c {
                Expr::Call(f, _) if f.is_condition() => conditions.push(c),
                Expr::Call(f, _) => {
                    return Err(format!(
                        "{} is not a condition (it gives a value)",
                        f.name()
                    ))
                }
                _ => unreachable!("call() returns calls"),
            }
        }
        if conditions.is_empty() {
            return Err("`if` without a condition".into());
        }
    }
    Ok(DataRule {
        name: name.to_string(),
        text: String::new(),
        lhs,
        rhs,
        conditions,
        vars,
    })
}

/// Parse a `.rules` file. Errors carry the origin and line number.
pub fn parse_rules(text: &str, origin: &str) -> Result<Vec<DataRule>, String> {
    let mut out: Vec<DataRule> = vec![];
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |m: &str| format!("{origin}:{}: {m}", i + 1);
        let (name, body) = line
            .split_once(':')
            .ok_or_else(|| at("expected `name: lhs => rhs`"))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(at("a rule name is one word"));
        }
        let (lhs, rhs, both) = if let Some((l, r)) = body.split_once("<=>") {
            (l.trim(), r.trim(), true)
        } else if let Some((l, r)) = body.split_once("=>") {
            (l.trim(), r.trim(), false)
        } else {
            return Err(at("expected `=>` or `<=>`"));
        };
        if both {
            let mut rev = parse_rule(&format!("{name}-rev"), rhs, lhs)
                .map_err(|e| at(&format!("{e} (in the reverse of a two-way rule)")))?;
            if !rev.conditions.is_empty() {
                return Err(at("a two-way rule cannot have conditions"));
            }
            rev.text = format!("{rhs} => {lhs}");
            out.push(rev);
        }
        let mut r = parse_rule(name, lhs, rhs).map_err(|e| at(&e))?;
        if both && !r.conditions.is_empty() {
            return Err(at("a two-way rule cannot have conditions"));
        }
        r.text = format!("{lhs} => {rhs}");
        out.push(r);
    }
    let mut seen = std::collections::HashSet::new();
    for r in &out {
        if !seen.insert(r.name.clone()) {
            return Err(format!("{origin}: rule {} is defined twice", r.name));
        }
    }
    Ok(out)
}
