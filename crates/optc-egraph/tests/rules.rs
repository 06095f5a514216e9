//! Rules as data: the syntax, matching and binding attributes, building, and the soundness
//! check refusing wrong rules.

use optc_egraph::rule_file::parse_rules;
use optc_egraph::rules::load_rules;
use optc_egraph::soundness::{check, Verdict};
use optc_egraph::{convert, Build, DataRule};
use optc_ir::{BinaryOp, Graph, Op, Tensor, TensorType, UnaryOp, Value};

fn rule(text: &str) -> DataRule {
    parse_rules(text, "test.rules")
        .unwrap_or_else(|e| panic!("{e}"))
        .pop()
        .unwrap()
}

fn parse_err(text: &str) -> String {
    match parse_rules(text, "my.rules") {
        Ok(r) => panic!("parsed: {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn syntax_errors_name_the_line_and_the_problem() {
    let cases = [
        (
            "a: (relu ?x) => (abs ?x)\nb: (rleu ?x) => ?x",
            "my.rules:2",
            "unknown op 'rleu'",
        ),
        (
            "a: (transpose[prem=?p] ?x) => ?x",
            "my.rules:1",
            "no attribute 'prem'",
        ),
        ("a: (relu ?x) => (relu ?y)", "my.rules:1", "?y is not bound"),
        (
            "a: (relu ?x) => (transpose ?x)",
            "my.rules:1",
            "needs attribute 'perm'",
        ),
        (
            "a: (?f:unry ?x) => ?x",
            "my.rules:1",
            "unknown op family 'unry'",
        ),
        (
            "a: (transpose[perm=(inverse ?p)] ?x) => ?x",
            "my.rules:1",
            "only for the right side",
        ),
        ("a: (relu ?x) => ?x if", "my.rules:1", "without a condition"),
        (
            "a: (relu ?x) <=> (abs ?x) if (all ?x 1)",
            "my.rules:1",
            "two-way",
        ),
        ("a: ?x => (relu ?x)", "my.rules:1", "must be an op"),
        ("a: (transpose[perm=?x] ?x) => ?x", "my.rules:1", "used as"),
        (
            "a: (relu ?x) => ?x if (inverse ?x)",
            "my.rules:1",
            "not a condition",
        ),
        ("a: (add ?x) => ?x", "my.rules:1", "takes 2..=2 operands"),
        (
            "a: (relu ?x) => (frob ?x)",
            "my.rules:1",
            "unknown op 'frob'",
        ),
        (
            "a (relu ?x) ?x",
            "my.rules:1",
            "expected `name: lhs => rhs`",
        ),
        (
            "a: (relu ?x) => ?x\na: (abs ?x) => ?x",
            "my.rules",
            "defined twice",
        ),
        (
            "a: (reshape[shape=[2,x]] ?x) => ?x",
            "my.rules:1",
            "'x' is not",
        ),
    ];
    for (text, at, what) in cases {
        let e = parse_err(text);
        assert!(e.starts_with(at) && e.contains(what), "{text}\n -> {e}");
    }
}

/// `x` of type `ty` through `ops` in order; returns the graph and each op's value.
fn chain(ty: TensorType, ops: &[Op]) -> (Graph, Vec<Value>) {
    let mut g = Graph::new();
    let mut v = g.add_input("x", ty);
    let mut vals = vec![];
    for (i, op) in ops.iter().enumerate() {
        v = g.add(&format!("n{i}"), op.clone(), &[v]).unwrap();
        vals.push(v);
    }
    g.add_output("y", v);
    (g, vals)
}

/// What `r` rewrites the class of `v` to.
fn results(r: &DataRule, g: &Graph, v: Value) -> Vec<Build> {
    let conv = convert::to_egraph(g, 0).unwrap();
    let class = conv.classes[&v.node];
    r.results(&conv.egraph, class)
}

fn transpose(perm: &[usize]) -> Op {
    Op::Transpose {
        perm: perm.to_vec(),
    }
}

#[test]
fn attributes_match_bind_and_build() {
    let tt = rule(
        "tt: (transpose[perm=?p] (transpose[perm=?q] ?x)) => (transpose[perm=(permute ?q ?p)] ?x)",
    );
    assert!(!tt.is_plain());
    let (g, v) = chain(
        TensorType::f32(&[2, 3, 4]),
        &[transpose(&[1, 2, 0]), transpose(&[2, 0, 1])],
    );
    let r = results(&tt, &g, v[1]);
    assert_eq!(r.len(), 1);
    match &r[0] {
        // [1,2,0] then [2,0,1]: out[i] = q[p[i]] = [0,1,2]
        Build::Node(op, ch) => {
            assert_eq!(*op, transpose(&[0, 1, 2]));
            assert!(matches!(ch[..], [Build::Class(_)]));
        }
        b => panic!("{b:?}"),
    }
    // a literal attribute matches only its value
    let lit = rule("swap: (transpose[perm=[1,0]] ?x) => (relu ?x)");
    let (g, v) = chain(TensorType::f32(&[3, 3]), &[transpose(&[1, 0])]);
    assert_eq!(results(&lit, &g, v[0]).len(), 1);
    let (g, v) = chain(TensorType::f32(&[3, 3]), &[transpose(&[0, 1])]);
    assert!(results(&lit, &g, v[0]).is_empty());
    // a variable used twice must match the same value
    let same = rule("s: (reshape[shape=?s] (reshape[shape=?s] ?x)) => (reshape[shape=?s] ?x)");
    let (g, v) = chain(
        TensorType::f32(&[6]),
        &[
            Op::Reshape { shape: vec![2, 3] },
            Op::Reshape { shape: vec![2, 3] },
        ],
    );
    assert_eq!(results(&same, &g, v[1]).len(), 1);
    let (g, v) = chain(
        TensorType::f32(&[6]),
        &[
            Op::Reshape { shape: vec![3, 2] },
            Op::Reshape { shape: vec![2, 3] },
        ],
    );
    assert!(results(&same, &g, v[1]).is_empty());
}

#[test]
fn op_variables_conditions_and_fold() {
    // an op variable rebuilds the op with its attributes
    let r = rule("u: (?f:unary (transpose[perm=?p] ?x)) => (transpose[perm=?p] (?f ?x))");
    let clip = Op::Unary(UnaryOp::Clip { min: 0.0, max: 6.0 });
    let (g, v) = chain(
        TensorType::f32(&[2, 3]),
        &[transpose(&[1, 0]), clip.clone()],
    );
    match &results(&r, &g, v[1])[..] {
        [Build::Node(t, ch)] => {
            assert_eq!(*t, transpose(&[1, 0]));
            assert!(matches!(&ch[..], [Build::Node(op, _)] if *op == clip));
        }
        b => panic!("{b:?}"),
    }
    // ... only of its family
    let (g, v) = chain(
        TensorType::f32(&[2, 3]),
        &[transpose(&[1, 0]), Op::Reshape { shape: vec![6] }],
    );
    assert!(results(&r, &g, v[1]).is_empty());
    // a condition on a constant's value
    let one = rule("m: (mul ?x ?c) => ?x if (all ?c 1)");
    for (k, fires) in [(1.0, true), (2.0, false)] {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::f32(&[2, 3]));
        let c = g.add_const("c", Tensor::scalar_f32(k));
        let y = g.add("y", Op::Binary(BinaryOp::Mul), &[x, c]).unwrap();
        g.add_output("y", y);
        assert_eq!(!results(&one, &g, y).is_empty(), fires, "{k}");
    }
    // fold evaluates a term of constants now
    let f = rule("f: (add ?x ?c) => (sub ?x (fold (neg ?c)))");
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[2]));
    let c = g.add_const("c", Tensor::from_f32(vec![2], vec![1.5, -2.0]).unwrap());
    let y = g.add("y", Op::Binary(BinaryOp::Add), &[x, c]).unwrap();
    g.add_output("y", y);
    match &results(&f, &g, y)[..] {
        [Build::Node(_, ch)] => match &ch[1] {
            Build::Const(t) => assert_eq!(t.as_f32().unwrap(), &[-1.5, 2.0]),
            b => panic!("{b:?}"),
        },
        b => panic!("{b:?}"),
    }
    // ... and does not fire when a leaf is not constant
    let (g, v) = chain(TensorType::f32(&[2]), &[Op::Unary(UnaryOp::Relu)]);
    let _ = v;
    let mut g2 = g.clone();
    let x = g2.inputs[0].node;
    let y = g2
        .add(
            "a",
            Op::Binary(BinaryOp::Add),
            &[Value::new(x, 0), Value::new(x, 0)],
        )
        .unwrap();
    g2.add_output("a", y);
    assert!(results(&f, &g2, y).is_empty());
}

