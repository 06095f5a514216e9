//! Random well-typed graphs, read from bytes.
//!
//! The generator proposes ops with operands from the values made so far (most often the
//! newest one, so elementwise chains form and the fuser has work) and attributes drawn
//! around the operands' shapes; the IR's own type inference (`Graph::add_node`) is the
//! filter: a proposal it refuses is dropped. Shapes favour 1 and primes; constants are
//! drawn from a generator seeded by the bytes, so a short input still describes a graph.

use crate::source::{Source, SplitMix};
use optc_ir::{
    BinaryOp, DType, Data, Graph, Op, PadMode, ReduceKind, ScatterReduction, SliceDim, Tensor,
    TensorType, UnaryOp, Value, Window,
};

/// Extents the generator uses: 1, primes, powers of two and their neighbours.
const DIMS: [usize; 12] = [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 32];
/// Largest element count of a value the generator keeps (a fuzz input stays fast).
const MAX_ELEMENTS: usize = 1 << 14;
/// Most ops proposed per graph.
const MAX_STEPS: usize = 14;

/// Generate a graph from `data`, then check it ([`crate::differential::check`]).
pub fn target(data: &[u8]) {
    if let Some(graph) = generate(data) {
        crate::differential::check(&graph, &[0, 1, 2, 3], 7);
    }
}

/// The graph `data` describes, or `None` when no op was accepted.
pub fn generate(data: &[u8]) -> Option<Graph> {
    let mut src = Source::new(data);
    let mut gen = Generator {
        rng: SplitMix::new(src.u64()),
        graph: Graph::new(),
        values: vec![],
        consts: 0,
        inputs: 0,
        inexact: Default::default(),
    };
    gen.inputs(&mut src);
    gen.inputs = gen.values.len();
    let steps = src.range(1, MAX_STEPS);
    let mut made = 0;
    for _ in 0..steps * 3 {
        if made == steps || src.is_empty() && made > 0 {
            break;
        }
        if gen.step(&mut src) {
            made += 1;
        }
    }
    if made == 0 {
        return None;
    }
    // Every value nothing uses is an output (newest first, at most four), so no op is dead.
    let used: std::collections::HashSet<Value> = gen
        .graph
        .g
        .node_indices()
        .flat_map(|n| gen.graph.node_inputs(n))
        .collect();
    let sinks = gen.values[gen.inputs..]
        .iter()
        .rev()
        .filter(|(v, _)| !used.contains(v))
        .take(4)
        .map(|(v, _)| *v)
        .collect::<Vec<_>>();
    for (i, v) in sinks.into_iter().enumerate() {
        gen.graph.add_output(&format!("out{i}"), v);
    }
    gen.graph.verify().ok()?;
    Some(gen.graph)
}

struct Generator {
    rng: SplitMix,
    graph: Graph,
    values: Vec<(Value, TensorType)>,
    consts: usize,
    /// How many of `values` are graph inputs.
    inputs: usize,
    /// Float values optc may compute with other rounding than the interpreter (another
    /// summation order, a polynomial exp): see [`rounds`].
    inexact: std::collections::HashSet<Value>,
}

impl Generator {
    fn inputs(&mut self, src: &mut Source) {
        let rank = src.below(5);
        let base: Vec<usize> = (0..rank).map(|_| *src.pick(&DIMS)).collect();
        let count = src.range(1, 3);
        for i in 0..count {
            let dtype = match src.below(12) {
                0 => DType::I32,
                1 => DType::I64,
                2 => DType::F64,
                _ => DType::F32,
            };
            // Later inputs broadcast against the first: leading dims dropped, some set to 1.
            let shape = if i == 0 {
                base.clone()
            } else {
                self.broadcastable(src, &base)
            };
            let shape = self.capped(shape);
            let v = self
                .graph
                .add_input(&format!("x{i}"), TensorType::new(dtype, shape.clone()));
            self.values.push((v, TensorType::new(dtype, shape)));
        }
    }

