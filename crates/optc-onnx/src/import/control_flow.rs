//! ONNX control flow: `If`, `Loop` and `Scan`, imported into optc's static dataflow IR.
//!
//! Bodies are imported inline, in the scope of the node that holds them (they read outer
//! values by name):
//! - `If` with a condition known at compile time (a constant, or a value the shape folding
//!   computes, as in models that branch on an input's rank or on a sample rate given with
//!   `--input`): only the branch taken is imported. With a condition computed at run time,
//!   both branches are imported and each output is selected with `where` (when the
//!   condition depends only on inputs whose values the caller gave, `optc run --input`,
//!   those inputs are bound instead and the condition folds): both run, so the
//!   branches must produce outputs of the same type and shape (else an error names the node
//!   and the two types). A branch that cannot be imported for these shapes (silero-vad's
//!   8 kHz LSTM fed 16 kHz frames) is left out: the other branch's outputs pass through an
//!   `Op::Guard` of the condition, which fails the run that takes it, and a warning says so.
//! - `Loop` whose trip count and condition are known at compile time, and `Scan` (its
//!   length is the scan inputs' static extent): unrolled, one copy of the body per
//!   iteration, up to [`MAX_UNROLL`] iterations. A loop whose condition is computed at run
//!   time is refused with an error that says so.

use super::{import_nodes, norm_axis, want_const, Ctx, Val, R};
use crate::proto::{tensor_from_proto, Attrs};
use optc_ir::{DType, Op, SliceDim, Tensor};
use tract_onnx::pb;

/// Most iterations a `Loop` or `Scan` is unrolled to.
pub(super) const MAX_UNROLL: usize = 1024;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    match node.op_type.as_str() {
        "If" => convert_if(ctx, node, name),
        "Loop" => convert_loop(ctx, node, name),
        "Scan" => convert_scan(ctx, node, name),
        op => Err(format!("{op} is not a control-flow op")),
    }
}

fn body<'a>(node: &'a pb::NodeProto, attr: &str) -> R<&'a pb::GraphProto> {
    Attrs { node }
        .get(attr)
        .and_then(|a| a.g.as_ref())
        .ok_or_else(|| format!("attribute '{attr}' (a graph) is missing"))
}

/// Import `graph` as a body: its inputs bound to `args`, outer values visible, its own
/// names dropped again afterwards. Returns its outputs.
fn run_body(ctx: &mut Ctx, graph: &pb::GraphProto, prefix: &str, args: &[Val]) -> R<Vec<Val>> {
    if graph.input.len() != args.len() {
        return Err(format!(
            "the body '{prefix}' declares {} input(s), {} are passed to it",
            graph.input.len(),
            args.len()
        ));
    }
    let saved = ctx.env.clone();
    for (inp, v) in graph.input.iter().zip(args) {
        ctx.env.insert(inp.name.clone(), v.clone());
    }
    for p in &graph.initializer {
        let t = tensor_from_proto(p, &format!("initializer '{}' of '{prefix}'", p.name))?;
        ctx.env
            .insert(p.name.clone(), Val::constant(t, p.name.clone()));
    }
    let r = import_nodes(ctx, graph, &format!("{prefix}/"));
    let outs = r.and_then(|()| {
        graph
            .output
            .iter()
            .map(|o| {
                ctx.env.get(&o.name).cloned().ok_or_else(|| {
                    format!(
                        "output '{}' of the body '{prefix}' is not produced by it",
                        o.name
                    )
                })
            })
            .collect::<R<Vec<Val>>>()
    });
    ctx.env = saved;
    outs
}

/// The single boolean of a condition known at compile time.
fn known_bool(t: &Tensor, what: &str) -> R<bool> {
    let v = t.to_f64_vec();
    if v.len() != 1 {
        return Err(format!(
            "{what} must hold one element, it has shape {:?}",
            t.shape()
        ));
    }
    Ok(v[0] != 0.0)
}