#[test]
fn the_type_guard_applies_to_rules_as_data() {
    // reshape to the same shape is a no-op; to another shape the guard refuses `?x`
    let r = rule("r: (reshape ?x) => ?x");
    let (g, v) = chain(
        TensorType::f32(&[2, 3]),
        &[Op::Reshape { shape: vec![2, 3] }],
    );
    assert_eq!(results(&r, &g, v[0]).len(), 1);
    let (g, v) = chain(
        TensorType::f32(&[2, 3]),
        &[Op::Reshape { shape: vec![3, 2] }],
    );
    assert!(results(&r, &g, v[0]).is_empty());
}

#[test]
fn plain_rules_run_as_egg_patterns() {
    let rules = load_rules(
        "a: (relu (relu ?x)) => (relu ?x)\nb: (transpose[perm=?p] ?x) => ?x if (is-identity ?p)",
        "t",
    )
    .unwrap();
    assert!(rules[0].rewrite.searcher.get_pattern_ast().is_some());
    assert!(rules[1].rewrite.searcher.get_pattern_ast().is_none());
    assert!(rules.iter().all(|r| r.data.is_some()));
}

fn verdict(text: &str) -> Verdict {
    check(&rule(text))
}

#[test]
fn the_check_refuses_wrong_rules_with_a_counterexample() {
    match verdict("wrong: (relu ?x) => (abs ?x)") {
        Verdict::Unsound(c) => {
            let s = c.to_string();
            assert!(s.contains("relu(") && s.contains("abs("), "{s}");
            assert!(s.contains("lhs = ") && s.contains("rhs = "), "{s}");
            // the counterexample is real: the interpreter gives the two outputs it shows
            let outs = optc_ir::interp::run(&c.graph, &c.inputs).unwrap();
            assert_eq!(outs.len(), 2);
            assert!(!optc_egraph::soundness::exactly_equal(&outs[0], &outs[1]));
        }
        v => panic!("{v:?}"),
    }
    // a permutation composed the wrong way round
    let wrong =
        "tt: (transpose[perm=?p] (transpose[perm=?q] ?x)) => (transpose[perm=(permute ?p ?q)] ?x)";
    assert!(matches!(verdict(wrong), Verdict::Unsound(_)));
    let right =
        "tt: (transpose[perm=?p] (transpose[perm=?q] ?x)) => (transpose[perm=(permute ?q ?p)] ?x)";
    assert!(matches!(verdict(right), Verdict::Sound { instances } if instances > 0));
    // a neutral element that is not one
    assert!(matches!(
        verdict("m: (mul ?x ?c) => ?x if (all ?c 2)"),
        Verdict::Unsound(_)
    ));
    // exact: reassociation changes the rounding
    assert!(matches!(
        verdict("assoc: (add (add ?x ?y) ?z) => (add ?x (add ?y ?z))"),
        Verdict::Unsound(_)
    ));
    // a rule no instance makes fire is not trusted either
    assert!(matches!(
        verdict("never: (conv[group=7] ?x ?w) => ?x"),
        Verdict::NotChecked(_)
    ));
}
