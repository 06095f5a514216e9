//! Compile-time data of an int8 node, in this order:
//!
//! 0. per channel (padded to 16): static activations, the zero-point correction
//!    `-xz * sum(w of c)` (i32); dynamic, the weight sums `sum(w of c)` (i32); a pixel-rows
//!    conv has one such table per kernel-row range (`rows.rs`), the whole kernel's first,
//! 1. per channel: static, the scale products `xs * ws[c]` (f32); dynamic, `ws[c]`,
//! 2. static only: the activation parameter block (`crate::x64::asm::quantize`),
//!
//! then the form's data (from [`Int8Plan::form_data`] on): a matmul's weight panels; a conv's
//! patch tables for `pack_panels` (slot offsets, pixel offsets, contiguity flags) and its weight
//! tiles, and a pixel-rows conv's row table (`rows::row_table`); a depthwise conv's weights as
//! f32 `[channel][tap]`.

use super::rows::row_table;
use super::{Form, Int8Plan};
use crate::error::Result;
use crate::node::{base_info, NodeInfo};
use crate::ops::conv::ConvGeometry;
use crate::x64::asm::int8::Scheme;
use crate::x64::asm::int8_amx::{TILE_GROUPS, TILE_ROWS};
use crate::x64::asm::NR;
use crate::x64::kernel_plan::KernelPlan;
use optc_ir::quantized::QuantParams;
use optc_ir::Data;

