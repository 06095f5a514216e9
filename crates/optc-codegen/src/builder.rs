//! The function builder every lowering writes through ([`Emitter`]): Cranelift's `FunctionBuilder`
//! plus the target's FMA, the runtime functions a kernel may call, constants hoisted to the
//! entry block, counted and offset-carrying loops, loads and stores of tensor data, and a few
//! control-flow and memory helpers (`if_else`, `fill`, `copy_span`, `shuffle_lanes`).
//! The float approximations (exp, tanh, erf, sigmoid) are in `ops/transcendental.rs`.

use crate::error::RuntimeError;
use cranelift_codegen::cursor::{Cursor, FuncCursor};
use cranelift_codegen::ir::{
    condcodes::{FloatCC, IntCC},
    types, Block, FuncRef, Function, Inst, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind,
    Type, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use optc_ir::DType;
use std::collections::HashMap;

pub(crate) const F32X4: Type = types::F32X4;
pub(crate) const I32X4: Type = types::I32X4;
/// Memory flags for loads/stores of tensor data: never trap, not assumed aligned.
pub(crate) fn tensor_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}
/// Cranelift type of one element of `dt` (bool, u8 and i8 are bytes).
pub(crate) fn element_type(dt: DType) -> Type {
    match dt {
        DType::F32 => types::F32,
        DType::F64 => types::F64,
        DType::I64 => types::I64,
        DType::I32 => types::I32,
        DType::Bool | DType::U8 | DType::I8 => types::I8,
    }
}
/// Runtime function references available inside a kernel.
#[derive(Clone, Copy)]
pub(crate) struct RuntimeRefs {
    pub log: FuncRef,
    pub pow: FuncRef,
    pub integer_pow: FuncRef,
    pub unary_math: FuncRef,
    pub fmod: FuncRef,
    /// `optc_rt_math_f64(x, y, code)`.
    pub math_f64: FuncRef,
}
/// A kernel being built: the builder plus target facts.
pub(crate) struct Emitter<'f> {
    pub b: FunctionBuilder<'f>,
    pub fma: bool,
    pub runtime: RuntimeRefs,
    /// The entry block: vector/float constants are materialized there once (hoisted out of
    /// every loop) and reused.
    pub entry: Option<Block>,
    pub consts: HashMap<(Type, u32), Value>,
    /// Address of a zeroed 16-byte stack slot (see `load_if`), created on first use.
    pub dummy: Option<Value>,
    /// When set, `map`s over exactly `shape` only do part `t` of `parts` along `dim`
    /// (a task of a node split across threads).
    pub partition: Option<Partition>,
}
/// Where a counted loop ends.
enum LoopEnd {
    Constant(i64),
    Value(Value),
}

/// One part of an elementwise node split across tasks (see `Emitter::partition`).
#[derive(Clone)]
pub(crate) struct Partition {
    pub shape: Vec<usize>,
    pub dim: usize,
    pub parts: usize,
    pub t: Value,
}
impl Partition {
    /// The extent along `dim` of every part but the last, and of the last: `ceil(n / parts)`
    /// and what is left (equal when `parts` divides the extent `n`).
    pub fn lengths(&self) -> (usize, usize) {
        let n = self.shape[self.dim];
        let part = n.div_ceil(self.parts);
        (part, n - part * (self.parts - 1))
    }
}
impl<'f> Emitter<'f> {
    /// Start building `func`: one sealed entry block that holds the function's parameters
    /// (returned) and receives hoisted constants.
    pub fn begin(
        func: &'f mut Function,
        fctx: &'f mut FunctionBuilderContext,
        fma: bool,
        runtime: RuntimeRefs,
    ) -> (Self, Vec<Value>) {
        let mut b = FunctionBuilder::new(func, fctx);
        let blk = b.create_block();
        b.append_block_params_for_function_params(blk);
        b.switch_to_block(blk);
        b.seal_block(blk);
        let params = b.block_params(blk).to_vec();
        let e = Emitter {
            b,
            fma,
            runtime,
            entry: Some(blk),
            consts: HashMap::new(),
            dummy: None,
            partition: None,
        };
        (e, params)
    }