    /// `shape` with its first dims shrunk to 1 until it fits `MAX_ELEMENTS`.
    fn capped(&self, mut shape: Vec<usize>) -> Vec<usize> {
        let mut i = 0;
        while shape.iter().product::<usize>() > MAX_ELEMENTS && i < shape.len() {
            shape[i] = 1;
            i += 1;
        }
        shape
    }

    fn broadcastable(&mut self, src: &mut Source, shape: &[usize]) -> Vec<usize> {
        let drop = src.below(shape.len() + 1);
        shape[drop..]
            .iter()
            .map(|&d| if src.chance(1, 4) { 1 } else { d })
            .collect()
    }

    /// An operand: the newest value half the time, else any.
    fn operand(&mut self, src: &mut Source) -> (Value, TensorType) {
        let n = self.values.len();
        if src.chance(1, 2) {
            self.values[n - 1].clone()
        } else {
            self.values[src.below(n)].clone()
        }
    }

    /// A constant; one float constant in eight holds some special values.
    fn constant(&mut self, dtype: DType, shape: Vec<usize>, ints: (i64, i64)) -> Value {
        let n: usize = shape.iter().product();
        let (lo, hi) = ints;
        let span = (hi - lo + 1).max(1) as u64;
        let int = |rng: &mut SplitMix| lo + (rng.next_u64() % span) as i64;
        let data = match dtype {
            DType::F32 => {
                // One constant in eight holds some special values (`SPECIAL`): kernels
                // must treat them as the interpreter does (a NaN conv weight over padding
                // too: 0 x NaN is NaN).
                let special = self.rng.below(8) == 0;
                Data::F32(
                    (0..n)
                        .map(|_| {
                            if special && self.rng.below(4) == 0 {
                                SPECIAL[self.rng.below(SPECIAL.len())]
                            } else {
                                ((self.rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0
                                    - 1.0
                            }
                        })
                        .collect(),
                )
            }
            DType::I64 => Data::I64((0..n).map(|_| int(&mut self.rng)).collect()),
            DType::I32 => Data::I32((0..n).map(|_| int(&mut self.rng) as i32).collect()),
            DType::Bool => Data::Bool((0..n).map(|_| self.rng.next_u64() & 1 == 1).collect()),
            DType::U8 => Data::U8((0..n).map(|_| int(&mut self.rng) as u8).collect()),
            DType::I8 => Data::I8((0..n).map(|_| int(&mut self.rng) as i8).collect()),
            DType::F64 => Data::F64(
                (0..n)
                    .map(|_| ((self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
                    .collect(),
            ),
        };
        let t = Tensor::new(shape, data).expect("length matches shape");
        self.consts += 1;
        self.graph.add_const(&format!("c{}", self.consts), t)
    }

    /// Propose one op; true when the type inference accepted it.
    fn step(&mut self, src: &mut Source) -> bool {
        let (x, xt) = self.operand(src);
        let rank = xt.rank();
        let name = format!("n{}", self.values.len());
        let (op, inputs): (Op, Vec<Value>) = match src.below(26) {
            0..=3 => (Op::Unary(self.unary(src)), vec![x]),
            4..=7 => {
                let op = *src.pick(&BINARY);
                let y = if src.chance(1, 2) {
                    self.operand(src).0
                } else {
                    let shape = self.broadcastable(src, &xt.shape);
                    self.constant(xt.dtype, shape, (-3, 3))
                };
                if src.chance(1, 4) {
                    (Op::Binary(op), vec![y, x])
                } else {
                    (Op::Binary(op), vec![x, y])
                }
            }
            8 => {
                if self.inexact.contains(&x) {
                    return false;
                }
                let c = self.constant(xt.dtype, vec![], (-1, 1));
                let cond = match self.graph.add("cond", Op::Binary(BinaryOp::Less), &[x, c]) {
                    Ok(v) => v,
                    Err(_) => return false,
                };
                let y = self.operand(src).0;
                (Op::Where, vec![cond, x, y])
            }
            9 => {
                let to = *src.pick(&[DType::F32, DType::I32, DType::I64, DType::Bool, DType::F64]);
                (Op::Cast { to }, vec![x])
            }
            10 => {
                if rank == 0 {
                    return false;
                }
                let k = xt.shape[rank - 1];
                let n = *src.pick(&DIMS);
                let mut shape = if src.chance(1, 4) && rank > 2 {
                    xt.shape[..rank - 2].to_vec()
                } else {
                    vec![]
                };
                shape.extend([k, n]);
                let w = self.constant(xt.dtype, shape, (-2, 2));
                (Op::MatMul, vec![x, w])
            }
            11 => {
                if rank != 2 {
                    return false;
                }
                let (trans_a, trans_b) = (src.chance(1, 3), src.chance(1, 2));
                let k = if trans_a { xt.shape[0] } else { xt.shape[1] };
                let m = if trans_a { xt.shape[1] } else { xt.shape[0] };
                let n = *src.pick(&DIMS);
                let b = self.constant(
                    xt.dtype,
                    if trans_b { vec![n, k] } else { vec![k, n] },
                    (-2, 2),
                );
                let mut inputs = vec![x, b];
                if src.chance(2, 3) {
                    let shape = match src.below(3) {
                        0 => vec![n],
                        1 => vec![m, n],
                        _ => vec![1],
                    };
                    inputs.push(self.constant(xt.dtype, shape, (-2, 2)));
                }
                let alpha = *src.pick(&[1.0, 0.5, -2.0]);
                let beta = *src.pick(&[1.0, 0.0, 3.0]);
                let op = Op::Gemm {
                    alpha,
                    beta,
                    trans_a,
                    trans_b,
                };
                (op, inputs)
            }
            12..=13 => match self.conv(src, &xt) {
                Some((op, mut consts)) => {
                    consts.insert(0, x);
                    (op, consts)
                }
                None => return false,
            },
            14 => {
                let axes = self.axes(src, rank);
                let kind = *src.pick(&[
                    ReduceKind::Sum,
                    ReduceKind::Mean,
                    ReduceKind::Max,
                    ReduceKind::Min,
                    ReduceKind::L2,
                    ReduceKind::Prod,
                ]);
                let keepdims = src.chance(1, 2);
                (
                    Op::Reduce {
                        kind,
                        axes,
                        keepdims,
                    },
                    vec![x],
                )
            }
            15 => {
                let axis = src.below(rank.max(1));
                if src.chance(1, 2) {
                    (Op::Softmax { axis }, vec![x])
                } else {
                    let scale =
                        self.constant(xt.dtype, xt.shape[axis.min(rank)..].to_vec(), (0, 2));
                    let mut inputs = vec![x, scale];
                    if src.chance(1, 2) {
                        let shape = xt.shape[axis.min(rank)..].to_vec();
                        inputs.push(self.constant(xt.dtype, shape, (-1, 1)));
                    }
                    let epsilon = *src.pick(&[1e-5, 1e-3]);
                    (Op::LayerNorm { axis, epsilon }, inputs)
                }
            }
            16 => {
                let shape = self.reshaped(src, &xt.shape);
                if src.chance(1, 3) {
                    (
                        Op::Expand {
                            shape: expanded(src, &xt.shape),
                        },
                        vec![x],
                    )
                } else {
                    (Op::Reshape { shape }, vec![x])
                }
            }
            17 => {
                let mut perm: Vec<usize> = (0..rank).collect();
                for i in (1..rank).rev() {
                    perm.swap(i, src.below(i + 1));
                }
                (Op::Transpose { perm }, vec![x])
            }
            18 => {
                if rank == 0 {
                    return false;
                }
                let axis = src.below(rank);
                match src.below(3) {
                    0 => {
                        let n = xt.shape[axis];
                        let a = src.range(1, n.max(1));
                        let sizes = if a < n { vec![a, n - a] } else { vec![n] };
                        (Op::Split { axis, sizes }, vec![x])
                    }
                    1 => {
                        let mut shape = xt.shape.clone();
                        shape[axis] = *src.pick(&DIMS);
                        let c = self.constant(xt.dtype, shape, (-3, 3));
                        (Op::Concat { axis }, vec![x, c, x])
                    }
                    _ => {
                        let y = self.operand(src).0;
                        (Op::Concat { axis }, vec![x, y])
                    }
                }
            }
            19 => {
                let dims = xt
                    .shape
                    .iter()
                    .map(|&n| {
                        let step = *src.pick(&[1i64, 1, 2, -1, -2, 3]);
                        let start = src.below(n) as i64;
                        let room = if step > 0 {
                            (n as i64 - 1 - start) / step + 1
                        } else {
                            start / -step + 1
                        };
                        let len = src.range(0, room.max(0) as usize);
                        SliceDim { start, step, len }
                    })
                    .collect();
                (Op::Slice { dims }, vec![x])
            }
            20 => {
                let pads = (0..2 * rank).map(|_| src.below(4) as i64 - 1).collect();
                let mode = *src.pick(&[
                    PadMode::Constant,
                    PadMode::Reflect,
                    PadMode::Edge,
                    PadMode::Wrap,
                ]);
                let value = *src.pick(&[0.0, 1.5]);
                (Op::Pad { pads, mode, value }, vec![x])
            }
            22 => {
                if rank < 2 || xt.shape[1] == 0 {
                    return false;
                }
                let c = xt.shape[1];
                let mut inputs = vec![x];
                for (lo, hi) in [(-1, 1), (-1, 1), (-1, 1), (1, 2)] {
                    inputs.push(self.constant(DType::F32, vec![c], (lo, hi)));
                }
                let epsilon = *src.pick(&[1e-5, 0.1]);
                (Op::BatchNorm { epsilon }, inputs)
            }
            23 => {
                // Both operands computed at run time (attention-like batched products).
                let (y, yt) = self.operand(src);
                if rank >= 2 && yt.rank() >= 2 && src.chance(1, 2) {
                    let mut perm: Vec<usize> = (0..yt.rank()).collect();
                    perm.swap(yt.rank() - 2, yt.rank() - 1);
                    match self.graph.add("yt", Op::Transpose { perm }, &[y]) {
                        Ok(t) => (Op::MatMul, vec![x, t]),
                        Err(_) => return false,
                    }
                } else {
                    (Op::MatMul, vec![x, y])
                }
            }
            24 => {
                // Quantize then dequantize (u8 or i8, per tensor or per axis).
                if xt.dtype != DType::F32 || self.inexact.contains(&x) {
                    return false;
                }
                let signed = src.chance(1, 2);
                let per_axis = rank > 0 && src.chance(1, 3);
                let axis = if per_axis { src.below(rank) } else { 0 };
                let shape = if per_axis {
                    vec![xt.shape[axis]]
                } else {
                    vec![]
                };
                let scale = self.constant(DType::F32, shape.clone(), (1, 1));
                let zt = if signed { DType::I8 } else { DType::U8 };
                let zero = self.constant(zt, shape, if signed { (-3, 3) } else { (120, 130) });
                let q = match self
                    .graph
                    .add("q", Op::QuantizeLinear { axis }, &[x, scale, zero])
                {
                    Ok(q) => q,
                    Err(_) => return false,
                };
                (Op::DequantizeLinear { axis }, vec![q, scale, zero])
            }
            25 => {
                if rank == 0 {
                    return false;
                }
                if src.chance(1, 2) {
                    // GatherND with index tuples over the leading dims.
                    let depth = src.range(1, rank);
                    let rows = src.range(1, 4);
                    let mut data = vec![];
                    for _ in 0..rows {
                        for d in 0..depth {
                            data.push(src.below(xt.shape[d].max(1)) as i64);
                        }
                    }
                    let idx = Tensor::new(vec![rows, depth], Data::I64(data)).expect("sized");
                    self.consts += 1;
                    let idx = self.graph.add_const(&format!("c{}", self.consts), idx);
                    (Op::GatherNd { batch_dims: 0 }, vec![x, idx])
                } else {
                    let axis = src.below(rank);
                    let n = xt.shape[axis] as i64;
                    let mut shape = xt.shape.clone();
                    shape[axis] = src.range(1, xt.shape[axis].max(1));
                    let idx = self.constant(DType::I64, shape.clone(), (-n, n - 1));
                    let updates = self.constant(xt.dtype, shape, (-3, 3));
                    let reduction = *src.pick(&[
                        ScatterReduction::Replace,
                        ScatterReduction::Add,
                        ScatterReduction::Mul,
                        ScatterReduction::Max,
                        ScatterReduction::Min,
                    ]);
                    (
                        Op::ScatterElements { axis, reduction },
                        vec![x, idx, updates],
                    )
                }
            }
            _ => {
                if rank == 0 {
                    return false;
                }
                let axis = src.below(rank);
                let n = xt.shape[axis] as i64;
                match src.below(5) {
                    0 => {
                        let shape = vec![*src.pick(&[1, 2, 3, 5])];
                        let idx = self.constant(DType::I64, shape, (-n, n - 1));
                        (Op::Gather { axis }, vec![x, idx])
                    }
                    1 => (
                        Op::Arg {
                            largest: src.chance(1, 2),
                            axis,
                            keepdims: src.chance(1, 2),
                            select_last_index: src.chance(1, 2),
                        },
                        vec![x],
                    ),
                    2 => (
                        Op::Cumulative {
                            product: src.chance(1, 4),
                            axis,
                            exclusive: src.chance(1, 2),
                            reverse: src.chance(1, 2),
                        },
                        vec![x],
                    ),
                    3 => (
                        Op::TopK {
                            axis,
                            k: src.range(1, n as usize),
                            largest: src.chance(1, 2),
                        },
                        vec![x],
                    ),
                    _ => {
                        let mut shape = xt.shape.clone();
                        shape[axis] = src.range(1, 4);
                        let idx = self.constant(DType::I64, shape, (-n, n - 1));
                        (Op::GatherElements { axis }, vec![x, idx])
                    }
                }
            }
        };
        // A rounding difference must not flip a discontinuous op (see `sensitive`).
        let from_inexact = inputs.iter().any(|v| self.inexact.contains(v));
        if from_inexact && sensitive(&op) {
            return false;
        }
        let rounds = from_inexact || rounds(&op);
        match self.graph.add_node(&name, op, &inputs) {
            Ok(outs) => {
                if rounds {
                    for &v in &outs {
                        if self.graph.value_type(v).is_ok_and(|t| t.dtype.is_float()) {
                            self.inexact.insert(v);
                        }
                    }
                }
                let node = outs[0].node;
                let types = self.graph.node(node).outputs.clone();
                if types.iter().any(|t| t.numel() > MAX_ELEMENTS) {
                    // Kept in the graph (dead code is removed by the compiler) but not used.
                    return false;
                }
                for (v, t) in outs.into_iter().zip(types) {
                    self.values.push((v, t));
                }
                true
            }
            Err(_) => false,
        }
    }

    fn unary(&mut self, src: &mut Source) -> UnaryOp {
        match src.below(24) {
            0 => UnaryOp::LeakyRelu {
                alpha: *src.pick(&[0.01, 0.2, 1.5]),
            },
            1 => {
                let min = *src.pick(&[-1.0, 0.0, 0.25]);
                UnaryOp::Clip {
                    min,
                    max: min + *src.pick(&[0.5, 6.0]),
                }
            }
            2 => UnaryOp::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            3 => UnaryOp::NanTo { value: 0.0 },
            k => {
                const PLAIN: [[UnaryOp; 4]; 5] = [
                    [
                        UnaryOp::Relu,
                        UnaryOp::Sigmoid,
                        UnaryOp::HardSwish,
                        UnaryOp::Tanh,
                    ],
                    [UnaryOp::Erf, UnaryOp::Exp, UnaryOp::Log, UnaryOp::Sqrt],
                    [UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Floor, UnaryOp::Ceil],
                    [UnaryOp::Round, UnaryOp::Sin, UnaryOp::Cos, UnaryOp::Atan],
                    [UnaryOp::Sinh, UnaryOp::Asinh, UnaryOp::IsNaN, UnaryOp::Not],
                ];
                PLAIN[src.below(5)][k % 4].clone()
            }
        }
    }

    /// A conv or pool over `xt` (rank 3 or 4: batch, channels, 1 or 2 spatial dims), with
    /// the weight and bias constants a conv needs.
    fn conv(&mut self, src: &mut Source, xt: &TensorType) -> Option<(Op, Vec<Value>)> {
        let rank = xt.rank();
        if !(3..=4).contains(&rank) || !matches!(xt.dtype, DType::F32 | DType::F64) {
            return None;
        }
        let nsp = rank - 2;
        let c = xt.shape[1];
        if c == 0 {
            return None;
        }
        let kernel: Vec<usize> = (0..nsp).map(|_| src.range(1, 3)).collect();
        let window = Window {
            kernel: kernel.clone(),
            strides: (0..nsp).map(|_| src.range(1, 2)).collect(),
            pads: (0..2 * nsp).map(|_| src.below(2)).collect(),
            dilations: (0..nsp)
                .map(|_| if src.chance(1, 4) { 2 } else { 1 })
                .collect(),
            ceil_mode: false,
        };
        match src.below(3) {
            0 => {
                let window = Window {
                    ceil_mode: src.chance(1, 3),
                    dilations: vec![1; nsp],
                    ..window
                };
                if src.chance(1, 2) {
                    Some((Op::MaxPool { window }, vec![]))
                } else {
                    let count_include_pad = src.chance(1, 2);
                    Some((
                        Op::AveragePool {
                            window,
                            count_include_pad,
                        },
                        vec![],
                    ))
                }
            }
            _ => {
                let divisors: Vec<usize> = (1..=c).filter(|&g| c.is_multiple_of(g)).collect();
                let group = if src.chance(1, 3) {
                    c
                } else {
                    *src.pick(&divisors)
                };
                let per_group = *src.pick(&[1usize, 2, 3, 4]);
                let co = group * per_group;
                let mut wshape = vec![co, c / group];
                wshape.extend(&kernel);
                // (An f64 conv's weights and bias are f64 too.)
                let wt = if xt.dtype == DType::F64 {
                    DType::F64
                } else {
                    DType::F32
                };
                let mut inputs = vec![self.constant(wt, wshape, (-1, 1))];
                if src.chance(1, 2) {
                    inputs.push(self.constant(wt, vec![co], (-1, 1)));
                }
                Some((Op::Conv { window, group }, inputs))
            }
        }
    }

    fn axes(&mut self, src: &mut Source, rank: usize) -> Vec<usize> {
        let axes: Vec<usize> = (0..rank).filter(|_| src.chance(1, 2)).collect();
        if axes.is_empty() && rank > 0 {
            vec![src.below(rank)]
        } else {
            axes
        }
    }

    /// Another shape with as many elements: the dims merged or split.
    fn reshaped(&mut self, src: &mut Source, shape: &[usize]) -> Vec<usize> {
        let n: usize = shape.iter().product();
        if n == 0 {
            return vec![0];
        }
        match src.below(3) {
            0 => vec![n],
            1 if shape.len() >= 2 => {
                let mut s = shape.to_vec();
                let last = s.pop().unwrap_or(1);
                let k = s.len() - 1;
                s[k] *= last;
                s
            }
            _ => {
                let divisors: Vec<usize> = (1..=n).filter(|&d| n.is_multiple_of(d)).collect();
                let d = *src.pick(&divisors);
                vec![d, n / d]
            }
        }
    }
}

/// Whether `op` may round its float result differently in optc than in the interpreter:
/// sums in another order (contractions, reductions, normalizations) or approximations
/// (exp, tanh, erf, ...). Exact ops (IEEE add/mul/div, max, moves, casts) do not.
fn rounds(op: &Op) -> bool {
    use UnaryOp as U;
    match op {
        Op::Unary(u) => matches!(
            u,
            U::Sigmoid
                | U::Tanh
                | U::Erf
                | U::Exp
                | U::Log
                | U::Sqrt
                | U::Sin
                | U::Cos
                | U::Atan
                | U::Sinh
                | U::Asinh
                | U::HardSigmoid { .. }
                | U::HardSwish
                | U::Silu
                | U::Gelu
                | U::GeluTanh
        ),
        Op::Binary(b) => matches!(b, BinaryOp::Pow),
        Op::Reduce { kind, .. } => !matches!(kind, ReduceKind::Max | ReduceKind::Min),
        Op::MatMul
        | Op::Gemm { .. }
        | Op::Conv { .. }
        | Op::AveragePool { .. }
        | Op::Softmax { .. }
        | Op::LayerNorm { .. }
        | Op::BatchNorm { .. }
        | Op::Cumulative { .. } => true,
        _ => false,
    }
}

/// Whether a last-place difference in `op`'s float inputs can change its result by more
/// than a tolerance: steps (floor, comparisons, casts to integers, indices), poles and
/// branch points (division, log, sqrt near 0, fmod, pow). Such ops take only exact values.
fn sensitive(op: &Op) -> bool {
    use UnaryOp as U;
    match op {
        Op::Unary(u) => matches!(
            u,
            U::Floor | U::Ceil | U::Round | U::Sqrt | U::Log | U::IsNaN | U::Not
        ),
        Op::Binary(b) => matches!(
            b,
            BinaryOp::Div
                | BinaryOp::Pow
                | BinaryOp::FMod
                | BinaryOp::Equal
                | BinaryOp::Greater
                | BinaryOp::Less
                | BinaryOp::GreaterOrEqual
                | BinaryOp::LessOrEqual
        ),
        Op::Cast { to } => *to != DType::F32,
        Op::Arg { .. } | Op::TopK { .. } => true,
        _ => false,
    }
}

/// A shape `shape` broadcasts to: a leading dim added, a 1 stretched.
fn expanded(src: &mut Source, shape: &[usize]) -> Vec<usize> {
    let mut s: Vec<usize> = shape
        .iter()
        .map(|&d| if d == 1 { *src.pick(&[1, 3]) } else { d })
        .collect();
    if src.chance(1, 3) {
        s.insert(0, 2);
    }
    s
}

/// Float values that behave unlike the others: NaN (must propagate), -0 and a tiny value.
/// (No infinities: inf times a value the kernels round differently from the interpreter,
/// 0 against 1e-9, is NaN against inf; no huge finite values: the interpreter sums in f64,
/// optc in f32, and 1e18 squared or cancelled differs by more than any tolerance.)
const SPECIAL: [f32; 3] = [f32::NAN, -0.0, -1e-30];

const BINARY: [BinaryOp; 14] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Pow,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Equal,
    BinaryOp::Greater,
    BinaryOp::Less,
    BinaryOp::And,
    BinaryOp::BitXor,
    BinaryOp::ShiftLeft,
    BinaryOp::FMod,
];
