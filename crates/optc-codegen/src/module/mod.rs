//! Lowering a graph into a Cranelift module, generic over `cranelift_module::Module` (the JIT
//! and AOT objects share it). [`lower_graph`] declares and defines, in this order (which
//! numbers the symbols of an object: keep it):
//!
//! 1. the runtime imports ([`crate::runtime::SYMBOLS`]),
//! 2. a data object per graph constant (`constants.rs`), defined once the kernel plans say
//!    which ones a kernel reads,
//! 3. one kernel function per scheduled node (`kernels.rs`), with its compile-time data, the
//!    assembled routines of its x64 plan and its task function (`tasks.rs`),
//! 4. the entry function (`entry.rs`), which calls the kernels in schedule order (those only
//!    one side of a select with a run-time condition needs only when it picks that side:
//!    `predicates.rs`).
//!
//! Before the kernels: every node's x64 plan ([`crate::x64::kernel_plan`]; `None`: the generic
//! lowering of [`crate::ops`]), the memory plan (`memory.rs`: workspace offsets by liveness,
//! reshape aliasing, scratch).

mod arena;
mod constants;
mod entry;
mod imports;
mod kernels;
mod memory;
mod predicates;
mod tasks;

use crate::error::{CodegenError, Result};
use crate::node::NodeInfo;
use crate::ops::scratch_bytes;
use crate::target::Target;
use crate::x64;
use constants::Constants;
pub(crate) use constants::DataObjects;
use cranelift_module::{FuncId, Linkage, Module};
use entry::EntryFunction;
use imports::RuntimeImports;
use kernels::{KernelBody, KernelWriter};
use memory::MemoryPlan;
use optc_ir::{Graph, TensorType};

/// What `lower_graph` produced.
pub(crate) struct Lowered {
    pub entry: FuncId,
    pub workspace: usize,
    pub output_types: Vec<TensorType>,
    /// `(node name, op name)` of every kernel, in schedule order.
    pub nodes: Vec<(String, String)>,
    /// Per kernel (schedule order): what it computes, for profiles.
    pub kernel_info: Vec<KernelInfo>,
}

/// A kernel as a profile shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelInfo {
    pub name: String,
    /// The op, a fused node as its base and steps (`Conv+Add+Relu`).
    pub op: String,
    /// Floating-point operations of one run (2 per multiply-add of a contraction, see
    /// [`optc_ir::flops`]); 0 when the kernel is not called (an aliased reshape).
    pub flops: f64,
    /// Not called: its output aliases its input.
    pub skipped: bool,
}

/// Lower `graph` into `module`; defines the entry function `entry_name` (exported). With
/// `weights_at_first_run` (AOT objects), weight transforms that would grow the stored data
/// run at the first run instead (see `x64::winograd_weights`).
pub(crate) fn lower_graph<M: Module>(
    module: &mut M,
    graph: &Graph,
    target: &Target,
    entry_name: &str,
    weights_at_first_run: bool,
) -> Result<Lowered> {
    let mut data = DataObjects::default();
    let lowered = lower_graph_into(
        module,
        graph,
        target,
        Entry {
            name: entry_name,
            linkage: Linkage::Export,
        },
        weights_at_first_run,
        &mut data,
    )?;
    data.finish(module)?;
    Ok(lowered)
}

/// The entry function of a lowering: its name and linkage.
pub(crate) struct Entry<'a> {
    pub name: &'a str,
    pub linkage: Linkage,
}

/// [`lower_graph`] with the module's data objects so far (read-only data with the same bytes
/// stays one object across the graphs lowered into one module; `data.finish` defines the
/// graph constants after the last) and the entry's linkage.
pub(crate) fn lower_graph_into<M: Module>(
    module: &mut M,
    graph: &Graph,
    target: &Target,
    entry: Entry,
    weights_at_first_run: bool,
    data: &mut DataObjects,
) -> Result<Lowered> {
    let entry_name = entry.name;
    let split = crate::border_regions::split_border_regions(graph)?;
    let graph = split.as_ref().unwrap_or(graph);
    let swapped = x64::swap_small_map_convs(graph, target)?;
    let graph = swapped.as_ref().unwrap_or(graph);
    let handed = x64::hand_off_bytes(graph, target)?;
    let graph = handed.as_ref().unwrap_or(graph);
    let paired = x64::pair_expand_depthwise(graph, target)?;
    let graph = paired.as_ref().unwrap_or(graph);
    graph
        .verify()
        .map_err(|e| CodegenError::new(format!("invalid graph: {e}")))?;
    let order = graph
        .topo_order()
        .map_err(|e| CodegenError::new(e.msg.clone()))?;
    let runtime = RuntimeImports::declare(module)?;
    let constants = Constants::declare(module, graph, &order, data)?;

    let schedule = memory::schedule(graph, &order);
    let nodes: Vec<NodeInfo> = schedule
        .iter()
        .map(|&n| NodeInfo::of(graph, n))
        .collect::<Result<_>>()?;
    let plans: Vec<Option<x64::KernelPlan>> = nodes
        .iter()
        .map(|info| x64::kernel_plan(info, target))
        .collect::<Result<_>>()?;
    let scratch: Vec<usize> = nodes
        .iter()
        .zip(&plans)
        .map(|(info, plan)| match plan {
            Some(p) => Ok(p.scratch_bytes()),
            None => scratch_bytes(info),
        })
        .collect::<Result<_>>()?;
    let memory = MemoryPlan::new(graph, &order, &schedule, &constants, &nodes, &scratch)?;
    let skipped = memory.aliased.clone();

    let read = constants::read_through_pointer(graph, &schedule, &plans, &memory);
    let constant_ids = constants.ids();
    constants.define(data, &read);
    let mut writer = KernelWriter::new(
        target,
        entry_name,
        &runtime,
        std::mem::take(data),
        module.make_context(),
        weights_at_first_run,
    );
    let mut kernels = Vec::with_capacity(schedule.len());
    for (i, info) in nodes.iter().enumerate() {
        let body = if skipped[i] {
            KernelBody::Nothing
        } else {
            KernelBody::Node
        };
        kernels.push(writer.define(module, i, info, plans[i].as_ref(), body)?);
    }
    let entry = EntryFunction {
        name: entry_name,
        linkage: entry.linkage,
        graph,
        schedule: &schedule,
        memory: &memory,
        constants: &constant_ids,
        kernels: &kernels,
        skipped: &skipped,
        predicates: &predicates::predicates(graph, &schedule),
        profile: target.profile(),
    }
    .define(
        module,
        &mut writer.ctx,
        &mut writer.fctx,
        &runtime,
        target.fma,
    )?;
    *data = std::mem::take(&mut writer.data);

    Ok(Lowered {
        entry,
        workspace: memory.workspace,
        output_types: memory.output_types,
        nodes: nodes
            .iter()
            .map(|i| (i.name.to_string(), i.op.name().to_string()))
            .collect(),
        kernel_info: schedule
            .iter()
            .zip(&nodes)
            .zip(&skipped)
            .map(|((&n, info), &skipped)| KernelInfo {
                name: info.name.to_string(),
                op: optc_ir::flops::describe(info.op),
                flops: if skipped {
                    0.0
                } else {
                    optc_ir::flops::node_flops(graph, n)
                },
                skipped,
            })
            .collect(),
    })
}
