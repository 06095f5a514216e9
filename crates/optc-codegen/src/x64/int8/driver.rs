//! The code of an int8 node: the serial pre-pass (dynamic range and parameters, the
//! per-channel tables, the quantized activations) and the GEMM units (per K block: a conv's
//! patch panels, then one microkernel call per `mr x 16` tile).

use super::depthwise;
use super::rows::ROW_ENTRY_BYTES;
use super::{block_panels, dequantize, int8_key, pixel_key, plane_key, row_tiles, Form, Int8Plan};
use crate::builder::{if_else, tensor_flags, Emitter};
use crate::ops::conv::ConvGeometry;
use crate::x64::asm::int8::Scheme;
use crate::x64::asm::int8_amx::TileState;
use crate::x64::asm::quantize::{
    QuantizeKey, PARAM_INVERSE, PARAM_SCALE, PARAM_ZERO_F32, PARAM_ZERO_U32,
};
use crate::x64::asm::{Routine, NR};
use crate::x64::gemm::Unit;
use crate::x64::kernel_plan::KernelPlan;
use crate::x64::packing::{pack_panels, pack_panels_into};
use crate::x64::tasks::{part_range, KernelArgs};
use cranelift_codegen::ir::{condcodes::FloatCC, condcodes::IntCC, types, InstBuilder, Value};

/// Where the parameter block and the channel tables are: `(params, offsets, scales)`.
pub(super) fn tables(e: &mut Emitter, q: &Int8Plan, c: &KernelArgs) -> (Value, Value, Value) {
    if q.is_static() {
        (c.extra[2], c.extra[0], c.extra[1])
    } else {
        let o = e.b.ins().iadd_imm_s(c.scratch, q.offsets_at() as i64);
        let s = e.b.ins().iadd_imm_s(c.scratch, q.scales_at() as i64);
        (c.scratch, o, s)
    }
}

fn call(e: &mut Emitter, c: &KernelArgs, r: Routine, args: &[Value]) {
    let f = c.microkernels[&r];
    e.b.ins().call(f, args);
}

/// Serial work before the tasks: the dynamic activation parameters (one range pass, then
/// `QuantParams::from_range` in scalar code) and channel tables, then the activations
/// quantized into scratch (matmul rows; conv dword planes) unless that runs in parallel
/// parts ([`emit_prepare`]).
pub(in crate::x64) fn emit_pre(e: &mut Emitter, p: &KernelPlan, q: &Int8Plan, c: &KernelArgs) {
    let (params, offsets, scales) = tables(e, q, c);
    let f32t = types::F32;
    if !q.is_static() {
        let n = e.int_const(q.x_numel as i64);
        let out = e.b.ins().iadd_imm_s(c.scratch, 16);
        call(
            e,
            c,
            Routine::Quantize(QuantizeKey::Range),
            &[c.ins[0], n, out],
        );
        let lo = e.b.ins().load(f32t, tensor_flags(), c.scratch, 16);
        let hi = e.b.ins().load(f32t, tensor_flags(), c.scratch, 20);
        // scale = (hi - lo) / 255, 1 when 0; zero = clamp(round_half_even(-lo / scale), 0,
        // 255) (a NaN gives 0).
        let span = e.b.ins().fsub(hi, lo);
        let d255 = e.float_const(f32t, 255.0);
        let s0 = e.b.ins().fdiv(span, d255);
        let zero_f = e.float_const(f32t, 0.0);
        let one = e.float_const(f32t, 1.0);
        let is0 = e.b.ins().fcmp(FloatCC::Equal, s0, zero_f);
        let scale = e.b.ins().select(is0, one, s0);
        let nlo = e.b.ins().fneg(lo);
        let t = e.b.ins().fdiv(nlo, scale);
        let t = e.b.ins().nearest(t);
        let zi = e.b.ins().fcvt_to_uint_sat(types::I32, t);
        let c255 = e.b.ins().iconst(types::I32, 255);
        let zi = e.b.ins().umin(zi, c255);
        let inv = e.b.ins().fdiv(one, scale);
        let zf = e.b.ins().fcvt_from_uint(f32t, zi);
        let fl = tensor_flags();
        e.b.ins().store(fl, inv, params, PARAM_INVERSE);
        e.b.ins().store(fl, zf, params, PARAM_ZERO_F32);
        e.b.ins().store(fl, zi, params, PARAM_ZERO_U32);
        e.b.ins().store(fl, scale, params, PARAM_SCALE);
        // offsets[c] = -(zero * sums[c]) (wrapping), scales[c] = scale * ws[c].
        let (sums, ws) = (c.extra[0], c.extra[1]);
        let z = e.int_const(0);
        // (Every kernel-row range's table of a pixel-rows conv, `rows.rs`.)
        let tables = (q.padded_channels() * q.offset_tables()) as i64;
        e.loop_offsets(tables, &[z], &[4], &mut |e, _i, o| {
            let s = e.load(types::I32, sums, o[0]);
            let prod = e.b.ins().imul(s, zi);
            let neg = e.b.ins().ineg(prod);
            e.store(neg, offsets, o[0]);
        });
        e.loop_offsets(q.padded_channels() as i64, &[z], &[4], &mut |e, _i, o| {
            let w = e.load(f32t, ws, o[0]);
            let v = e.b.ins().fmul(scale, w);
            e.store(v, scales, o[0]);
        });
    }
    if q.prepare_parts(p) < 2 {
        let z = e.int_const(0);
        quantize_part(e, p, q, c, z, 1);
    }
}