fn le32<T: Copy>(v: &[T], f: impl Fn(T) -> [u8; 4]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// The parameter block of static activations.
pub(super) fn params_block(p: QuantParams) -> Vec<u8> {
    let mut v = vec![];
    v.extend(p.inverse().to_le_bytes());
    v.extend((p.zero as f32).to_le_bytes());
    v.extend((p.zero as u32).to_le_bytes());
    v.extend(p.scale.to_le_bytes());
    v
}

impl Int8Plan {
    /// Index of the form's first compile-time data object.
    pub fn form_data(&self) -> usize {
        if self.is_static() {
            3
        } else {
            2
        }
    }
}

pub(crate) fn derived(info: &NodeInfo, p: &KernelPlan, q: &Int8Plan) -> Result<Vec<Vec<u8>>> {
    let sub = base_info(info);
    let binfo = sub.as_ref().unwrap_or(info);
    let (Some(wt), Some(wst)) = (&binfo.consts[1], &binfo.consts[2]) else {
        return Err(info.err("int8 weights and weight scales must be constants"));
    };
    let (Data::I8(w), Some(ws)) = (wt.data(), wst.as_f32()) else {
        return Err(info.err("int8 weights must be i8 and weight scales f32"));
    };
    let ch = q.channels;
    let npad = q.padded_channels();
    let ws_of = |c: usize| ws[if ws.len() == 1 { 0 } else { c }];
    // Weights of channel c: a matmul column, a conv's output channel (contiguous).
    let per = w.len() / ch;
    let sums: Vec<i32> = match (&q.form, q.kernel_rows()) {
        // A pixel-rows conv: one table per kernel-row range (`rows.rs`), the whole kernel's
        // first, each the sums of its kernel rows' weights.
        (Form::Conv(g), Some(rows)) => {
            let taps = g.kh * g.kw;
            rows.ranges
                .iter()
                .flat_map(|&(lo, hi)| {
                    (0..npad).map(move |c| {
                        if c >= ch {
                            return 0;
                        }
                        let wc = &w[c * per..(c + 1) * per];
                        (0..g.cg)
                            .flat_map(|ci| (lo * g.kw..hi * g.kw).map(move |t| ci * taps + t))
                            .map(|i| wc[i] as i32)
                            .sum()
                    })
                })
                .collect()
        }
        _ => (0..npad)
            .map(|c| {
                if c >= ch {
                    0
                } else if let Form::MatMul = q.form {
                    (0..q.depth).map(|k| w[k * ch + c] as i32).sum()
                } else {
                    w[c * per..(c + 1) * per].iter().map(|&x| x as i32).sum()
                }
            })
            .collect(),
    };
    let mut v = vec![];
    match q.params {
        Some(par) => {
            let offsets: Vec<i32> = sums
                .iter()
                .map(|&s| (par.zero as i32).wrapping_mul(s).wrapping_neg())
                .collect();
            let scales: Vec<f32> = (0..npad)
                .map(|c| if c < ch { par.scale * ws_of(c) } else { 0.0 })
                .collect();
            v.push(le32(&offsets, i32::to_le_bytes));
            v.push(le32(&scales, f32::to_le_bytes));
            v.push(params_block(par));
        }
        None => {
            let wsp: Vec<f32> = (0..npad)
                .map(|c| if c < ch { ws_of(c) } else { 0.0 })
                .collect();
            v.push(le32(&sums, i32::to_le_bytes));
            v.push(le32(&wsp, f32::to_le_bytes));
        }
    }
    match &q.form {
        Form::MatMul => v.push(matmul_panels(q, w, p.n)),
        Form::Conv(g) => {
            v.extend(patch_tables(q, p, g));
            let mut tiles = weight_tiles(q, g, w);
            if q.scheme == Scheme::Tiles {
                // AMX kernels read 16 rows of a short last tile.
                tiles.resize(tiles.len() + 64 * TILE_ROWS, 0);
            }
            v.push(tiles);
            if let Some(rows) = q.kernel_rows() {
                v.push(row_table(
                    &rows,
                    q.planes_per_group() * g.kw,
                    q.scheme.panel_group_bytes(),
                    npad,
                ));
            }
        }
        Form::Depthwise(_) => v.push(le32(
            &w.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            f32::to_le_bytes,
        )),
    }
    Ok(v)
}

/// Store the low `bytes` bytes of `x` at `out[at..]`.
fn put(out: &mut [u8], at: usize, x: i8, bytes: usize) {
    let v = (x as i16).to_le_bytes();
    out[at..at + bytes].copy_from_slice(&v[..bytes]);
}

/// A matmul's `[K, N]` weights as 16-column panels `[panel][group][..]` (see
/// `crate::x64::asm::int8` for a group's layout), zero past K and N.
fn matmul_panels(q: &Int8Plan, w: &[i8], n: usize) -> Vec<u8> {
    let (k, groups) = (q.depth, q.groups);
    let pgb = q.scheme.panel_group_bytes();
    let eb = q.scheme.element_bytes();
    let npan = n.div_ceil(NR);
    let mut out = vec![0u8; npan * groups * pgb];
    for pan in 0..npan {
        for g in 0..groups {
            for j in 0..NR {
                let c = pan * NR + j;
                for e in 0..4 {
                    let kk = 4 * g + e;
                    if kk >= k || c >= n {
                        continue;
                    }
                    let at = (pan * groups + g) * pgb
                        + match q.scheme {
                            Scheme::WordPairs => 64 * (e / 2) + 4 * j + 2 * (e % 2),
                            _ => 4 * j + e,
                        };
                    put(&mut out, at, w[kk * n + c], eb);
                }
            }
        }
    }
    out
}

/// Slot `s` of a conv's K order: (dword plane, kh, kw); a pixel-rows conv's K order is (kh,
/// dword plane, kw), so that a range of kernel rows is a range of K groups (`rows.rs`).
fn slot(q: &Int8Plan, g: &ConvGeometry, s: usize) -> (usize, usize, usize) {
    if q.pixels {
        let per_row = q.planes_per_group() * g.kw;
        (s % per_row / g.kw, s / per_row, s % g.kw)
    } else {
        let taps = g.kh * g.kw;
        (s / taps, s % taps / g.kw, s % g.kw)
    }
}

/// `pack_panels`' tables over the quantized dword planes of one image: byte offset of each
/// slot (padded to whole K groups), of each output pixel's window origin, and per 4 pixels
/// whether they are contiguous (1), every other dword (2) or gathered (0).
fn patch_tables(q: &Int8Plan, p: &KernelPlan, g: &ConvGeometry) -> Vec<Vec<u8>> {
    let plane = g.hp * g.wp;
    let mut koff: Vec<i64> = (0..q.slots)
        .map(|s| {
            let (j, kh, kw) = slot(q, g, s);
            ((j * plane + kh * g.dh * g.wp + kw * g.dw) * 4) as i64
        })
        .collect();
    koff.resize(q.groups * q.slots_per_group(), 0);
    let np = p.n.div_ceil(NR) * NR;
    let pix: Vec<i64> = (0..np)
        .map(|x| {
            if x < p.n {
                let (oh, ow) = (x / g.ow, x % g.ow);
                ((oh * g.sh * g.wp + ow * g.sw) * 4) as i64
            } else {
                0
            }
        })
        .collect();
    // (A group's patches read from its first plane on: at least its own planes follow.)
    let src_bytes = (q.planes_per_group() * plane * 4) as i64;
    let max_koff = koff.iter().copied().max().unwrap_or(0);
    let contig: Vec<i64> = (0..np / 4)
        .map(|x| {
            let step = |d: i64| {
                (0..4).all(|l| {
                    let i = 4 * x + l;
                    i < p.n && pix[i] == pix[4 * x] + d * l as i64
                })
            };
            if step(4) {
                1
            } else if step(8) && pix[4 * x] + max_koff + 32 <= src_bytes {
                2
            } else {
                0
            }
        })
        .collect();
    let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    vec![bytes(&koff), bytes(&pix), bytes(&contig)]
}

/// A conv's weights `[M, C / groups, kh, kw]` as row tiles of [`Int8Plan::tile_rows`] over the
/// slot order of its patches, per conv group (the tile of rows from `r` at `r * groups *
/// row_group_bytes`; a conv group's last tile may be short): `[group][mr][..]`, or for AMX
/// tiles `[K tile][mr][16 groups x 4 bytes]` (rows of the A tile, 64 bytes apart).
fn weight_tiles(q: &Int8Plan, g: &ConvGeometry, w: &[i8]) -> Vec<u8> {
    let tr = q.tile_rows();
    let amx = q.scheme == Scheme::Tiles;
    let rgb = q.scheme.row_group_bytes();
    let eb = q.scheme.element_bytes();
    let per_dword = q.channels_per_dword();
    let spg = q.slots_per_group();
    let (m, cg, taps) = (g.m, g.cg, g.kh * g.kw);
    let mut out = vec![0u8; m * q.groups * rgb];
    let tiles = (0..g.groups).flat_map(|gi| {
        (0..g.mg.div_ceil(tr)).map(move |t| (gi * g.mg + t * tr, tr.min(g.mg - t * tr)))
    });
    for (row0, mr) in tiles {
        let base = row0 * q.groups * rgb;
        for grp in 0..q.groups {
            for r in 0..mr {
                let o = row0 + r;
                for sp in 0..spg {
                    let s = grp * spg + sp;
                    if s >= q.slots {
                        continue;
                    }
                    let (j, kh, kw) = slot(q, g, s);
                    for e in 0..per_dword {
                        let ci = per_dword * j + e;
                        if ci >= cg {
                            continue;
                        }
                        let x = w[(o * cg + ci) * taps + kh * g.kw + kw];
                        let at = if amx {
                            let kt = grp / TILE_GROUPS;
                            base + kt * mr * 64 + r * 64 + (grp % TILE_GROUPS) * 4 + e
                        } else {
                            base + grp * mr * rgb + r * rgb + sp * 4 + e * eb
                        };
                        put(&mut out, at, x, eb);
                    }
                }
            }
        }
    }
    out
}
