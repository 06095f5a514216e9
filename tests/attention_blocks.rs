//! Attention split into blocks of queries (`optc::attention_blocks`): the split graph computes
//! the same bits as the whole one, in the interpreter and in the JIT; what must not split
//! (a mask with a row per query, a score tensor used twice, small scores) stays whole.

use optc_ir::{BinaryOp, FusedStep, Graph, Op, Tensor, TensorType, UnaryOp};

/// `softmax(q @ kt [+ mask]) @ v` on `[2, 3, rows, 8]` queries and 90 keys; the scores'
/// MatMul fused with the mask add when a mask shape is given, the softmax with `nan_to`.
fn attention(rows: usize, mask: Option<&[usize]>, scores_out: bool) -> Graph {
    attention_on([2, 3], rows, mask, scores_out)
}

/// [`attention`] with batch dims `[b0, b1]`.
fn attention_on(batch: [usize; 2], rows: usize, mask: Option<&[usize]>, scores_out: bool) -> Graph {
    let [b0, b1] = batch;
    let mut g = Graph::new();
    let q = g.add_input("q", TensorType::f32(&[b0, b1, rows, 8]));
    let kt = g.add_input("kt", TensorType::f32(&[b0, b1, 8, 90]));
    let v = g.add_input("v", TensorType::f32(&[b0, b1, 90, 16]));
    let scores = match mask {
        Some(shape) => {
            let m = g.add_input("mask", TensorType::f32(shape));
            let op = Op::Fused {
                base: Box::new(Op::MatMul),
                base_inputs: 2,
                steps: vec![FusedStep::Binary {
                    op: BinaryOp::Add,
                    input: 2,
                    swap: false,
                }],
            };
            g.add("scores", op, &[q, kt, m]).unwrap()
        }
        None => g.add("scores", Op::MatMul, &[q, kt]).unwrap(),
    };
    let softmax = Op::Fused {
        base: Box::new(Op::Softmax { axis: 3 }),
        base_inputs: 1,
        steps: vec![FusedStep::Unary(UnaryOp::NanTo { value: 0.0 })],
    };
    let p = g.add("probabilities", softmax, &[scores]).unwrap();
    let y = g.add("context", Op::MatMul, &[p, v]).unwrap();
    g.add_output("y", y);
    if scores_out {
        g.add_output("scores", scores);
    }
    g
}

fn run_both(whole: &Graph, split: &Graph, seed: u64) {
    let inputs = optc::random_inputs(&whole.input_types(), seed);
    let a = optc_ir::interp::run(whole, &inputs).unwrap();
    let b = optc_ir::interp::run(split, &inputs).unwrap();
    assert_eq!(a, b, "the interpreter's results differ");
    let jit = |g: &Graph| -> Vec<Tensor> {
        let opts = optc::Options {
            opt_level: 0,
            ..Default::default()
        };
        optc::compile_graph(g.clone(), &opts)
            .unwrap()
            .run(&inputs)
            .unwrap()
    };
    assert_eq!(jit(whole), jit(split), "the JIT's results differ");
}

fn concats(g: &Graph) -> usize {
    g.g.node_indices()
        .filter(|&n| matches!(g.node(n).op, Op::Concat { .. }))
        .count()
}

#[test]
fn split_attention_computes_the_same_bits() {
    // 100 query rows: blocks of 16 or 32 with a shorter last one; no mask, a mask per key.
    for (rows, mask, block_bytes) in [
        (100, None, 3 * 2 * 90 * 4 * 16),
        (100, Some(&[1, 1, 1, 90][..]), 3 * 2 * 90 * 4 * 32),
        (37, Some(&[2, 1, 1, 90][..]), 1),
    ] {
        let whole = attention(rows, mask, false);
        let mut split = whole.clone();
        let n = optc::attention_blocks::split_with(&mut split, 1 << 10, block_bytes).unwrap();
        assert_eq!(n, 1, "{rows} rows, mask {mask:?}");
        assert_eq!(concats(&split), 1);
        let blocks = split
            .g
            .node_indices()
            .filter(|&n| matches!(split.node(n).op, Op::Slice { .. }))
            .count();
        assert!(blocks >= 3, "{blocks} blocks");
        run_both(&whole, &split, rows as u64);
    }
}