    pub fn int_const(&mut self, v: i64) -> Value {
        self.b.ins().iconst(types::I64, v)
    }

    pub fn load(&mut self, ty: Type, p: Value, off: Value) -> Value {
        let a = self.b.ins().iadd(p, off);
        self.b.ins().load(ty, tensor_flags(), a, 0)
    }

    /// Load from `p + off` when `valid` (an i8 truth value), else from a zeroed stack slot:
    /// never touches memory outside the tensor, whatever `off` is.
    pub fn load_if(&mut self, ty: Type, valid: Value, p: Value, off: Value) -> Value {
        let dummy = match self.dummy {
            Some(d) => d,
            None => {
                let slot = self.b.create_sized_stack_slot(StackSlotData::new(
                    StackSlotKind::ExplicitSlot,
                    16,
                    4,
                ));
                let d = match self.hoist_point() {
                    Some(inst) => {
                        let mut cur = FuncCursor::new(&mut *self.b.func).at_inst(inst);
                        let a = cur.ins().stack_addr(types::I64, slot, 0);
                        let z = cur.ins().iconst(types::I64, 0);
                        cur.ins().store(tensor_flags(), z, a, 0);
                        cur.ins().store(tensor_flags(), z, a, 8);
                        a
                    }
                    None => {
                        let a = self.b.ins().stack_addr(types::I64, slot, 0);
                        let z = self.b.ins().iconst(types::I64, 0);
                        self.b.ins().store(tensor_flags(), z, a, 0);
                        self.b.ins().store(tensor_flags(), z, a, 8);
                        a
                    }
                };
                if self.entry.is_some() {
                    self.dummy = Some(d);
                }
                d
            }
        };
        let a = self.b.ins().iadd(p, off);
        let a = self.b.ins().select(valid, a, dummy);
        self.b.ins().load(ty, tensor_flags(), a, 0)
    }

    pub fn store(&mut self, v: Value, p: Value, off: Value) {
        let a = self.b.ins().iadd(p, off);
        self.b.ins().store(tensor_flags(), v, a, 0);
    }

    /// Four floats `stride` floats apart from `p + off`, loaded one by one into an f32x4
    /// (lane 0 by `scalar_to_vector`).
    pub fn gather4(&mut self, p: Value, off: i32, stride: usize) -> Value {
        let s0 = self.b.ins().load(types::F32, tensor_flags(), p, off);
        let mut v = self.b.ins().scalar_to_vector(F32X4, s0);
        for l in 1..4 {
            let s = self
                .b
                .ins()
                .load(types::F32, tensor_flags(), p, off + (l * stride * 4) as i32);
            v = self.b.ins().insertlane(v, s, l as u8);
        }
        v
    }

    /// `for i in 0..n { body(i) }`, with `i: i64`. Emits nothing for `n == 0`, no loop for 1.
    pub fn loop_count(&mut self, n: i64, body: &mut dyn FnMut(&mut Self, Value)) {
        if n <= 0 {
            return;
        }
        if n == 1 {
            let z = self.int_const(0);
            body(self, z);
            return;
        }
        let z = self.int_const(0);
        self.loop_below(z, LoopEnd::Constant(n), body);
    }

    /// `for i in lo..hi` with `hi` known at run time only.
    pub fn loop_range(&mut self, lo: Value, hi: Value, body: &mut dyn FnMut(&mut Self, Value)) {
        self.loop_below(lo, LoopEnd::Value(hi), body);
    }

