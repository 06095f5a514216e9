//! Running a compiled model in this process: [`compile_jit`] lowers a graph with
//! `cranelift-jit`, [`JitModel::run`] checks the tensors and calls the entry function with a
//! [`Workspace`].

use crate::error::{CodegenError, RuntimeError};
use crate::target::Target;
use crate::thread_choice::{Arm, ThreadChoice};
use crate::{module, runtime};
use cranelift_jit::{JITBuilder, JITModule};
use optc_ir::{Graph, Tensor, TensorType};
use std::fmt;
use std::sync::Mutex;

/// A 64-byte aligned scratch arena for [`JitModel::run`].
pub struct Workspace {
    buf: Vec<Block64>,
    size: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block64([u8; 64]);

impl Workspace {
    pub fn new(size: usize) -> Workspace {
        Workspace {
            buf: vec![Block64([0; 64]); size.div_ceil(64)],
            size,
        }
    }
    pub fn size(&self) -> usize {
        self.size
    }
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr() as *mut u8
    }
}

type EntryFn = unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8) -> i32;

/// A compiled model living in this process.
pub struct JitModel {
    /// Kept alive (and freed on drop) because `entry` points into its memory.
    module: Mutex<Option<JITModule>>,
    entry: EntryFn,
    inputs: Vec<TensorType>,
    outputs: Vec<TensorType>,
    workspace: usize,
    /// `(node name, op name)` in schedule order, for runtime error messages.
    nodes: Vec<(String, String)>,
    /// Every kernel of the schedule, for profiles.
    kernels: Vec<crate::KernelInfo>,
    /// Threads `run` may use (0 = all cores).
    threads: usize,
    /// How long the last run took (ns): a run this short stays on the caller's thread while
    /// another process contends for the cores ([`SHORT_RUN`]).
    last_run_ns: std::sync::atomic::AtomicU64,
    /// Between one thread and `threads`, which one runs are faster now ([`ThreadChoice`]).
    choice: Mutex<ThreadChoice>,
    /// Time origin of `choice`.
    epoch: std::time::Instant,
}

/// Runs shorter than this take one thread while the cores are contended: a pool worker then
/// needs about 140 us to be scheduled for each parallel node, longer than the whole run
/// (measured on the MLP, 40 us a run: 2 threads under one busy process were 15% slower
/// than 1).
const SHORT_RUN: std::time::Duration = std::time::Duration::from_micros(300);

// SAFETY: `entry` points to immutable, finalized machine code that only touches the buffers
// handed to it; the module is behind a Mutex and only touched on drop.
unsafe impl Send for JitModel {}
// SAFETY: as above; `run` takes `&self` and the generated code keeps no global state.
unsafe impl Sync for JitModel {}

impl Drop for JitModel {
    fn drop(&mut self) {
        let m = match self.module.get_mut() {
            Ok(m) => m.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(m) = m {
            // SAFETY: we own the only handle to the code (`entry`), and it cannot be called
            // after `self` is dropped.
            unsafe { m.free_memory() };
        }
    }
}

impl fmt::Debug for JitModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JitModel")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("workspace", &self.workspace)
            .finish()
    }
}

/// Profiling aid: with `OPTC_PERF_MAP=1` (or a directory), append the JIT's functions to
/// `/tmp/perf-<pid>.map` (or `<dir>/perf-<pid>.map`), the symbol file `perf report` reads
/// for JIT code. Sizes are the gaps between consecutive functions. Best effort: errors are
/// ignored (it never affects compilation).
fn write_perf_map(module: &JITModule, dir: &std::ffi::OsStr) {
    use cranelift_module::Module;
    use std::io::Write;
    let mut funcs: Vec<(usize, String)> = module
        .declarations()
        .get_functions()
        .filter(|(_, d)| d.linkage.is_definable())
        .filter_map(|(id, d)| {
            let name = d.name.clone()?;
            Some((module.get_finalized_function(id) as usize, name))
        })
        .collect();
    funcs.sort();
    let dir = if dir == "1" {
        std::path::PathBuf::from("/tmp")
    } else {
        std::path::PathBuf::from(dir)
    };
    let path = dir.join(format!("perf-{}.map", std::process::id()));
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    for (i, (addr, name)) in funcs.iter().enumerate() {
        let size = funcs.get(i + 1).map_or(4096, |n| n.0 - addr).min(1 << 24);
        let _ = writeln!(f, "{addr:x} {size:x} {name}");
    }
}

/// Compile a graph to machine code in this process.
pub fn compile_jit(graph: &Graph, target: &Target) -> Result<JitModel, CodegenError> {
    let target = &target.for_jit();
    let isa = target.jit_isa()?;
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    for s in &runtime::SYMBOLS {
        jb.symbol(s.name, (s.address)());
    }
    let mut module = JITModule::new(jb);
    let lowered = module::lower_graph(&mut module, graph, target, "optc_main_run", false)?;
    module
        .finalize_definitions()
        .map_err(|e| CodegenError::new(format!("finalizing machine code: {e}")))?;
    if let Some(path) = std::env::var_os("OPTC_PERF_MAP") {
        write_perf_map(&module, &path);
    }
    let ptr = module.get_finalized_function(lowered.entry);
    // SAFETY: `ptr` is the finalized entry function built by `lower_graph` with exactly the
    // `EntryFn` signature (three pointers in, i32 out, system-V calling convention).
    let entry: EntryFn = unsafe { std::mem::transmute::<*const u8, EntryFn>(ptr) };
    Ok(JitModel {
        module: Mutex::new(Some(module)),
        entry,
        inputs: graph.input_types(),
        outputs: lowered.output_types,
        workspace: lowered.workspace,
        nodes: lowered.nodes,
        kernels: lowered.kernel_info,
        threads: 0,
        last_run_ns: std::sync::atomic::AtomicU64::new(u64::MAX),
        choice: Mutex::new(ThreadChoice::new()),
        epoch: std::time::Instant::now(),
    })
}