/// Part `t` of the activations' quantization split into [`Int8Plan::prepare_parts`] parts.
pub(in crate::x64) fn emit_prepare(
    e: &mut Emitter,
    p: &KernelPlan,
    q: &Int8Plan,
    c: &KernelArgs,
    t: Value,
) {
    quantize_part(e, p, q, c, t, q.prepare_parts(p));
}

/// Image `img`'s shared patch panels (see [`Int8Plan::shared`]): `[panel][K group]`.
fn shared_panels(
    e: &mut Emitter,
    p: &KernelPlan,
    q: &Int8Plan,
    c: &KernelArgs,
    img: Value,
) -> Value {
    let panels = e.b.ins().iadd_imm_s(c.scratch, q.panels_at(p) as i64);
    let io = e.b.ins().imul_imm_s(img, q.panel_image_bytes(p) as i64);
    e.b.ins().iadd(panels, io)
}

/// Quantize part `t` of `parts` of the activations into scratch: matmul rows, or conv dword
/// planes (over all images).
fn quantize_part(
    e: &mut Emitter,
    p: &KernelPlan,
    q: &Int8Plan,
    c: &KernelArgs,
    t: Value,
    parts: usize,
) {
    let (params, _, _) = tables(e, q, c);
    let act = e.b.ins().iadd_imm_s(c.scratch, q.activations_at() as i64);
    match &q.form {
        Form::MatMul => {
            let key = QuantizeKey::Rows {
                element_bytes: q.scheme.element_bytes(),
                k: q.depth,
            };
            let (r0, r1) = part_range(e, t, p.m, parts);
            let rows = e.b.ins().isub(r1, r0);
            let xo = e.b.ins().imul_imm_s(r0, (q.depth * 4) as i64);
            let x = e.b.ins().iadd(c.ins[0], xo);
            let ao = e.b.ins().imul_imm_s(r0, q.lda as i64);
            let a = e.b.ins().iadd(act, ao);
            let ldd = e.int_const(q.lda as i64);
            call(e, c, Routine::Quantize(key), &[x, a, rows, ldd, params]);
        }
        Form::Conv(g) => {
            // Dword plane `i` (of all images): plane `j = i % ppg` of conv group `i / ppg`
            // counted over all images (images follow each other in the input too), channels
            // from `cg (i / ppg) + per j`; a group's last plane may hold fewer channels.
            let per = q.channels_per_dword();
            let ppg = q.planes_per_group() as i64;
            let tail = g.cg % per;
            let (sh, sw) = q.subsample.map_or((g.h, g.w), |s| (s.h, s.w));
            let src_plane = (sh * sw * q.input_bytes()) as i64;
            let dst_plane = (g.hp * g.wp * 4) as i64;
            let (i0, i1) = part_range(e, t, g.n * q.planes, parts);
            e.loop_range(i0, i1, &mut |e, i| {
                let gi = e.b.ins().udiv_imm_u(i, ppg);
                let j = e.b.ins().urem_imm_u(i, ppg);
                let so = e.b.ins().imul_imm_s(gi, g.cg as i64 * src_plane);
                let so2 = e.b.ins().imul_imm_s(j, per as i64 * src_plane);
                let so = e.b.ins().iadd(so, so2);
                let s = e.b.ins().iadd(c.ins[0], so);
                let d = e.b.ins().imul_imm_s(i, dst_plane);
                let d = e.b.ins().iadd(act, d);
                let plane = |e: &mut Emitter, channels: usize| {
                    let key = Routine::Quantize(QuantizeKey::Plane(plane_key(q, g, channels)));
                    call(e, c, key, &[s, d, params]);
                };
                if tail == 0 {
                    plane(e, per);
                } else if g.cg < per {
                    plane(e, tail);
                } else {
                    let last = e.b.ins().icmp_imm_s(IntCC::Equal, j, ppg - 1);
                    if_else(e, last, &mut |e| plane(e, tail), &mut |e| plane(e, per));
                }
                if q.shared {
                    // This plane's taps (K groups `j kh kw ..`) of every panel of its image.
                    let taps = g.kh * g.kw;
                    let img = e.b.ins().udiv_imm_u(i, q.planes as i64);
                    let pl = e.b.ins().urem_imm_u(i, q.planes as i64);
                    let xo = e.b.ins().imul_imm_s(img, q.planes as i64 * dst_plane);
                    let xb = e.b.ins().iadd(act, xo);
                    let panels = shared_panels(e, p, q, c, img);
                    let k0 = e.b.ins().imul_imm_s(pl, taps as i64);
                    let ko =
                        e.b.ins()
                            .imul_imm_s(k0, q.scheme.panel_group_bytes() as i64);
                    let dst = e.b.ins().iadd(panels, ko);
                    let sub = KernelArgs {
                        ins: c.ins,
                        out: c.out,
                        outs: c.outs,
                        scratch: c.scratch,
                        extra: &c.extra[q.form_data()..],
                        microkernels: c.microkernels,
                    };
                    let z = e.int_const(0);
                    let panel_bytes = (q.groups * q.scheme.panel_group_bytes()) as i64;
                    let npan = p.n.div_ceil(NR);
                    pack_panels_into(e, &sub, dst, panel_bytes, xb, z, npan, k0, taps, None);
                }
            });
        }
        Form::Depthwise(_) => {}
    }
}