    /// `i = start; while i < end { body(i); i += 1 }` (signed).
    fn loop_below(&mut self, start: Value, end: LoopEnd, body: &mut dyn FnMut(&mut Self, Value)) {
        let iv = self.b.declare_var(types::I64);
        self.b.def_var(iv, start);
        let header = self.b.create_block();
        let bodyb = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(iv);
        let c = match end {
            LoopEnd::Constant(n) => self.b.ins().icmp_imm_s(IntCC::SignedLessThan, i, n),
            LoopEnd::Value(hi) => self.b.ins().icmp(IntCC::SignedLessThan, i, hi),
        };
        self.b.ins().brif(c, bodyb, &[], exit, &[]);
        self.b.switch_to_block(bodyb);
        self.b.seal_block(bodyb);
        body(self, i);
        let i2 = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(iv, i2);
        self.b.ins().jump(header, &[]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// Loop `n` times carrying byte offsets `offs[k]` that advance by `steps[k]` per iteration.
    pub fn loop_offsets(
        &mut self,
        n: i64,
        offs: &[Value],
        steps: &[i64],
        body: &mut dyn FnMut(&mut Self, Value, &[Value]),
    ) {
        if n <= 0 {
            return;
        }
        let vars: Vec<Variable> = offs
            .iter()
            .map(|&o| {
                let v = self.b.declare_var(types::I64);
                self.b.def_var(v, o);
                v
            })
            .collect();
        let steps = steps.to_vec();
        self.loop_count(n, &mut |e, i| {
            let cur: Vec<Value> = vars.iter().map(|&v| e.b.use_var(v)).collect();
            body(e, i, &cur);
            for (k, &v) in vars.iter().enumerate() {
                if steps[k] != 0 {
                    let nx = e.b.ins().iadd_imm_s(cur[k], steps[k]);
                    e.b.def_var(v, nx);
                }
            }
        });
    }

    /// Nested loops over `dims` (outermost first); `strides[k][d]` is operand k's byte stride
    /// along dim d; `body` receives the byte offsets of every operand.
    pub fn nest(
        &mut self,
        dims: &[usize],
        strides: &[Vec<i64>],
        base: &[Value],
        body: &mut dyn FnMut(&mut Self, &[Value]),
    ) {
        if dims.is_empty() {
            body(self, base);
            return;
        }
        let steps: Vec<i64> = strides.iter().map(|s| s[0]).collect();
        let rest: Vec<Vec<i64>> = strides.iter().map(|s| s[1..].to_vec()).collect();
        let d0 = dims[0] as i64;
        let inner = &dims[1..];
        self.loop_offsets(d0, base, &steps, &mut |e, _i, offs| {
            e.nest(inner, &rest, offs, body);
        });
    }

    /// Where to hoist constants: before the entry block's terminator (when we are past it).
    fn hoist_point(&self) -> Option<Inst> {
        let entry = self.entry?;
        if self.b.current_block() == Some(entry) {
            return None;
        }
        self.b.func.layout.last_inst(entry)
    }

    /// A constant `bits` of type `ty` (`F32`, `I32`, or splatted `F32X4`/`I32X4`), hoisted to the
    /// entry block and shared.
    fn constant(&mut self, ty: Type, bits: u32) -> Value {
        if let Some(v) = self.consts.get(&(ty, bits)) {
            return *v;
        }
        let at = self.hoist_point();
        let in_entry = self.entry.is_some() && at.is_none();
        let lane = ty.lane_type();
        let v = match at {
            Some(inst) => {
                let mut cur = FuncCursor::new(&mut *self.b.func).at_inst(inst);
                let s = if lane == types::F32 {
                    cur.ins().f32const(f32::from_bits(bits))
                } else {
                    cur.ins().iconst(types::I32, bits as i32 as i64)
                };
                if ty.is_vector() {
                    cur.ins().splat(ty, s)
                } else {
                    s
                }
            }
            None => {
                let s = if lane == types::F32 {
                    self.b.ins().f32const(f32::from_bits(bits))
                } else {
                    self.b.ins().iconst(types::I32, bits as i32 as i64)
                };
                if ty.is_vector() {
                    self.b.ins().splat(ty, s)
                } else {
                    s
                }
            }
        };
        if at.is_some() || in_entry {
            self.consts.insert((ty, bits), v);
        }
        v
    }

    /// f32 constant, splatted when `ty` is a vector (`F64`: the same value as an f64).
    pub fn float_const(&mut self, ty: Type, c: f32) -> Value {
        if ty == types::F64 {
            return self.f64_const(c as f64);
        }
        self.constant(ty, c.to_bits())
    }

    /// A scalar f64 constant.
    pub fn f64_const(&mut self, c: f64) -> Value {
        self.b.ins().f64const(c)
    }

    /// i32 constant of the integer type matching `ty` (I32 or I32X4).
    pub fn i32_const(&mut self, ty: Type, c: i32) -> Value {
        let t = if ty.is_vector() { I32X4 } else { types::I32 };
        self.constant(t, c as u32)
    }

    /// `a * b + c`, fused when the target has FMA.
    pub fn mul_add(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let m = self.b.ins().fmul(a, b);
            self.b.ins().fadd(m, c)
        }
    }

    /// `cond ? x : y` for a comparison result of `fcmp` on `ty` (scalar or vector).
    pub fn select_float(&mut self, ty: Type, cond: Value, x: Value, y: Value) -> Value {
        if ty.is_vector() {
            let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), cond);
            self.b.ins().bitselect(m, x, y)
        } else {
            self.b.ins().select(cond, x, y)
        }
    }

    /// `x < lo ? lo : x` (NaN stays NaN).
    pub fn clamp_lo(&mut self, ty: Type, x: Value, lo: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::LessThan, x, lo);
        self.select_float(ty, c, lo, x)
    }

    /// `x > hi ? hi : x` (NaN stays NaN).
    pub fn clamp_hi(&mut self, ty: Type, x: Value, hi: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::GreaterThan, x, hi);
        self.select_float(ty, c, hi, x)
    }

    /// Scalar f32 call of a runtime function of one argument.
    pub fn call1(&mut self, f: FuncRef, x: Value) -> Value {
        let c = self.b.ins().call(f, &[x]);
        self.b.inst_results(c)[0]
    }

    pub fn call2(&mut self, f: FuncRef, x: Value, y: Value) -> Value {
        let c = self.b.ins().call(f, &[x, y]);
        self.b.inst_results(c)[0]
    }

    /// libm's f64 function `code` (`runtime::MATH_F64`) at `x` (and `y`: `pow`, `fmod`; the
    /// one-argument functions ignore it).
    pub fn math_f64(&mut self, code: i64, x: Value, y: Value) -> Value {
        let f = self.runtime.math_f64;
        let c = self.b.ins().iconst(types::I32, code);
        let call = self.b.ins().call(f, &[x, y, c]);
        self.b.inst_results(call)[0]
    }

    /// Return `error`'s code from the kernel when `cond` (an i8 truth value) holds.
    pub fn fail_if(&mut self, cond: Value, error: RuntimeError) {
        let bad = self.b.create_block();
        let ok = self.b.create_block();
        self.b.ins().brif(cond, bad, &[], ok, &[]);
        self.b.switch_to_block(bad);
        self.b.seal_block(bad);
        self.b.set_cold_block(bad);
        let c = self.b.ins().iconst(types::I32, error.code() as i64);
        self.b.ins().return_(&[c]);
        self.b.switch_to_block(ok);
        self.b.seal_block(ok);
    }

    /// Over `n` contiguous f32 elements: `vbody` once per f32x4 chunk, then `sbody` once per
    /// tail element. Offset `k` advances by 16 (vector) / 4 (scalar) bytes when `moving[k]`.
    pub fn vector_loop(
        &mut self,
        n: usize,
        offs: &[Value],
        moving: &[bool],
        vbody: &mut dyn FnMut(&mut Self, &[Value]),
        sbody: &mut dyn FnMut(&mut Self, &[Value]),
    ) {
        let nv = n / 4;
        let vst: Vec<i64> = moving.iter().map(|&m| if m { 16 } else { 0 }).collect();
        self.loop_offsets(nv as i64, offs, &vst, &mut |e, _i, o| vbody(e, o));
        let rest = n % 4;
        if rest > 0 {
            let start: Vec<Value> = offs
                .iter()
                .zip(moving)
                .map(|(&o, &m)| {
                    if m {
                        self.b.ins().iadd_imm_s(o, nv as i64 * 16)
                    } else {
                        o
                    }
                })
                .collect();
            let sst: Vec<i64> = moving.iter().map(|&m| if m { 4 } else { 0 }).collect();
            self.loop_offsets(rest as i64, &start, &sst, &mut |e, _i, o| sbody(e, o));
        }
    }

    /// Horizontal sum (or max) of an f32x4.
    pub fn horizontal_reduce(&mut self, v: Value, max: bool) -> Value {
        let mut r = self.b.ins().extractlane(v, 0);
        for l in 1..4u8 {
            let s = self.b.ins().extractlane(v, l);
            r = if max {
                self.b.ins().fmax(r, s)
            } else {
                self.b.ins().fadd(r, s)
            };
        }
        r
    }

    /// Copy `n` bytes (a compile-time constant) from `src + so` to `dst + doff`.
    pub fn copy_bytes(&mut self, dst: Value, doff: Value, src: Value, so: Value, n: usize) {
        let chunks = n / 16;
        let mut done = 0usize;
        if chunks > 0 {
            self.loop_offsets(chunks as i64, &[doff, so], &[16, 16], &mut |e, _i, o| {
                let v = e.load(types::I8X16, src, o[1]);
                e.store(v, dst, o[0]);
            });
            done = chunks * 16;
        }
        for (w, ty) in [
            (8usize, types::I64),
            (4, types::I32),
            (2, types::I16),
            (1, types::I8),
        ] {
            while n - done >= w {
                let d = self.b.ins().iadd_imm_s(doff, done as i64);
                let s = self.b.ins().iadd_imm_s(so, done as i64);
                let v = self.load(ty, src, s);
                self.store(v, dst, d);
                done += w;
            }
        }
    }
}
/// `if c { then() } else { els() }`.
pub(crate) fn if_else(
    e: &mut Emitter,
    c: Value,
    then: &mut dyn FnMut(&mut Emitter),
    els: &mut dyn FnMut(&mut Emitter),
) {
    let tb = e.b.create_block();
    let eb = e.b.create_block();
    let join = e.b.create_block();
    e.b.ins().brif(c, tb, &[], eb, &[]);
    e.b.switch_to_block(tb);
    e.b.seal_block(tb);
    then(e);
    e.b.ins().jump(join, &[]);
    e.b.switch_to_block(eb);
    e.b.seal_block(eb);
    els(e);
    e.b.ins().jump(join, &[]);
    e.b.switch_to_block(join);
    e.b.seal_block(join);
}
// ---------------------------------------------------------------------------------------------
// Pools.

