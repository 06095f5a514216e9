//! Cranelift IR building helpers: loops, memory access, constants and vector math.

use crate::error::{CodegenError, RuntimeError};
use crate::runtime::{RuntimeFunction, SYMBOLS};
use cranelift_codegen::cursor::{Cursor, FuncCursor};
use cranelift_codegen::ir::Function;
use cranelift_codegen::ir::{
    condcodes::{FloatCC, IntCC},
    types, Block, FuncRef, Inst, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type,
    Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module};
use optc_ir::DType;
use std::collections::HashMap;

pub(crate) const F32X4: Type = types::F32X4;
pub(crate) const I32X4: Type = types::I32X4;

/// Memory flags for loads/stores of tensor data: never trap, not assumed aligned.
pub(crate) fn mf() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Cranelift type of one element of `dt` (bool, u8 and i8 are bytes).
pub(crate) fn clty(dt: DType) -> Type {
    match dt {
        DType::F32 => types::F32,
        DType::I64 => types::I64,
        DType::I32 => types::I32,
        DType::Bool | DType::U8 | DType::I8 => types::I8,
    }
}

/// Runtime function references available inside a kernel.
#[derive(Clone, Copy)]
pub(crate) struct Rt {
    pub logf: FuncRef,
    pub powf: FuncRef,
    pub powi: FuncRef,
}

/// The runtime imports of a module ([`crate::runtime::SYMBOLS`], in table order), declared
/// once; `declare_in` makes the math functions callable from one function.
pub(crate) struct RtIds {
    ids: Vec<FuncId>,
}