/// One K block `[k0, k0 + kc)` of groups: `first` starts from the channel offsets, `last`
/// dequantizes.
#[derive(Clone, Copy)]
struct Block {
    k0: Value,
    kc: usize,
    first: bool,
    last: bool,
}

/// One work unit of an int8 node.
pub(in crate::x64) fn emit_unit(
    e: &mut Emitter,
    p: &KernelPlan,
    q: &Int8Plan,
    c: &KernelArgs,
    u: Unit,
) {
    if let Form::Depthwise(g) = &q.form {
        depthwise::emit_unit(e, p, q, g, c, u);
        return;
    }
    // AMX kernels run on tiles configured once for the unit.
    if let (true, Form::Conv(g)) = (q.pixels, &q.form) {
        emit_pixel_tiles(e, p, q, g, c, u);
        return;
    }
    let tiles = q.scheme == Scheme::Tiles;
    if tiles {
        call(e, c, Routine::Tiles(TileState::Configure), &[]);
    }
    emit_blocks(e, p, q, c, u);
    if tiles {
        call(e, c, Routine::Tiles(TileState::Release), &[]);
    }
}

/// A unit of a conv with pixels as rows (`Contraction::ConvPixels`): per block of its output
/// channels ([`block_panels`]; the block's weights stay in cache), every output row of its
/// columns (the unit's columns are whole rows), each row in the tiles of [`row_tiles`], a
/// tile one whole K read from the quantized planes in place.
fn emit_pixel_tiles(
    e: &mut Emitter,
    p: &KernelPlan,
    q: &Int8Plan,
    g: &ConvGeometry,
    c: &KernelArgs,
    u: Unit,
) {
    let Unit {
        img,
        col0,
        ncols,
        row0,
        mrows,
        ..
    } = u;
    let pgb = q.scheme.panel_group_bytes() as i64;
    let rgb = q.scheme.row_group_bytes() as i64;
    let fd = q.form_data();
    let (_params, offsets, scales) = tables(e, q, c);
    // The image's planes at the unit's first output row.
    let act = e.b.ins().iadd_imm_s(c.scratch, q.activations_at() as i64);
    let plane = (g.hp * g.wp * 4) as i64;
    let io = e.b.ins().imul_imm_s(img, q.planes as i64 * plane);
    let planes = e.b.ins().iadd(act, io);
    let oy0 = e.b.ins().udiv_imm_u(col0, g.ow as i64);
    let yo = e.b.ins().imul_imm_s(oy0, (g.sh * g.wp * 4) as i64);
    let abase = e.b.ins().iadd(planes, yo);
    let wo = e.b.ins().imul_imm_s(row0, q.groups as i64 * rgb);
    let wbase = e.b.ins().iadd(c.extra[fd + 3], wo);
    // Output (and residual) offset of the unit's first channel and column (`out_bytes` an
    // element: f32, or u8 when the tiles quantize; a residual is never u8's).
    let out_bytes = q.output_bytes() as i64;
    let ldc = p.n as i64 * out_bytes;
    let io = e.b.ins().imul_imm_s(img, p.m as i64 * ldc);
    let ro = e.b.ins().imul_imm_s(row0, ldc);
    let co = e.b.ins().imul_imm_s(col0, out_bytes);
    let oo = e.b.ins().iadd(io, ro);
    let obase = e.b.ins().iadd(oo, co);
    let cho = e.b.ins().imul_imm_s(row0, 4);
    let bias = q.bias_port.or(q.step_bias_port).map(|i| c.ins[i]);
    let res = q.res_port.map(|i| c.ins[i]);
    let lda = e.int_const(q.groups as i64 * pgb);
    let koff = c.extra[fd];
    // The unit's first output row's entry in the row table (`rows::row_table`).
    let rto = e.b.ins().imul_imm_s(oy0, ROW_ENTRY_BYTES as i64);
    let row_table = e.b.ins().iadd(c.extra[fd + 4], rto);
    let ldcv = e.int_const(ldc);
    let dq = Some(dequantize(q));
    let tiles = row_tiles(g.ow);
    // The tiles of `panels` 16-channel panels from channel offset `ch` (bytes of a table
    // entry: 4 per channel).
    let block = |e: &mut Emitter, panels: usize, ch: Value| {
        let wb = e.b.ins().imul_imm_s(ch, q.groups as i64 * rgb / 4);
        let w = e.b.ins().iadd(wbase, wb);
        let cb = e.b.ins().imul_imm_s(ch, ldc);
        let cb = e.b.ins().ushr_imm_u(cb, 2);
        let ob = e.b.ins().iadd(obase, cb);
        let tc = e.b.ins().iadd(cho, ch);
        let po = e.b.ins().iadd(offsets, tc);
        let ps = e.b.ins().iadd(scales, tc);
        let pbias = bias.map(|bv| e.b.ins().iadd(bv, tc));
        // Output row `y` of the unit: input bytes `ay`, output bytes `oyb` from its first.
        let z = e.int_const(0);
        e.loop_offsets(
            (ncols / g.ow) as i64,
            &[z, z, z],
            &[
                (g.sh * g.wp * 4) as i64,
                g.ow as i64 * out_bytes,
                ROW_ENTRY_BYTES as i64,
            ],
            &mut |e, _y, o| {
                // The row's kernel rows: its first K group (in a weight panel and in the
                // offset table), their count and its channel table.
                let entry = e.b.ins().iadd(row_table, o[2]);
                let field = |e: &mut Emitter, i: i32| {
                    e.b.ins().load(types::I64, tensor_flags(), entry, 8 * i)
                };
                let wskip = field(e, 0);
                let kskip = field(e, 1);
                let groups = field(e, 2);
                let tskip = field(e, 3);
                let w = e.b.ins().iadd(w, wskip);
                let koff = e.b.ins().iadd(koff, kskip);
                let po = e.b.ins().iadd(po, tskip);
                for &(x0, mr) in &tiles {
                    let key = pixel_key(q, x0, mr, panels, false, true, dq.clone());
                    let f = c.microkernels[&Routine::Int8(key)];
                    let ay = e.b.ins().iadd_imm_s(o[0], (x0 * g.sw * 4) as i64);
                    let a = e.b.ins().iadd(abase, ay);
                    let oyb = e.b.ins().iadd_imm_s(o[1], x0 as i64 * out_bytes);
                    let ot = e.b.ins().iadd(ob, oyb);
                    let pc = e.b.ins().iadd(c.out, ot);
                    let pr = match res {
                        Some(rv) => e.b.ins().iadd(rv, ot),
                        None => pc,
                    };
                    e.b.ins().call(
                        f,
                        &[
                            a,
                            w,
                            pc,
                            groups,
                            lda,
                            koff,
                            ldcv,
                            po,
                            ps,
                            pbias.unwrap_or(pc),
                            pr,
                        ],
                    );
                }
            },
        );
    };
    let full = block_panels(g.ow);
    let wide = NR * full;
    let z = e.int_const(0);
    e.loop_offsets(
        (mrows / wide) as i64,
        &[z],
        &[(wide * 4) as i64],
        &mut |e, _i, o| block(e, full, o[0]),
    );
    let rest = mrows % wide / NR;
    if rest > 0 {
        let ch = e.int_const((mrows / wide * wide * 4) as i64);
        block(e, rest, ch);
    }
}

