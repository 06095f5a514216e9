//! Constant data: the module's numbered data objects (`optc_data_N`), one per graph constant
//! and one per piece of a kernel's compile-time data (packed weights, index tables).

use super::memory::{Location, MemoryPlan};
use crate::error::{CodegenError, Result};
use crate::node::bytes_of;
use crate::x64::KernelPlan;
use crate::MAX_BYTES;
use cranelift_module::{DataDescription, DataId, Linkage, Module};
use optc_ir::{DType, Graph, NodeId, Op, Tensor};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Numbers the module's data objects in declaration order. Read-only objects with the same
/// bytes are one object: the packed weights of an unrolled recurrence's steps (an LSTM over
/// 128 frames: 128 nodes multiplying by the same constant) are then one copy that stays in
/// cache, not 128 (32 MB for silero-vad's). Graph constants equal to one declared before
/// (in this graph or another lowered into the same module) are that one; they are defined
/// by [`DataObjects::finish`], once every graph has said which it reads.
#[derive(Default)]
pub(crate) struct DataObjects {
    count: usize,
    /// The read-only objects defined so far by their bytes' hash.
    defined: HashMap<u64, Vec<Defined>>,
    /// The graph constants declared so far by type and shape, and in declaration order.
    constants: HashMap<(DType, Vec<usize>), Vec<Declared>>,
    pending: Vec<(DataId, Arc<Tensor>)>,
    /// The graph constants some kernel reads through their pointer.
    read: HashSet<DataId>,
}

/// A graph constant and its data object.
type Declared = (Arc<Tensor>, DataId);

/// A read-only data object and its bytes.
struct Defined {
    bytes: Vec<u8>,
    id: DataId,
}

impl DataObjects {
    /// Declare the next `optc_data_N` (defined later by [`define_declared`]).
    pub fn declare<M: Module>(&mut self, module: &mut M) -> Result<DataId> {
        let name = format!("optc_data_{}", self.count);
        self.count += 1;
        module
            .declare_data(&name, Linkage::Local, false, false)
            .map_err(|e| CodegenError::new(e.to_string()))
    }

    /// Define the next data object as `bytes` zeroed, writable bytes (no bytes in an
    /// object file: `.bss`), which the generated code fills (see
    /// `x64::winograd_weights`).
    pub fn define_zeroed<M: Module>(&mut self, module: &mut M, bytes: usize) -> Result<DataId> {
        let name = format!("optc_data_{}", self.count);
        self.count += 1;
        let id = module
            .declare_data(&name, Linkage::Local, true, false)
            .map_err(|e| CodegenError::new(e.to_string()))?;
        let mut d = DataDescription::new();
        d.define_zeroinit(bytes.max(1));
        d.set_align(64);
        module
            .define_data(id, &d)
            .map_err(|e| CodegenError::new(e.to_string()))?;
        Ok(id)
    }

    /// The data object of graph constant `t`: the one of an equal constant declared before,
    /// else the next, declared.
    fn constant<M: Module>(&mut self, module: &mut M, t: &Arc<Tensor>) -> Result<DataId> {
        // By type and shape, then element by element (which stops at the first difference):
        // no pass over every weight's bytes for the usual constant that has no twin.
        let key = (t.dtype(), t.shape().to_vec());
        if let Some((_, id)) = self
            .constants
            .get(&key)
            .and_then(|v| v.iter().find(|(u, _)| Arc::ptr_eq(u, t) || u.identical(t)))
        {
            return Ok(*id);
        }
        let id = self.declare(module)?;
        self.constants.entry(key).or_default().push((t.clone(), id));
        self.pending.push((id, t.clone()));
        Ok(id)
    }

    /// Define every graph constant declared: its bytes when a kernel of some graph reads it
    /// through its pointer, else a single byte. Call once, after the last graph.
    pub fn finish<M: Module>(&mut self, module: &mut M) -> Result<()> {
        for (d, t) in std::mem::take(&mut self.pending) {
            let bytes = if self.read.contains(&d) {
                t.data().to_le_bytes()
            } else {
                vec![0]
            };
            define_declared(module, d, bytes)?;
        }
        Ok(())
    }