impl RtIds {
    pub fn declare<M: Module>(module: &mut M) -> Result<RtIds, CodegenError> {
        let call_conv = module.isa().default_call_conv();
        let pointer = module.target_config().pointer_type();
        let ids = SYMBOLS
            .iter()
            .map(|s| {
                module
                    .declare_function(s.name, Linkage::Import, &s.signature(call_conv, pointer))
                    .map_err(|e| CodegenError::new(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(RtIds { ids })
    }

    /// The module's import of `f`.
    pub fn id(&self, f: RuntimeFunction) -> FuncId {
        self.ids[f as usize]
    }

    pub fn declare_in<M: Module>(&self, module: &mut M, func: &mut Function) -> Rt {
        Rt {
            logf: module.declare_func_in_func(self.id(RuntimeFunction::Log), func),
            powf: module.declare_func_in_func(self.id(RuntimeFunction::Pow), func),
            powi: module.declare_func_in_func(self.id(RuntimeFunction::IntegerPow), func),
        }
    }
}

/// A kernel being built: the builder plus target facts.
pub(crate) struct E<'f> {
    pub b: FunctionBuilder<'f>,
    pub fma: bool,
    pub rt: Rt,
    /// The entry block: vector/float constants are materialized there once (hoisted out of
    /// every loop) and reused.
    pub entry: Option<Block>,
    pub consts: HashMap<(Type, u32), Value>,
    /// Address of a zeroed 16-byte stack slot (see `ld_if`), created on first use.
    pub dummy: Option<Value>,
    /// When set, `map`s over exactly `shape` only do part `t` of `parts` along `dim`
    /// (a task of a node split across threads).
    pub split: Option<Split>,
}

/// One part of an elementwise node split across tasks (see `E::split`).
#[derive(Clone)]
pub(crate) struct Split {
    pub shape: Vec<usize>,
    pub dim: usize,
    pub parts: usize,
    pub t: Value,
}

#[allow(clippy::excessive_precision)]
impl<'f> E<'f> {
    /// Start building `func`: one sealed entry block that holds the function's parameters
    /// (returned) and receives hoisted constants.
    pub fn begin(
        func: &'f mut Function,
        fctx: &'f mut FunctionBuilderContext,
        fma: bool,
        rt: Rt,
    ) -> (Self, Vec<Value>) {
        let mut b = FunctionBuilder::new(func, fctx);
        let blk = b.create_block();
        b.append_block_params_for_function_params(blk);
        b.switch_to_block(blk);
        b.seal_block(blk);
        let params = b.block_params(blk).to_vec();
        let e = E {
            b,
            fma,
            rt,
            entry: Some(blk),
            consts: HashMap::new(),
            dummy: None,
            split: None,
        };
        (e, params)
    }

    pub fn ic(&mut self, v: i64) -> Value {
        self.b.ins().iconst(types::I64, v)
    }

    pub fn ld(&mut self, ty: Type, p: Value, off: Value) -> Value {
        let a = self.b.ins().iadd(p, off);
        self.b.ins().load(ty, mf(), a, 0)
    }

    /// Load from `p + off` when `valid` (an i8 truth value), else from a zeroed stack slot:
    /// never touches memory outside the tensor, whatever `off` is.
    pub fn ld_if(&mut self, ty: Type, valid: Value, p: Value, off: Value) -> Value {
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
                        cur.ins().store(mf(), z, a, 0);
                        cur.ins().store(mf(), z, a, 8);
                        a
                    }
                    None => {
                        let a = self.b.ins().stack_addr(types::I64, slot, 0);
                        let z = self.b.ins().iconst(types::I64, 0);
                        self.b.ins().store(mf(), z, a, 0);
                        self.b.ins().store(mf(), z, a, 8);
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
        self.b.ins().load(ty, mf(), a, 0)
    }

    pub fn st(&mut self, v: Value, p: Value, off: Value) {
        let a = self.b.ins().iadd(p, off);
        self.b.ins().store(mf(), v, a, 0);
    }

    /// `for i in 0..n { body(i) }`, with `i: i64`. Emits nothing for `n == 0`, no loop for 1.
    pub fn loop_n(&mut self, n: i64, body: &mut dyn FnMut(&mut Self, Value)) {
        if n <= 0 {
            return;
        }
        if n == 1 {
            let z = self.ic(0);
            body(self, z);
            return;
        }
        let iv = self.b.declare_var(types::I64);
        let z = self.ic(0);
        self.b.def_var(iv, z);
        let header = self.b.create_block();
        let bodyb = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(iv);
        let c = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, i, n);
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
    pub fn loop_offs(
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
        self.loop_n(n, &mut |e, i| {
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
        self.loop_offs(d0, base, &steps, &mut |e, _i, offs| {
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
    fn konst(&mut self, ty: Type, bits: u32) -> Value {
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

    /// f32 constant, splatted when `ty` is a vector.
    pub fn fc(&mut self, ty: Type, c: f32) -> Value {
        self.konst(ty, c.to_bits())
    }

    /// i32 constant of the integer type matching `ty` (I32 or I32X4).
    pub fn i32c(&mut self, ty: Type, c: i32) -> Value {
        let t = if ty.is_vector() { I32X4 } else { types::I32 };
        self.konst(t, c as u32)
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
    pub fn fsel(&mut self, ty: Type, cond: Value, x: Value, y: Value) -> Value {
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
        self.fsel(ty, c, lo, x)
    }

    /// `x > hi ? hi : x` (NaN stays NaN).
    pub fn clamp_hi(&mut self, ty: Type, x: Value, hi: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::GreaterThan, x, hi);
        self.fsel(ty, c, hi, x)
    }

    fn int_ty(ty: Type) -> Type {
        if ty.is_vector() {
            I32X4
        } else {
            types::I32
        }
    }

    fn bits_of(&mut self, ty: Type, x: Value) -> Value {
        self.b
            .ins()
            .bitcast(Self::int_ty(ty), MemFlagsData::new(), x)
    }

    fn float_of(&mut self, ty: Type, x: Value) -> Value {
        self.b.ins().bitcast(ty, MemFlagsData::new(), x)
    }

    /// `|x|` with the sign of `s`.
    fn copysign(&mut self, ty: Type, mag: Value, s: Value) -> Value {
        let it = Self::int_ty(ty);
        let sb = self.bits_of(ty, s);
        let mask = self.i32c(it, i32::MIN);
        let sign = self.b.ins().band(sb, mask);
        let mb = self.bits_of(ty, mag);
        let r = self.b.ins().bor(mb, sign);
        self.float_of(ty, r)
    }

    fn poly(&mut self, ty: Type, x: Value, coefs: &[f32]) -> Value {
        let mut p = self.fc(ty, coefs[0]);
        for &c in &coefs[1..] {
            let cv = self.fc(ty, c);
            p = self.mul_add(p, x, cv);
        }
        p
    }

    /// `exp(x)` (Cody–Waite reduction, Cephes degree-6 polynomial; ~1 ulp), scalar or f32x4.
    pub fn exp(&mut self, ty: Type, x: Value) -> Value {
        // n = round(x / ln 2) stays in [-125, 128]; the scale 2^n is built as 2^(n-1) * 2.
        let hi = self.fc(ty, 88.72283);
        let lo = self.fc(ty, -86.64);
        let xc = self.clamp_hi(ty, x, hi);
        let xc = self.clamp_lo(ty, xc, lo);
        let res = self.exp_reduced(ty, xc, 126);
        let two = self.fc(ty, 2.0);
        let res = self.b.ins().fmul(res, two);
        let big = self.fc(ty, 88.72284);
        let over = self.b.ins().fcmp(FloatCC::GreaterThan, x, big);
        let inf = self.fc(ty, f32::INFINITY);
        self.fsel(ty, over, inf, res)
    }

    /// `exp(xc) / 2^(127 - bias)` for a clamped `xc`: `n = round(xc / ln 2)`, a degree-7
    /// polynomial on the Cody-Waite reduced `r = xc - n ln 2`, times `2^(n + bias - 127)`
    /// built in the exponent bits (`bias` 127: `2^n`; 126: `2^(n-1)`, for `n` up to 128).
    fn exp_reduced(&mut self, ty: Type, xc: Value, bias: i32) -> Value {
        let log2e = self.fc(ty, std::f32::consts::LOG2_E);
        let magic = self.fc(ty, 12582912.0);
        let t = self.mul_add(xc, log2e, magic);
        let n = self.b.ins().fsub(t, magic);
        let c1 = self.fc(ty, -0.693359375);
        let c2 = self.fc(ty, 2.12194440e-4);
        let r = self.mul_add(n, c1, xc);
        let r = self.mul_add(n, c2, r);
        let p = self.poly(
            ty,
            r,
            &[
                1.987_569_2e-4,
                1.398_199_9e-3,
                8.333_452e-3,
                4.166_579_6e-2,
                1.666_666_5e-1,
                5.000_000_1e-1,
            ],
        );
        let r2 = self.b.ins().fmul(r, r);
        let one = self.fc(ty, 1.0);
        let rp1 = self.b.ins().fadd(r, one);
        let y = self.mul_add(p, r2, rp1);
        let it = Self::int_ty(ty);
        let tb = self.bits_of(ty, t);
        let off = self.i32c(it, 0x4B40_0000 - bias);
        let e = self.b.ins().isub(tb, off);
        let e = self.b.ins().ishl_imm_s(e, 23);
        let scale = self.float_of(ty, e);
        self.b.ins().fmul(y, scale)
    }

    /// `exp(x)` for `x <= 0` or NaN (softmax's `x - max`), as `exp` without the overflow
    /// handling: same reduction and polynomial, scale `2^n` with `n` in [-125, 0].
    pub fn exp_nonpos(&mut self, ty: Type, x: Value) -> Value {
        let lo = self.fc(ty, -86.64);
        let xc = self.clamp_lo(ty, x, lo);
        self.exp_reduced(ty, xc, 127)
    }

    pub fn sigmoid(&mut self, ty: Type, x: Value) -> Value {
        let nx = self.b.ins().fneg(x);
        let e = self.exp(ty, nx);
        let one = self.fc(ty, 1.0);
        let d = self.b.ins().fadd(one, e);
        self.b.ins().fdiv(one, d)
    }

    pub fn tanh(&mut self, ty: Type, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        // Small |x|: Cephes tanhf odd polynomial.
        let z = self.b.ins().fmul(x, x);
        let p = self.poly(
            ty,
            z,
            &[
                -5.704_988_7e-3,
                2.063_908_9e-2,
                -5.373_971_6e-2,
                1.333_144_2e-1,
                -3.333_328_2e-1,
            ],
        );
        let pz = self.b.ins().fmul(p, z);
        let small = self.mul_add(pz, x, x);
        // Large |x|: 1 - 2 / (exp(2|x|) + 1), with the sign of x.
        let two = self.fc(ty, 2.0);
        let a2 = self.b.ins().fmul(ax, two);
        let e = self.exp(ty, a2);
        let one = self.fc(ty, 1.0);
        let d = self.b.ins().fadd(e, one);
        let q = self.b.ins().fdiv(two, d);
        let mag = self.b.ins().fsub(one, q);
        let large = self.copysign(ty, mag, x);
        let lim = self.fc(ty, 0.625);
        let is_small = self.b.ins().fcmp(FloatCC::LessThan, ax, lim);
        self.fsel(ty, is_small, small, large)
    }

    /// `erf(x)`: the rational minimax approximation `x * P(x^2) / Q(x^2)` (degree 13 / 8, as
    /// in Eigen's and XLA's f32 erf) on `x` clamped to [-4, 4] (where erf rounds to +-1).
    /// Max relative error 3.3e-7 (under 3 ulp; `transcendental_error_bounds`) over the f32
    /// range; NaN stays NaN.
    pub fn erf(&mut self, ty: Type, x: Value) -> Value {
        let hi = self.fc(ty, 4.0);
        let lo = self.fc(ty, -4.0);
        let xc = self.clamp_hi(ty, x, hi);
        let xc = self.clamp_lo(ty, xc, lo);
        let z = self.b.ins().fmul(xc, xc);
        let p = self.poly(
            ty,
            z,
            &[
                -2.726_142_4e-10,
                2.770_681_5e-8,
                -2.101_024e-6,
                -5.692_506_2e-5,
                -7.349_906_4e-4,
                -2.954_6e-3,
                -1.609_603_3e-2,
            ],
        );
        let q = self.poly(
            ty,
            z,
            &[
                -1.45660715e-5,
                -2.133_740_5e-4,
                -1.682_827e-3,
                -7.373_329_3e-3,
                -1.426_473_9e-2,
            ],
        );
        let xp = self.b.ins().fmul(xc, p);
        self.b.ins().fdiv(xp, q)
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
    pub fn vloop(
        &mut self,
        n: usize,
        offs: &[Value],
        moving: &[bool],
        vbody: &mut dyn FnMut(&mut Self, &[Value]),
        sbody: &mut dyn FnMut(&mut Self, &[Value]),
    ) {
        let nv = n / 4;
        let vst: Vec<i64> = moving.iter().map(|&m| if m { 16 } else { 0 }).collect();
        self.loop_offs(nv as i64, offs, &vst, &mut |e, _i, o| vbody(e, o));
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
            self.loop_offs(rest as i64, &start, &sst, &mut |e, _i, o| sbody(e, o));
        }
    }

    /// Horizontal sum (or max) of an f32x4.
    pub fn hreduce(&mut self, v: Value, max: bool) -> Value {
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
            self.loop_offs(chunks as i64, &[doff, so], &[16, 16], &mut |e, _i, o| {
                let v = e.ld(types::I8X16, src, o[1]);
                e.st(v, dst, o[0]);
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
                let v = self.ld(ty, src, s);
                self.st(v, dst, d);
                done += w;
            }
        }
    }
}

/// `for i in lo..hi` with runtime bounds.
pub(crate) fn loop_range(e: &mut E, lo: Value, hi: Value, body: &mut dyn FnMut(&mut E, Value)) {
    let iv = e.b.declare_var(types::I64);
    e.b.def_var(iv, lo);
    let header = e.b.create_block();
    let bodyb = e.b.create_block();
    let exit = e.b.create_block();
    e.b.ins().jump(header, &[]);
    e.b.switch_to_block(header);
    let i = e.b.use_var(iv);
    let c = e.b.ins().icmp(IntCC::SignedLessThan, i, hi);
    e.b.ins().brif(c, bodyb, &[], exit, &[]);
    e.b.switch_to_block(bodyb);
    e.b.seal_block(bodyb);
    body(e, i);
    let i2 = e.b.ins().iadd_imm_s(i, 1);
    e.b.def_var(iv, i2);
    e.b.ins().jump(header, &[]);
    e.b.seal_block(header);
    e.b.switch_to_block(exit);
    e.b.seal_block(exit);
}

/// `if c { then() } else { els() }`.
pub(crate) fn if_else(
    e: &mut E,
    c: Value,
    then: &mut dyn FnMut(&mut E),
    els: &mut dyn FnMut(&mut E),
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

/// Copy `len` floats from `s` to `d`: `f32x4` groups of 4 (unrolled when short, else a
/// loop), then the tail.
pub(crate) fn copy_span(e: &mut E, s: Value, d: Value, len: usize) {
    let group = |e: &mut E, s: Value, d: Value, nv: usize| {
        let v: Vec<Value> = (0..nv)
            .map(|l| e.b.ins().load(F32X4, mf(), s, (l * 16) as i32))
            .collect();
        for (l, &x) in v.iter().enumerate() {
            e.b.ins().store(mf(), x, d, (l * 16) as i32);
        }
    };
    let nv = len / 4;
    if nv <= 16 {
        group(e, s, d, nv);
    } else {
        e.loop_offs((nv / 4) as i64, &[s, d], &[64, 64], &mut |e, _i, o| {
            group(e, o[0], o[1], 4)
        });
        let o = (nv / 4 * 64) as i64;
        let s2 = e.b.ins().iadd_imm_s(s, o);
        let d2 = e.b.ins().iadd_imm_s(d, o);
        group(e, s2, d2, nv % 4);
    }
    for t in nv * 4..len {
        let x = e.b.ins().load(types::F32, mf(), s, (t * 4) as i32);
        e.b.ins().store(mf(), x, d, (t * 4) as i32);
    }
}

/// Store the constant `x` (an `f32`) to floats `[from, to)` of `d` (vectors, then scalars).
pub(crate) fn fill(e: &mut E, d: Value, from: usize, to: usize, x: f32) {
    let v = e.fc(F32X4, x);
    let s = e.fc(types::F32, x);
    let mut k = from;
    while k + 4 <= to {
        e.b.ins().store(mf(), v, d, (k * 4) as i32);
        k += 4;
    }
    while k < to {
        e.b.ins().store(mf(), s, d, (k * 4) as i32);
        k += 1;
    }
}

/// Store zeros to `len` floats at `d`: unrolled when short, else an `f32x4` loop and a tail.
pub(crate) fn zero_span(e: &mut E, d: Value, len: usize) {
    if len <= 32 {
        fill(e, d, 0, len, 0.0);
        return;
    }
    let zv = e.fc(F32X4, 0.0);
    let z = e.ic(0);
    e.loop_offs((len / 16) as i64, &[z], &[64], &mut |e, _i, o| {
        let a = e.b.ins().iadd(d, o[0]);
        for l in 0..4 {
            e.b.ins().store(mf(), zv, a, l * 16);
        }
    });
    fill(e, d, len / 16 * 16, len, 0.0);
}

/// Lanes `[l0, l1, l2, l3]` of the 8 lanes of `a` (0-3) and `b` (4-7), two `f32x4`.
pub(crate) fn shuf(e: &mut E, a: Value, b: Value, lanes: [u8; 4]) -> Value {
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

// ---------------------------------------------------------------------------------------------
// Pools.

/// Nested loops over `dims` giving each loop index (i64).
pub(crate) fn loops_idx(
    e: &mut E,
    dims: &[usize],
    idx: &mut Vec<Value>,
    body: &mut dyn FnMut(&mut E, &[Value]),
) {
    if idx.len() == dims.len() {
        body(e, idx);
        return;
    }
    let d = dims[idx.len()];
    e.loop_n(d as i64, &mut |e, i| {
        idx.push(i);
        loops_idx(e, dims, idx, body);
        idx.pop();
    });
}