/// The K blocks of a GEMM unit.
fn emit_blocks(e: &mut Emitter, p: &KernelPlan, q: &Int8Plan, c: &KernelArgs, u: Unit) {
    let kbs = p.kblocks();
    let nkb = kbs.len();
    let z = e.int_const(0);
    let block = |k0, kc, first, last| Block {
        k0,
        kc,
        first,
        last,
    };
    if nkb == 1 {
        emit_block(e, p, q, c, u, block(z, kbs[0], true, true));
        return;
    }
    let kb = kbs[0];
    emit_block(e, p, q, c, u, block(z, kb, true, false));
    let kstart = e.int_const(kb as i64);
    e.loop_offsets(nkb as i64 - 2, &[kstart], &[kb as i64], &mut |e, _i, o| {
        emit_block(e, p, q, c, u, block(o[0], kb, false, false));
    });
    let k0 = e.int_const((p.k - kbs[nkb - 1]) as i64);
    emit_block(e, p, q, c, u, block(k0, kbs[nkb - 1], false, true));
}

fn emit_block(e: &mut Emitter, p: &KernelPlan, q: &Int8Plan, c: &KernelArgs, u: Unit, b: Block) {
    let Unit {
        pack,
        img,
        col0,
        ncols,
        row0,
        mrows,
    } = u;
    let Block {
        k0,
        kc,
        first,
        last,
    } = b;
    let pgb = q.scheme.panel_group_bytes() as i64;
    let rgb = q.scheme.row_group_bytes() as i64;
    let npan = ncols.div_ceil(NR);
    let full = ncols / NR;
    let nr_last = ncols % NR;
    let fd = q.form_data();
    let (_params, offsets, scales) = tables(e, q, c);
    let act = e.b.ins().iadd_imm_s(c.scratch, q.activations_at() as i64);
    let matmul = matches!(q.form, Form::MatMul);
    // B panel j of this block at `bbase + j * bstep`.
    let (bbase, bstep) = match &q.form {
        Form::MatMul => {
            // panels[col0 / 16 + j][k0..][pgb]
            let pan = e.b.ins().udiv_imm_u(col0, NR as i64);
            let o = e.b.ins().imul_imm_s(pan, q.groups as i64 * pgb);
            let ko = e.b.ins().imul_imm_s(k0, pgb);
            let o = e.b.ins().iadd(o, ko);
            (e.b.ins().iadd(c.extra[fd], o), q.groups as i64 * pgb)
        }
        Form::Conv(g) => {
            let plane = (g.hp * g.wp * 4) as i64;
            let io = e.b.ins().imul_imm_s(img, q.planes as i64 * plane);
            let mut xb = e.b.ins().iadd(act, io);
            if g.groups > 1 {
                // The unit's rows are conv group `row0 / mg`'s: its planes.
                let gi = e.b.ins().udiv_imm_u(row0, g.mg as i64);
                let go =
                    e.b.ins()
                        .imul_imm_s(gi, q.planes_per_group() as i64 * plane);
                xb = e.b.ins().iadd(xb, go);
            }
            let spg = q.slots_per_group();
            let s0 = e.b.ins().imul_imm_s(k0, spg as i64);
            if q.unpacked {
                // Panel j's slot s: 16 pixels from column col0 + 16 j of plane s.
                let co = e.b.ins().imul_imm_s(col0, 4);
                let so = e.b.ins().imul_imm_s(s0, plane);
                let o = e.b.ins().iadd(co, so);
                (e.b.ins().iadd(xb, o), (NR * 4) as i64)
            } else if q.shared {
                // panels[img][col0 / 16 + j][k0..]
                let panels = shared_panels(e, p, q, c, img);
                let pan = e.b.ins().udiv_imm_u(col0, NR as i64);
                let panel_bytes = (q.groups as i64) * pgb;
                let jo = e.b.ins().imul_imm_s(pan, panel_bytes);
                let ko = e.b.ins().imul_imm_s(k0, pgb);
                let o = e.b.ins().iadd(jo, ko);
                (e.b.ins().iadd(panels, o), panel_bytes)
            } else {
                let sub = KernelArgs {
                    ins: c.ins,
                    out: c.out,
                    outs: c.outs,
                    scratch: c.scratch,
                    extra: &c.extra[fd..],
                    microkernels: c.microkernels,
                };
                pack_panels(e, &sub, pack, xb, col0, npan, s0, kc * spg, None);
                (pack, kc as i64 * pgb)
            }
        }
        Form::Depthwise(_) => unreachable!("depthwise units are not GEMM blocks"),
    };
    // (A matmul's output is f32: its column offsets are its channel tables' too.)
    let out_bytes = q.output_bytes() as i64;
    let ldc = p.n as i64 * out_bytes;
    let io = e.b.ins().imul_imm_s(img, p.m as i64 * ldc);
    let co = e.b.ins().imul_imm_s(col0, out_bytes);
    let cbase = e.b.ins().iadd(io, co);
    let kcv = e.int_const(kc as i64);
    // (An unpacked conv's planes are `lda` apart.)
    let lda = match &q.form {
        Form::Conv(g) if q.unpacked => g.hp * g.wp * 4,
        _ => q.lda,
    };
    let ldav = e.int_const(lda as i64);
    let ldcv = e.int_const(ldc);
    let dq = last.then(|| dequantize(q));
    let bias = q.bias_port.or(q.step_bias_port).map(|i| c.ins[i]);
    let res = q.res_port.map(|i| c.ins[i]);
    // A tile of `mr` rows from row `row` (a Value), panel at `bp`, columns from `colb` (bytes
    // from col0).
    let tile = |e: &mut Emitter, mr: usize, partial: bool, row: Value, bp: Value, colb: Value| {
        let key = int8_key(q, mr, 1, partial, first, dq.clone());
        let f = c.microkernels[&Routine::Int8(key)];
        let pa = if matmul {
            let ro = e.b.ins().imul_imm_s(row, q.lda as i64);
            let ko = e.b.ins().imul_imm_s(k0, rgb);
            let o = e.b.ins().iadd(ro, ko);
            e.b.ins().iadd(act, o)
        } else {
            let ro = e.b.ins().imul_imm_s(row, q.groups as i64 * rgb);
            let ko = e.b.ins().imul_imm_s(k0, mr as i64 * rgb);
            let o = e.b.ins().iadd(ro, ko);
            e.b.ins().iadd(c.extra[fd + 3], o)
        };
        let ro = e.b.ins().imul_imm_s(row, ldc);
        let coff = e.b.ins().iadd(cbase, ro);
        let coff = e.b.ins().iadd(coff, colb);
        let pc = e.b.ins().iadd(c.out, coff);
        let nr = e.int_const(if partial { nr_last } else { NR } as i64);
        // Channel byte offset: the column (matmul) or the row (conv).
        let cho = if matmul {
            e.b.ins().iadd(co, colb)
        } else {
            e.b.ins().imul_imm_s(row, 4)
        };
        let po = e.b.ins().iadd(offsets, cho);
        let ps = e.b.ins().iadd(scales, cho);
        let pb = match bias {
            Some(bv) => e.b.ins().iadd(bv, cho),
            None => pc,
        };
        let pr = match res {
            Some(rv) => e.b.ins().iadd(rv, coff),
            None => pc,
        };
        e.b.ins()
            .call(f, &[pa, bp, pc, kcv, ldav, ldcv, nr, po, ps, pb, pr]);
    };
    // One M block of `mc` rows from `r0`: every panel, row tiles of `tr`.
    let tr = q.tile_rows();
    let mblock = |e: &mut Emitter, mc: usize, r0: Value| {
        let panel = |e: &mut Emitter, partial: bool, bp: Value, colb: Value| {
            let nfull = mc / tr;
            e.loop_offsets(nfull as i64, &[r0], &[tr as i64], &mut |e, _i, o| {
                tile(e, tr, partial, o[0], bp, colb)
            });
            if !mc.is_multiple_of(tr) {
                let r = e.b.ins().iadd_imm_s(r0, (nfull * tr) as i64);
                tile(e, mc % tr, partial, r, bp, colb);
            }
        };
        let zc = e.int_const(0);
        e.loop_offsets(
            full as i64,
            &[bbase, zc],
            &[bstep, NR as i64 * out_bytes],
            &mut |e, _j, o| panel(e, false, o[0], o[1]),
        );
        if nr_last > 0 {
            let bp = e.b.ins().iadd_imm_s(bbase, full as i64 * bstep);
            let colb = e.int_const((full * NR) as i64 * out_bytes);
            panel(e, true, bp, colb);
        }
    };
    let mcb = p.mc;
    let nmb = mrows / mcb;
    e.loop_offsets(nmb as i64, &[row0], &[mcb as i64], &mut |e, _i, o| {
        mblock(e, mcb, o[0])
    });
    if !mrows.is_multiple_of(mcb) {
        let r = e.b.ins().iadd_imm_s(row0, (nmb * mcb) as i64);
        mblock(e, mrows % mcb, r);
    }
}