impl JitModel {
    /// Threads `run` may use: 0 = all cores (the default), 1 = serial. With more than one,
    /// runs measure now and then whether one thread is faster and then take one (see
    /// `thread_choice.rs`; `OPTC_ADAPTIVE_THREADS=0` turns that off).
    pub fn set_threads(&mut self, n: usize) {
        self.threads = n;
        self.choice = Mutex::new(ThreadChoice::new());
    }
    pub fn threads(&self) -> usize {
        self.threads
    }
    pub fn input_types(&self) -> &[TensorType] {
        &self.inputs
    }
    pub fn output_types(&self) -> &[TensorType] {
        &self.outputs
    }
    pub fn workspace_size(&self) -> usize {
        self.workspace
    }
    /// The kernels in schedule order (what `runtime::profile` marks number).
    pub fn kernels(&self) -> &[crate::KernelInfo] {
        &self.kernels
    }
    pub fn new_workspace(&self) -> Workspace {
        Workspace::new(self.workspace)
    }

    /// Run on `inputs` (graph order), writing `outputs` (graph order) in place.
    pub fn run(
        &self,
        inputs: &[&Tensor],
        outputs: &mut [Tensor],
        ws: &mut Workspace,
    ) -> Result<(), CodegenError> {
        check_tensors("input", inputs.iter().copied(), &self.inputs)?;
        check_tensors("output", outputs.iter(), &self.outputs)?;
        if ws.size() < self.workspace {
            return Err(CodegenError::new(format!(
                "workspace has {} bytes, the model needs {}",
                ws.size(),
                self.workspace
            )));
        }
        let in_ptrs: Vec<*const u8> = inputs.iter().map(|t| t.data().as_ptr()).collect();
        let out_ptrs: Vec<*mut u8> = outputs
            .iter_mut()
            .map(|t| t.data_mut().as_mut_ptr())
            .collect();
        let wsp = ws.as_mut_ptr();
        use std::sync::atomic::Ordering::Relaxed;
        let short = self.last_run_ns.load(Relaxed) < SHORT_RUN.as_nanos() as u64;
        let many = match self.threads {
            0 => runtime::available_cores() > 1,
            t => t > 1,
        };
        let (threads, arm) = if !many {
            (self.threads, None)
        } else if short && runtime::contended() {
            (1, None)
        } else if !crate::thread_choice::adaptive() {
            (self.threads, None)
        } else {
            // A run that finds the choice locked (a concurrent run of this model, through a
            // shared handle, picking or recording) takes `threads` and records nothing. Runs
            // that overlap still measure each other: serving one model from several threads
            // is best done with one thread per run (`examples/concurrent_runs`).
            let now = self.epoch.elapsed().as_nanos() as u64;
            match self.choice.try_lock().map(|mut c| c.pick(now)) {
                Ok(Arm::One) => (1, Some(Arm::One)),
                Ok(Arm::Many) => (self.threads, Some(Arm::Many)),
                Err(_) => (self.threads, None),
            }
        };
        let prev = runtime::set_thread_count(threads);
        let hot = runtime::run_begin();
        let start = std::time::Instant::now();
        // SAFETY: every input and output buffer was checked above to have exactly the dtype and
        // shape the code was generated for, the workspace is at least `workspace_size` bytes and
        // 64-byte aligned, and the pointer arrays outlive the call. The generated code only
        // reads inputs/constants and writes outputs/workspace within those sizes.
        let status = unsafe { (self.entry)(in_ptrs.as_ptr(), out_ptrs.as_ptr(), wsp) };
        let took = start.elapsed().as_nanos() as u64;
        self.last_run_ns.store(took, Relaxed);
        if let Some(arm) = arm {
            if let Ok(mut c) = self.choice.try_lock() {
                c.record(arm, took);
            }
        }
        drop(hot);
        runtime::set_thread_count(prev);
        if status == 0 {
            return Ok(());
        }
        let pos = (status >> 8) as usize;
        let code = status & 0xff;
        let what = match RuntimeError::from_code(code) {
            Some(e) => e.message().to_string(),
            None => format!("runtime error code {code}"),
        };
        match pos.checked_sub(1).and_then(|p| self.nodes.get(p)) {
            Some((n, op)) => Err(CodegenError::at(n, op, what)),
            None => Err(CodegenError::new(what)),
        }
    }
}

/// `got` has the dtypes and shapes of `want` (`what`: "input" or "output").
fn check_tensors<'t>(
    what: &str,
    got: impl ExactSizeIterator<Item = &'t Tensor>,
    want: &[TensorType],
) -> Result<(), CodegenError> {
    if got.len() != want.len() {
        return Err(CodegenError::new(format!(
            "expected {} {what}s, got {}",
            want.len(),
            got.len()
        )));
    }
    for (i, (t, ty)) in got.zip(want).enumerate() {
        if t.dtype() != ty.dtype || t.shape() != ty.shape.as_slice() {
            return Err(CodegenError::new(format!(
                "{what} {i} must be {ty}, got {}",
                t.ty()
            )));
        }
    }
    Ok(())
}