fn convert_if(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let cond = ctx
        .input(node, 0)
        .ok_or("the condition (input #0) is missing")?;
    let then_branch = body(node, "then_branch")?;
    let else_branch = body(node, "else_branch")?;
    let check_count = |outs: &[Val], which: &str| -> R<()> {
        if outs.len() != node.output.len() {
            return Err(format!(
                "the {which} produces {} output(s), the node has {}",
                outs.len(),
                node.output.len()
            ));
        }
        Ok(())
    };
    if let Some(t) = cond.as_const() {
        let take_then = known_bool(t, "the condition")?;
        let (branch, which) = if take_then {
            (then_branch, "then_branch")
        } else {
            (else_branch, "else_branch")
        };
        let outs = run_body(ctx, branch, &format!("{name}/{which}"), &[])?;
        check_count(&outs, which)?;
        return Ok(outs.into_iter().map(Some).collect());
    }
    // A condition computed from inputs whose values were given: import again with those
    // inputs bound, so that the condition is known (`import_model` retries).
    let behind = ctx.inputs_behind(&cond);
    if !behind.is_empty() && behind.iter().all(|i| ctx.known_inputs.contains(i)) {
        for i in &behind {
            want_const(i);
        }
        return Err(format!(
            "the condition depends on the input(s) {} given as values; they are bound",
            behind.join(", ")
        ));
    }
    // A condition computed at run time: both branches, each output selected.
    let cty = ctx.ty(&cond);
    if cty.dtype != DType::Bool || cty.numel() != 1 {
        return Err(format!(
            "the condition must be one bool, it is {cty} (and is computed at run time)"
        ));
    }
    let t = branch(ctx, then_branch, &format!("{name}/then_branch"))?;
    let e = branch(ctx, else_branch, &format!("{name}/else_branch"))?;
    let c = if cty.shape.is_empty() {
        cond
    } else {
        ctx.emit1(
            &format!("{name}/condition"),
            Op::Reshape { shape: vec![] },
            &[cond],
            false,
        )?
    };
    let out_name = |k: usize| {
        if k == 0 {
            name.to_string()
        } else {
            format!("{name}:{k}")
        }
    };
    // A branch that cannot be imported for these shapes (an LSTM of the other sample rate,
    // a reshape that only fits the other input length) fails the run that takes it, not
    // the compile: the other branch's outputs (the then branch's when `expect`) pass through
    // a guard of the condition.
    let guarded = |ctx: &mut Ctx, kept: Vec<Val>, why: String, expect: bool| {
        let (good, bad) = if expect {
            ("then_branch", "else_branch")
        } else {
            ("else_branch", "then_branch")
        };
        check_count(&kept, good)?;
        super::warn(format!(
            "node '{name}' (If): the {bad} cannot be compiled for these input shapes \
             ({why}); only the {good} is compiled, and a run whose condition selects the \
             {bad} fails"
        ));
        kept.into_iter()
            .enumerate()
            .map(|(k, v)| {
                ctx.emit1(
                    &out_name(k),
                    Op::Guard {
                        expect,
                        length: false,
                    },
                    &[c.clone(), v],
                    false,
                )
                .map(Some)
            })
            .collect()
    };
    let (t, e) = match (t, e) {
        (Ok(t), Ok(e)) => (t, e),
        (Err(te), Err(ee)) => {
            return Err(format!(
                "neither branch can be imported: then_branch: {te}; else_branch: {ee}"
            ))
        }
        (Ok(kept), Err(why)) => return guarded(ctx, kept, why, true),
        (Err(why), Ok(kept)) => return guarded(ctx, kept, why, false),
    };
    check_count(&t, "then_branch")?;
    check_count(&e, "else_branch")?;
    let mut outs = Vec::with_capacity(t.len());
    for (k, (a, b)) in t.into_iter().zip(e).enumerate() {
        let (ta, tb) = (ctx.ty(&a), ctx.ty(&b));
        if ta != tb {
            for i in &behind {
                want_const(i);
            }
            return Err(format!(
                "the condition is computed at run time, so both branches run and one output \
                 is selected, but output #{k} is {ta} in then_branch and {tb} in else_branch \
                 (give the inputs the condition depends on as values, e.g. `--input NAME=x.npy`, \
                 so that it is known at compile time)"
            ));
        }
        outs.push(Some(ctx.emit1(
            &out_name(k),
            Op::Where,
            &[c.clone(), a, b],
            false,
        )?));
    }
    Ok(outs)
}

/// Import a branch of an `If` whose condition is computed at run time. `Ok(Err(reason))`:
/// it cannot be imported for these shapes, which only matters if it is taken; `Err`: an
/// error of the whole import (the branch needs the value of an input the caller gave, which
/// a retry of the import binds).
fn branch(ctx: &mut Ctx, graph: &pb::GraphProto, prefix: &str) -> R<Result<Vec<Val>, String>> {
    let wanted = super::wanted_count();
    match run_body(ctx, graph, prefix, &[]) {
        Ok(outs) => Ok(Ok(outs)),
        Err(e) if super::wanted_since(wanted, &ctx.known_inputs) => Err(e),
        Err(e) => Ok(Err(e)),
    }
}

/// The declared shape of a body input when it is a rank-0 or one-element rank-1 tensor
/// (a loop's iteration number and condition are either).
fn scalar_shape(v: &pb::ValueInfoProto) -> Vec<usize> {
    use pb::tensor_shape_proto::dimension::Value as DV;
    let dims = v
        .r#type
        .as_ref()
        .and_then(|t| t.value.as_ref())
        .and_then(|t| match t {
            pb::type_proto::Value::TensorType(t) => t.shape.as_ref(),
        })
        .map(|s| s.dim.iter().map(|d| d.value.clone()).collect::<Vec<_>>());
    match dims.as_deref() {
        Some([Some(DV::DimValue(1))]) => vec![1],
        _ => vec![],
    }
}