    /// Declare and define the next read-only data object, or give the one already defined
    /// with the same bytes.
    pub fn define<M: Module>(&mut self, module: &mut M, bytes: Vec<u8>) -> Result<DataId> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let key = h.finish();
        if let Some(same) = self
            .defined
            .get(&key)
            .and_then(|v| v.iter().find(|d| d.bytes == bytes))
        {
            return Ok(same.id);
        }
        let id = self.declare(module)?;
        define_declared(module, id, bytes.clone())?;
        self.defined
            .entry(key)
            .or_default()
            .push(Defined { bytes, id });
        Ok(id)
    }
}

/// Define a declared data object (64-byte aligned; at least one byte).
fn define_declared<M: Module>(module: &mut M, id: DataId, mut bytes: Vec<u8>) -> Result<()> {
    if bytes.is_empty() {
        bytes.push(0);
    }
    let mut d = DataDescription::new();
    d.define(bytes.into_boxed_slice());
    d.set_align(64);
    module
        .define_data(id, &d)
        .map_err(|e| CodegenError::new(e.to_string()))
}

/// The graph's constants: a data object per constant tensor, declared first (in schedule
/// order) and defined once the kernel plans say which ones a kernel reads through their
/// pointer (weights that only feed packed copies are left out).
pub(super) struct Constants {
    by_id: HashMap<u32, DataId>,
}

impl Constants {
    /// Declare a data object for every constant node of `order`.
    pub fn declare<M: Module>(
        module: &mut M,
        graph: &Graph,
        order: &[NodeId],
        data: &mut DataObjects,
    ) -> Result<Constants> {
        let mut c = Constants {
            by_id: HashMap::new(),
        };
        let mut total = 0usize;
        for &n in order {
            let node = graph.node(n);
            let Op::Constant { id } = &node.op else {
                continue;
            };
            let t = graph.const_tensor(*id).ok_or_else(|| {
                CodegenError::at(&node.name, "const", format!("missing constant c{}", id.0))
            })?;
            if c.by_id.contains_key(&id.0) {
                continue;
            }
            total = total.saturating_add(bytes_of(&t.ty())?);
            if total > MAX_BYTES {
                return Err(CodegenError::new("constants exceed 16 GiB"));
            }
            let d = data.constant(module, t)?;
            c.by_id.insert(id.0, d);
        }
        Ok(c)
    }

    /// The data object of constant node `n`.
    pub fn data_of(&self, graph: &Graph, n: NodeId) -> Option<DataId> {
        match &graph.node(n).op {
            Op::Constant { id } => self.by_id.get(&id.0).copied(),
            _ => None,
        }
    }

    /// Every constant's data object, in declaration order.
    pub fn ids(&self) -> Vec<DataId> {
        let mut ids: Vec<DataId> = self.by_id.values().copied().collect();
        ids.sort_by_key(|d| d.as_u32());
        ids
    }

    /// Note the constants `read` through their pointer (defined by [`DataObjects::finish`]).
    pub fn define(self, data: &mut DataObjects, read: &HashSet<DataId>) {
        data.read.extend(read.iter().copied());
    }
}

/// The constants some kernel (or a graph output) reads through their pointer: every constant
/// input of a node on the generic path, those an x64 plan does not pack at compile time, and
/// constants that are graph outputs.
pub(super) fn read_through_pointer(
    graph: &Graph,
    schedule: &[NodeId],
    plans: &[Option<KernelPlan>],
    memory: &MemoryPlan,
) -> HashSet<DataId> {
    let mut read = HashSet::new();
    for (i, &n) in schedule.iter().enumerate() {
        for (j, v) in graph.node_inputs(n).iter().enumerate() {
            if let Some(Location::Constant(d)) = memory.locations.get(v) {
                if plans[i].as_ref().is_none_or(|p| p.reads_input(j)) {
                    read.insert(*d);
                }
            }
        }
    }
    for (_, v) in &memory.output_copies {
        if let Some(Location::Constant(d)) = memory.locations.get(v) {
            read.insert(*d);
        }
    }
    read
}