/// Nested loops over `dims` giving each loop index (i64).
pub(crate) fn index_loops(
    e: &mut Emitter,
    dims: &[usize],
    idx: &mut Vec<Value>,
    body: &mut dyn FnMut(&mut Emitter, &[Value]),
) {
    if idx.len() == dims.len() {
        body(e, idx);
        return;
    }
    let d = dims[idx.len()];
    e.loop_count(d as i64, &mut |e, i| {
        idx.push(i);
        index_loops(e, dims, idx, body);
        idx.pop();
    });
}
/// Copy `len` floats from `s` to `d`: `f32x4` groups of 4 (unrolled when short, else a
/// loop), then the tail.
pub(crate) fn copy_span(e: &mut Emitter, s: Value, d: Value, len: usize) {
    let group = |e: &mut Emitter, s: Value, d: Value, nv: usize| {
        let v: Vec<Value> = (0..nv)
            .map(|l| e.b.ins().load(F32X4, tensor_flags(), s, (l * 16) as i32))
            .collect();
        for (l, &x) in v.iter().enumerate() {
            e.b.ins().store(tensor_flags(), x, d, (l * 16) as i32);
        }
    };
    let nv = len / 4;
    if nv <= 16 {
        group(e, s, d, nv);
    } else {
        e.loop_offsets((nv / 4) as i64, &[s, d], &[64, 64], &mut |e, _i, o| {
            group(e, o[0], o[1], 4)
        });
        let o = (nv / 4 * 64) as i64;
        let s2 = e.b.ins().iadd_imm_s(s, o);
        let d2 = e.b.ins().iadd_imm_s(d, o);
        group(e, s2, d2, nv % 4);
    }
    for t in nv * 4..len {
        let x =
            e.b.ins()
                .load(types::F32, tensor_flags(), s, (t * 4) as i32);
        e.b.ins().store(tensor_flags(), x, d, (t * 4) as i32);
    }
}
/// Store the constant `x` (an `f32`) to floats `[from, to)` of `d` (vectors, then scalars).
pub(crate) fn fill(e: &mut Emitter, d: Value, from: usize, to: usize, x: f32) {
    let v = e.float_const(F32X4, x);
    let s = e.float_const(types::F32, x);
    let mut k = from;
    while k + 4 <= to {
        e.b.ins().store(tensor_flags(), v, d, (k * 4) as i32);
        k += 4;
    }
    while k < to {
        e.b.ins().store(tensor_flags(), s, d, (k * 4) as i32);
        k += 1;
    }
}
/// Store zeros to `len` floats at `d`: unrolled when short, else an `f32x4` loop and a tail.
pub(crate) fn zero_span(e: &mut Emitter, d: Value, len: usize) {
    if len <= 32 {
        fill(e, d, 0, len, 0.0);
        return;
    }
    let zv = e.float_const(F32X4, 0.0);
    let z = e.int_const(0);
    e.loop_offsets((len / 16) as i64, &[z], &[64], &mut |e, _i, o| {
        let a = e.b.ins().iadd(d, o[0]);
        for l in 0..4 {
            e.b.ins().store(tensor_flags(), zv, a, l * 16);
        }
    });
    fill(e, d, len / 16 * 16, len, 0.0);
}
/// Transpose a 4x4 block of `f32x4` rows.
pub(crate) fn transpose4(e: &mut Emitter, v: [Value; 4]) -> [Value; 4] {
    let t0 = shuffle_lanes(e, v[0], v[1], [0, 4, 1, 5]);
    let t1 = shuffle_lanes(e, v[2], v[3], [0, 4, 1, 5]);
    let t2 = shuffle_lanes(e, v[0], v[1], [2, 6, 3, 7]);
    let t3 = shuffle_lanes(e, v[2], v[3], [2, 6, 3, 7]);
    [
        shuffle_lanes(e, t0, t1, [0, 1, 4, 5]),
        shuffle_lanes(e, t0, t1, [2, 3, 6, 7]),
        shuffle_lanes(e, t2, t3, [0, 1, 4, 5]),
        shuffle_lanes(e, t2, t3, [2, 3, 6, 7]),
    ]
}

/// Lanes `[l0, l1, l2, l3]` of the 8 lanes of `a` (0-3) and `b` (4-7), two `f32x4`.
pub(crate) fn shuffle_lanes(e: &mut Emitter, a: Value, b: Value, lanes: [u8; 4]) -> Value {
    use cranelift_codegen::ir::{ConstantData, Endianness, MemFlagsData};
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let a8 = e.b.ins().bitcast(types::I8X16, le, a);
    let b8 = e.b.ins().bitcast(types::I8X16, le, b);
    let mask: Vec<u8> = lanes
        .iter()
        .flat_map(|&l| (0..4).map(move |k| l * 4 + k))
        .collect();
    let imm = e.b.func.dfg.immediates.push(ConstantData::from(mask));
    let r = e.b.ins().shuffle(a8, b8, imm);
    e.b.ins().bitcast(F32X4, le, r)
}