/// Stack per-iteration values along a new axis `axis` (`Loop`'s and `Scan`'s scan outputs).
fn stack(ctx: &mut Ctx, name: &str, items: Vec<Val>, axis: usize) -> R<Val> {
    let mut parts = Vec::with_capacity(items.len());
    for (i, v) in items.into_iter().enumerate() {
        let ty = ctx.ty(&v);
        if axis > ty.rank() {
            return Err(format!("scan output axis {axis} is out of range for {ty}"));
        }
        let mut shape = ty.shape.clone();
        shape.insert(axis, 1);
        parts.push(ctx.emit1(
            &format!("{name}/item{i}"),
            Op::Reshape { shape },
            &[v],
            true,
        )?);
    }
    let first = ctx.ty(&parts[0]);
    for p in &parts[1..] {
        let t = ctx.ty(p);
        if t != first {
            return Err(format!(
                "a scan output changes its type between iterations ({first} then {t})"
            ));
        }
    }
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    ctx.emit1(name, Op::Concat { axis }, &parts, true)
}

fn convert_loop(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let graph = body(node, "body")?;
    let carried: Vec<Val> = (2..node.input.len())
        .map(|k| {
            ctx.input(node, k)
                .ok_or_else(|| format!("input #{k} is missing"))
        })
        .collect::<R<_>>()?;
    let n = carried.len();
    if graph.input.len() != n + 2 || graph.output.len() < n + 1 {
        return Err(format!(
            "the body takes {} input(s) and gives {} output(s); with {n} loop-carried \
             value(s) it must take {} and give at least {}",
            graph.input.len(),
            graph.output.len(),
            n + 2,
            n + 1
        ));
    }
    let scans = graph.output.len() - n - 1;
    let trip_count = match ctx.input(node, 0) {
        None => None,
        Some(Val::Const { t, .. }) => {
            let v = t.to_i64_vec();
            if v.len() != 1 {
                return Err(format!(
                    "the trip count must be one value, got {:?}",
                    t.shape()
                ));
            }
            Some(v[0].max(0))
        }
        Some(v @ Val::Dyn(_)) => {
            ctx.want(&v);
            return Err(
                "the trip count (input #0) is computed at run time; optc unrolls loops and \
                 needs it at compile time"
                    .into(),
            );
        }
    };
    let given_cond = ctx.input(node, 1);
    let mut cond = match &given_cond {
        None => true,
        Some(Val::Const { t, .. }) => known_bool(t, "the initial condition")?,
        Some(v @ Val::Dyn(_)) => {
            ctx.want(v);
            return Err(
                "the initial condition (input #1) is computed at run time; optc unrolls loops \
                 and needs it at compile time"
                    .into(),
            );
        }
    };
    let iteration_type = match ctx.input(node, 0) {
        Some(v) => ctx.ty(&v).dtype,
        None => DType::I64,
    };
    let iteration_shape = scalar_shape(&graph.input[0]);
    let cond_shape = scalar_shape(&graph.input[1]);
    let mut values = carried;
    let mut scanned: Vec<Vec<Val>> = vec![vec![]; scans];
    let mut i = 0i64;
    while cond && trip_count.is_none_or(|m| i < m) {
        if i as usize >= MAX_UNROLL {
            return Err(format!(
                "the loop runs more than {MAX_UNROLL} iterations; optc unrolls loops and \
                 stops there"
            ));
        }
        let data = match iteration_type {
            DType::I32 => optc_ir::Data::I32(vec![i as i32]),
            _ => optc_ir::Data::I64(vec![i]),
        };
        let it = Tensor::new(iteration_shape.clone(), data).map_err(|e| e.msg)?;
        let c =
            Tensor::new(cond_shape.clone(), optc_ir::Data::Bool(vec![true])).map_err(|e| e.msg)?;
        let mut args = vec![
            Val::constant(it, format!("{name}/iteration{i}")),
            Val::constant(c, format!("{name}/condition{i}")),
        ];
        args.extend(values.iter().cloned());
        let outs = run_body(ctx, graph, &format!("{name}/body{i}"), &args)?;
        if given_cond.is_some() {
            cond = match outs[0].as_const() {
                Some(t) => known_bool(t, "the body's condition")?,
                None => {
                    return Err(format!(
                        "the body computes its condition at run time (iteration {i}); optc \
                         unrolls loops and needs the iteration count at compile time"
                    ))
                }
            };
        }
        for (k, v) in outs[1 + n..].iter().enumerate() {
            scanned[k].push(v.clone());
        }
        values = outs[1..1 + n].to_vec();
        i += 1;
    }
    let mut result: Vec<Option<Val>> = values.into_iter().map(Some).collect();
    for (k, items) in scanned.into_iter().enumerate() {
        if items.is_empty() {
            return Err(format!(
                "the loop runs no iteration, so the shape of scan output #{k} is unknown"
            ));
        }
        result.push(Some(stack(ctx, &format!("{name}/scan{k}"), items, 0)?));
    }
    Ok(result)
}