fn slices(g: &Graph) -> usize {
    g.g.node_indices()
        .filter(|&n| matches!(g.node(n).op, Op::Slice { .. }))
        .count()
}

/// One head axis (`[1, 4, ..]`) whose heads' scores each exceed a block: the blocks are cut
/// per head (each head's queries, keys and values sliced, its blocks joined, the heads
/// joined); a mask per head keeps the blocks across heads, as do heads that fit a block.
#[test]
fn split_attention_per_head_computes_the_same_bits() {
    // One query row's scores of one head: 90 keys.
    let row = 90 * 4;
    // (rows, mask, block bytes, blocks per head when cut per head, or None: across heads)
    type Case<'a> = (usize, Option<&'a [usize]>, usize, Option<usize>);
    let cases: [Case; 5] = [
        // 100 rows in blocks of 32: 32, 32, 32, 4.
        (100, None, row * 32, Some(4)),
        // A mask per key (broadcast along the heads).
        (100, Some(&[1, 1, 1, 90]), row * 40, Some(4)),
        // A mask per head and key: its rows differ along the heads, blocks across heads.
        (100, Some(&[1, 4, 1, 90]), row * 32, None),
        // A head's scores fit a block: blocks across heads (of 16 rows).
        (100, None, row * 100, None),
        // Fewer rows than the smallest block: one block per head.
        (10, None, 1, Some(1)),
    ];
    for (rows, mask, block_bytes, per_head) in cases {
        let what = format!("{rows} rows, mask {mask:?}, blocks of {block_bytes} bytes");
        let whole = attention_on([1, 4], rows, mask, false);
        let mut split = whole.clone();
        let n = optc::attention_blocks::split_with(&mut split, 1 << 10, block_bytes).unwrap();
        assert_eq!(n, 1, "{what}");
        match per_head {
            Some(blocks) => {
                // Per head: its queries, keys and values, and a slice per block; a concat
                // of its blocks (when more than one) and one of the heads.
                assert_eq!(slices(&split), 4 * (3 + blocks), "{what}");
                let joins = if blocks > 1 { 4 + 1 } else { 1 };
                assert_eq!(concats(&split), joins, "{what}");
            }
            None => {
                assert_eq!(concats(&split), 1, "{what}");
                assert!(slices(&split) >= 2, "{what}");
            }
        }
        run_both(&whole, &split, rows as u64 + 7);
    }
}

/// The blocks' node names never clash with the model's own (`scores/block0` taken here).
#[test]
fn split_attention_names_are_fresh() {
    let whole = attention(64, None, false);
    let mut g = whole.clone();
    let q = g.inputs[0].node;
    let r = g
        .add(
            "scores/block0",
            Op::Unary(UnaryOp::Relu),
            &[optc_ir::Value::new(q, 0)],
        )
        .unwrap();
    g.add_output("r", r);
    let n = optc::attention_blocks::split_with(&mut g, 1 << 10, 1).unwrap();
    assert_eq!(n, 1);
    g.verify().unwrap();
}

#[test]
fn attention_that_must_stay_whole() {
    let cases: [(Option<&[usize]>, bool, usize); 3] = [
        // A mask with a row per query: a block would need its rows (not split for now).
        (Some(&[1, 1, 100, 90]), false, 1 << 10),
        // The scores are an output too: they are needed whole.
        (None, true, 1 << 10),
        // Small scores.
        (None, false, 1 << 30),
    ];
    for (mask, scores_out, above) in cases {
        let mut g = attention(100, mask, scores_out);
        let n = optc::attention_blocks::split_with(&mut g, above, 4096).unwrap();
        assert_eq!(
            n, 0,
            "mask {mask:?}, scores out {scores_out}, above {above}"
        );
        assert_eq!(concats(&g), 0);
    }
}

/// A block's scores are twice L2 per thread of the run; the fixed size when either is unknown.
#[test]
fn blocks_of_twice_l2_per_thread() {
    use optc::attention_blocks::{block_bytes, BLOCK_BYTES};
    assert_eq!(block_bytes(1 << 20, 1), 2 << 20);
    assert_eq!(block_bytes(1 << 20, 2), 4 << 20);
    assert_eq!(block_bytes(2 << 20, 1), 4 << 20);
    assert_eq!(block_bytes(0, 2), BLOCK_BYTES);
    assert_eq!(block_bytes(1 << 20, 0), BLOCK_BYTES);
}