fn convert_scan(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    if ctx.opset < 9 {
        return Err(format!(
            "Scan of opset {} (with a batch axis and sequence_lens) is not supported; \
             opset 9 and later are",
            ctx.opset
        ));
    }
    let a = Attrs { node };
    let graph = body(node, "body")?;
    let m = a
        .int("num_scan_inputs")
        .ok_or("attribute 'num_scan_inputs' is missing")?;
    let nin = node.input.len();
    if m <= 0 || m as usize > nin {
        return Err(format!(
            "num_scan_inputs {m} is out of range for {nin} input(s)"
        ));
    }
    let m = m as usize;
    let n = nin - m;
    let all: Vec<Val> = (0..nin)
        .map(|k| {
            ctx.input(node, k)
                .ok_or_else(|| format!("input #{k} is missing"))
        })
        .collect::<R<_>>()?;
    let (states, scan_inputs) = all.split_at(n);
    let k_out = graph
        .output
        .len()
        .checked_sub(n)
        .ok_or("the body gives fewer outputs than there are state variables")?;
    let list = |attr: &str, len: usize| -> R<Vec<i64>> {
        let v = a.ints(attr).unwrap_or_else(|| vec![0; len]);
        if v.len() != len {
            return Err(format!("{attr} has {} entries, expected {len}", v.len()));
        }
        Ok(v)
    };
    let in_axes = list("scan_input_axes", m)?;
    let in_dirs = list("scan_input_directions", m)?;
    let out_axes = list("scan_output_axes", k_out)?;
    let out_dirs = list("scan_output_directions", k_out)?;
    let mut length = None;
    let mut axes = Vec::with_capacity(m);
    for (j, (v, &ax)) in scan_inputs.iter().zip(&in_axes).enumerate() {
        let ty = ctx.ty(v);
        let axis = norm_axis(ax, ty.rank(), "scan_input_axes entry")?;
        let len = ty.shape[axis];
        if *length.get_or_insert(len) != len {
            return Err(format!(
                "scan input #{j} has {len} steps along axis {axis}, an earlier one {}",
                length.unwrap_or(0)
            ));
        }
        axes.push((axis, ty));
    }
    let length = length.unwrap_or(0);
    if length > MAX_UNROLL {
        return Err(format!(
            "the scan has {length} steps; optc unrolls scans up to {MAX_UNROLL}"
        ));
    }
    if length == 0 && k_out > 0 {
        return Err("the scan has no steps, so the shapes of its scan outputs are unknown".into());
    }
    let mut values: Vec<Val> = states.to_vec();
    let mut scanned: Vec<Vec<Val>> = vec![vec![]; k_out];
    for t in 0..length {
        let mut args = values.clone();
        for (j, v) in scan_inputs.iter().enumerate() {
            let (axis, ty) = &axes[j];
            let at = if in_dirs[j] != 0 { length - 1 - t } else { t };
            let dims: Vec<SliceDim> = ty
                .shape
                .iter()
                .enumerate()
                .map(|(d, &len)| {
                    if d == *axis {
                        SliceDim {
                            start: at as i64,
                            step: 1,
                            len: 1,
                        }
                    } else {
                        SliceDim {
                            start: 0,
                            step: 1,
                            len,
                        }
                    }
                })
                .collect();
            let part = ctx.emit1(
                &format!("{name}/input{j}/step{t}"),
                Op::Slice { dims },
                std::slice::from_ref(v),
                false,
            )?;
            let mut shape = ty.shape.clone();
            shape.remove(*axis);
            args.push(ctx.emit1(
                &format!("{name}/input{j}/step{t}/squeeze"),
                Op::Reshape { shape },
                &[part],
                true,
            )?);
        }
        let outs = run_body(ctx, graph, &format!("{name}/body{t}"), &args)?;
        values = outs[..n].to_vec();
        for (k, v) in outs[n..].iter().enumerate() {
            scanned[k].push(v.clone());
        }
    }
    let mut result: Vec<Option<Val>> = values.into_iter().map(Some).collect();
    for (k, mut items) in scanned.into_iter().enumerate() {
        if out_dirs[k] != 0 {
            items.reverse();
        }
        let rank = ctx.ty(&items[0]).rank() + 1;
        let axis = norm_axis(out_axes[k], rank, "scan_output_axes entry")?;
        result.push(Some(stack(ctx, &format!("{name}/scan{k}"), items, axis)?));
    }
    Ok(result)
}
