//! The code-generation target: which instruction-set features the generated code may use,
//! the vector registers and data caches the kernels are blocked for, and the Cranelift ISA
//! (for the JIT in this process, or for an object file on any host).
//!
//! Targets: `native` (this machine: its features, caches and cores), `x86_64-sse4.2` (the
//! generic f32x4 lowering only), `x86_64-avx2` and `x86_64-avx512` (the x64 path with AVX2 or
//! AVX-512F microkernels) and `aarch64-neon` (the generic lowering; AOT from any host).

use crate::error::CodegenError;
use cranelift_codegen::isa::{Builder as IsaBuilder, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};

/// A code-generation target: ISA features the generated code may use.
#[derive(Debug, Clone)]
pub struct Target {
    name: String,
    /// Cranelift x86 ISA flags to enable (empty for `native`, which infers them).
    features: Vec<&'static str>,
    native: bool,
    /// Fused multiply-add is available.
    pub(crate) fma: bool,
    /// Vector width in f32 lanes used by the generated kernels.
    vector_lanes: usize,
    /// Largest Winograd output tile for 3x3 stride-1 convs (0 = off, 2, 4).
    winograd: usize,
    /// When constant weights with zeros take the sparse kernels.
    sparse: optc_ir::sparsity::SparseMode,
    /// The entry function marks each kernel's start for `runtime::profile` (JIT only).
    profile: bool,
    /// Architectural vector registers of the widest ISA level (16 ymm/xmm, 32 zmm/v).
    vector_regs: usize,
    /// Data cache sizes the blocking is derived from.
    caches: Caches,
    /// Cores (0 = unknown: the compiled code asks the runtime).
    cores: usize,
    /// The int8 kernels may use AMX tiles (set by the JIT on a host that has them).
    tiles: bool,
}

/// Per-core data cache sizes in bytes (L3: shared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caches {
    pub l1d: usize,
    pub l2: usize,
    pub l3: usize,
}

impl Caches {
    /// Typical x86-64 sizes (Zen 3: 32 KiB L1d, 512 KiB L2, 32 MiB L3).
    const X86: Caches = Caches {
        l1d: 32 << 10,
        l2: 512 << 10,
        l3: 32 << 20,
    };
    /// Server AVX-512 parts (Ice Lake-SP: 48 KiB L1d, 1.25 MiB L2).
    const AVX512: Caches = Caches {
        l1d: 48 << 10,
        l2: 1280 << 10,
        l3: 32 << 20,
    };
    /// Arm Neoverse N1/V1 class (64 KiB L1d, 1 MiB L2).
    const ARM: Caches = Caches {
        l1d: 64 << 10,
        l2: 1 << 20,
        l3: 32 << 20,
    };

    /// This machine's caches from Linux sysfs (`/sys/devices/system/cpu/cpu0/cache`), each
    /// size falling back to [`Caches::X86`]'s.
    fn host() -> Caches {
        let mut c = Caches::X86;
        for i in 0..8 {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
            let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
            let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
            else {
                continue;
            };
            let size = size.trim();
            let bytes = match size.strip_suffix('K') {
                Some(k) => k.parse::<usize>().ok().map(|k| k << 10),
                None => match size.strip_suffix('M') {
                    Some(m) => m.parse::<usize>().ok().map(|m| m << 20),
                    None => size.parse().ok(),
                },
            };
            let Some(bytes) = bytes.filter(|&b| b > 0) else {
                continue;
            };
            match (level.trim(), kind.trim()) {
                ("1", "Data") => c.l1d = bytes,
                ("2", _) => c.l2 = bytes,
                ("3", _) => c.l3 = bytes,
                _ => {}
            }
        }
        c
    }
}

const TARGET_NAMES: [&str; 5] = [
    "native",
    "x86_64-sse4.2",
    "x86_64-avx2",
    "x86_64-avx512",
    "aarch64-neon",
];

const SSE42: [&str; 5] = [
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
];
const AVX2: [&str; 11] = [
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
    "has_avx",
    "has_avx2",
    "has_fma",
    "has_bmi1",
    "has_bmi2",
    "has_lzcnt",
];

/// AVX-512 (F, VL, DQ): for AOT objects, and JIT on hosts that have it. The int8 kernels of
/// quantized contractions on this target also need AVX-512 VNNI and BW (`vpdpbusd`; the u8
/// tile stores' `vmovdqu8`: Cascade Lake, Ice Lake, Zen 4 and later have both).
const AVX512: [&str; 14] = [
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
    "has_avx",
    "has_avx2",
    "has_fma",
    "has_bmi1",
    "has_bmi2",
    "has_lzcnt",
    "has_avx512f",
    "has_avx512vl",
    "has_avx512dq",
];

#[cfg(target_arch = "x86_64")]
fn host_has(feature: &str) -> bool {
    match feature {
        "has_sse3" => std::is_x86_feature_detected!("sse3"),
        "has_ssse3" => std::is_x86_feature_detected!("ssse3"),
        "has_sse41" => std::is_x86_feature_detected!("sse4.1"),
        "has_sse42" => std::is_x86_feature_detected!("sse4.2"),
        "has_popcnt" => std::is_x86_feature_detected!("popcnt"),
        "has_avx" => std::is_x86_feature_detected!("avx"),
        "has_avx2" => std::is_x86_feature_detected!("avx2"),
        "has_fma" => std::is_x86_feature_detected!("fma"),
        "has_bmi1" => std::is_x86_feature_detected!("bmi1"),
        "has_bmi2" => std::is_x86_feature_detected!("bmi2"),
        "has_lzcnt" => std::is_x86_feature_detected!("lzcnt"),
        "has_avx512f" => std::is_x86_feature_detected!("avx512f"),
        "has_avx512vl" => std::is_x86_feature_detected!("avx512vl"),
        "has_avx512dq" => std::is_x86_feature_detected!("avx512dq"),
        "has_avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
        "has_avx512bw" => std::is_x86_feature_detected!("avx512bw"),
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn host_has(_feature: &str) -> bool {
    false
}

/// Whether the CPU has AMX-TILE and AMX-INT8 (CPUID leaf 7: EDX bits 24 and 25).
/// `OPTC_AMX=0` turns the tiles off (to compare).
#[cfg(target_arch = "x86_64")]
pub(crate) fn host_has_amx() -> bool {
    if std::env::var_os("OPTC_AMX").is_some_and(|v| v == "0") {
        return false;
    }
    use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is read only when the CPU has it.
    let edx = unsafe {
        if __get_cpuid_max(0).0 < 7 {
            return false;
        }
        __cpuid_count(7, 0).edx
    };
    edx & (3 << 24) == 3 << 24
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn host_has_amx() -> bool {
    false
}

/// Whether this process may run AMX-INT8 code: the CPU has it ([`host_has_amx`]) and Linux
/// grants the tile data state (`arch_prctl` `ARCH_REQ_XCOMP_PERM` for `XFEATURE_XTILEDATA`;
/// without it the first tile instruction faults). Asked once per process, and only when an
/// int8 layer is about to be planned on tiles: the permission lasts as long as the process
/// and enlarges every thread's saved register state once tiles are used, so a process that
/// compiles only f32 models never asks.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) fn amx_permission() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMX.get_or_init(|| {
        if !host_has_amx() {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these two integer arguments only changes the process's
        // permitted extended state; it touches no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        r == 0
    })
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub(crate) fn amx_permission() -> bool {
    false
}

impl Target {
    /// The machine we are running on (`native`).
    pub fn host() -> Result<Target, CodegenError> {
        cranelift_native::builder()
            .map_err(|e| CodegenError::new(format!("host machine is not supported: {e}")))?;
        Ok(Target {
            name: "native".to_string(),
            features: vec![],
            native: true,
            fma: cfg!(target_arch = "x86_64") && host_has("has_fma"),
            vector_lanes: 4,
            winograd: 4,
            sparse: Default::default(),
            profile: false,
            vector_regs: if host_has("has_avx512f") { 32 } else { 16 },
            caches: Caches::host(),
            cores: crate::runtime::available_cores(),
            tiles: false,
        })
    }

    /// `native`, `x86_64-sse4.2`, `x86_64-avx2`, `x86_64-avx512` or `aarch64-neon` (the last
    /// two for ahead-of-time compilation, or JIT on a host that has them).
    pub fn parse(name: &str) -> Result<Target, CodegenError> {
        match name {
            "native" => Target::host(),
            "x86_64-sse4.2" => Ok(Target::named(name, &SSE42, false, 16, Caches::X86)),
            "x86_64-avx2" => Ok(Target::named(name, &AVX2, true, 16, Caches::X86)),
            "x86_64-avx512" => Ok(Target::named(name, &AVX512, true, 32, Caches::AVX512)),
            "aarch64-neon" => Ok(Target::named(name, &[], true, 32, Caches::ARM)),
            _ => Err(CodegenError::new(format!(
                "unknown target {name:?}; valid targets: {}",
                TARGET_NAMES.join(", ")
            ))),
        }
    }

    /// A named (non-native) target: ISA flags, FMA, vector registers, typical caches; the
    /// core count is left to run time.
    fn named(
        name: &str,
        features: &[&'static str],
        fma: bool,
        vector_regs: usize,
        caches: Caches,
    ) -> Target {
        Target {
            name: name.to_string(),
            features: features.to_vec(),
            native: false,
            fma,
            vector_lanes: 4,
            winograd: 4,
            sparse: Default::default(),
            profile: false,
            vector_regs,
            caches,
            cores: 0,
            tiles: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Limit Winograd convolution (3x3, stride 1, constant weights, AVX2 path) to output
    /// tiles of at most `max_tile`: 4 lets each conv take F(4x4, 3x3) or F(2x2, 3x3),
    /// whichever needs fewer flops (the default); 2 allows only F(2x2, 3x3); 0 turns it off
    /// (direct convolution: the smallest rounding error, see `x64/winograd.rs`).
    pub fn with_winograd(mut self, max_tile: usize) -> Result<Target, CodegenError> {
        if ![0, 2, 4].contains(&max_tile) {
            return Err(CodegenError::new(format!(
                "Winograd tile size must be 0 (off), 2 or 4, not {max_tile}"
            )));
        }
        self.winograd = max_tile;
        Ok(self)
    }

    /// Largest Winograd output tile (0 = off).
    pub fn winograd(&self) -> usize {
        self.winograd
    }

    /// When constant weights with zeros take the sparse kernels (AVX2 path): `Auto` where
    /// `optc_ir::sparsity::sparse_pays`, `Off`, or `Always`.
    pub fn with_sparse(mut self, mode: optc_ir::sparsity::SparseMode) -> Target {
        self.sparse = mode;
        self
    }

    pub fn sparse(&self) -> optc_ir::sparsity::SparseMode {
        self.sparse
    }

    /// Code that records each kernel's time for [`crate::runtime::profile`] (`optc bench
    /// --profile`): a call before each kernel, nothing else changes. JIT only: an object
    /// compiled for profiling is refused.
    pub fn with_profile(mut self, on: bool) -> Target {
        self.profile = on;
        self
    }

    pub fn profile(&self) -> bool {
        self.profile
    }

    /// Vector width (f32 lanes) of the generated kernels.
    pub fn vector_lanes(&self) -> usize {
        self.vector_lanes
    }

    /// Architectural vector registers (16 for SSE/AVX2, 32 for AVX-512 and NEON).
    pub fn vector_regs(&self) -> usize {
        self.vector_regs
    }

    /// Data cache sizes (this machine's for `native`, typical ones for named targets).
    pub fn caches(&self) -> Caches {
        self.caches
    }

    /// Cores: this machine's for `native`, 0 (unknown, decided at run time) otherwise.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// GEMM blocking from the caches: `(KC, MC)`. A `KC x 16` B panel takes half of L1d;
    /// an `MC x KC` A block about 9/32 of L2 (Zen 3: 256 and 144).
    pub(crate) fn blocking(&self) -> (usize, usize) {
        let kc = (self.caches.l1d / 2 / (crate::x64::asm::NR * 4)).clamp(64, 512) / 8 * 8;
        let mr = crate::x64::asm::MR;
        let mc = (self.caches.l2 * 9 / 32 / (kc * 4)).clamp(4 * mr, 1024) / mr * mr;
        (kc, mc)
    }

    /// K block of a GEMM with a constant B read by the microkernels from its compile-time
    /// panels, A read in place: a wide tile's B panel (`KC x 2 NR` floats) takes an eighth
    /// of L2, and no less than [`Target::blocking`]'s KC. The microkernel streams that panel
    /// from L2 at full speed; fewer K blocks store and reload C (and run the epilogue's
    /// guards) fewer times. Measured on this AMD EPYC (Zen 4, 1 MiB L2: 1024) against 256:
    /// 6% faster on six 128 x 768 x 3072 / 3072 x 768 layers, 4% on 1024-row ones.
    pub(crate) fn gemm_kc(&self) -> usize {
        let (kc, _) = self.blocking();
        let panel = 2 * crate::x64::asm::NR * 4;
        (self.caches.l2 / 8 / panel).clamp(kc, 1024) / 8 * 8
    }

    /// One line: ISA level, vector widths, registers, caches, cores.
    pub fn describe(&self) -> String {
        let isa = if self.name.starts_with("aarch64") {
            "NEON".to_string()
        } else if self.microkernel_isa() == crate::x64::asm::Isa::Avx512 {
            "AVX-512F (512-bit microkernels)".to_string()
        } else if self.has_avx2_fma() {
            "AVX2+FMA (256-bit microkernels)".to_string()
        } else {
            "SSE4.2".to_string()
        };
        let (kc, mc) = self.blocking();
        let kib = |b: usize| b >> 10;
        format!(
            "{}: {isa}, {}-lane Cranelift vectors, {} vector registers, L1d {} KiB, L2 {} KiB, \
             L3 {} KiB, {} cores; GEMM blocking KC={kc} MC={mc}",
            self.name,
            self.vector_lanes,
            self.vector_regs,
            kib(self.caches.l1d),
            kib(self.caches.l2),
            kib(self.caches.l3),
            if self.cores == 0 {
                "run-time".to_string()
            } else {
                self.cores.to_string()
            },
        )
    }

    /// Whether fused multiply-add instructions are used.
    pub fn has_fma(&self) -> bool {
        self.fma
    }

    /// The target triple of the generated code.
    pub fn triple(&self) -> String {
        if self.name.starts_with("aarch64") {
            "aarch64-unknown-linux-gnu".to_string()
        } else if self.native {
            format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
        } else {
            "x86_64-unknown-linux-gnu".to_string()
        }
    }

    /// A Cranelift ISA for JIT use in this process (fails when the host lacks a feature).
    pub(crate) fn jit_isa(&self) -> Result<OwnedTargetIsa, CodegenError> {
        let flags = cranelift_flags(false)?;
        if self.name.starts_with("aarch64") && !cfg!(target_arch = "aarch64") {
            return Err(CodegenError::new(format!(
                "target {} cannot run on this host ({}); compile it ahead of time instead \
                 (`optc MODEL.onnx --target {} -o model.o`)",
                self.name,
                std::env::consts::ARCH,
                self.name
            )));
        }
        if !self.native {
            if !cfg!(target_arch = "x86_64") {
                return Err(CodegenError::new(format!(
                    "target {} cannot run on this host (not x86_64); use AOT compilation",
                    self.name
                )));
            }
            let missing: Vec<&str> = self
                .features
                .iter()
                .copied()
                .filter(|f| !host_has(f))
                .collect();
            if !missing.is_empty() {
                return Err(CodegenError::new(format!(
                    "target {} cannot run on this host: it lacks {}",
                    self.name,
                    missing.join(", ")
                )));
            }
        }
        let isa_builder = self.isa_builder()?;
        if self.native && !host_has("has_sse41") && cfg!(target_arch = "x86_64") {
            return Err(CodegenError::new(
                "the host lacks SSE4.1, which the generated code needs",
            ));
        }
        finish_isa(isa_builder, flags)
    }

    /// A Cranelift ISA for an object file: position-independent, any host.
    pub(crate) fn object_isa(&self) -> Result<OwnedTargetIsa, CodegenError> {
        let flags = cranelift_flags(true)?;
        finish_isa(self.isa_builder()?, flags)
    }

    /// The host's ISA builder for `native`, else the triple's with the target's features.
    fn isa_builder(&self) -> Result<IsaBuilder, CodegenError> {
        if self.native {
            return cranelift_native::builder()
                .map_err(|e| CodegenError::new(format!("host machine is not supported: {e}")));
        }
        let triple = self.triple();
        let mut b = cranelift_codegen::isa::lookup_by_name(&triple)
            .map_err(|e| CodegenError::new(format!("backend for {triple} unavailable: {e}")))?;
        for f in &self.features {
            b.enable(f)
                .map_err(|e| CodegenError::new(format!("ISA flag {f}: {e}")))?;
        }
        Ok(b)
    }
}

/// The Cranelift settings of every function we compile. `opt_level` is `none` on purpose: with
/// `speed`, the e-graph pass re-places pure instructions at their uses, which strings out each FMA
/// accumulator chain at the end of the loop body and makes every load live across it (spills
/// everywhere): measured 2x slower conv/GEMM kernels. The kernels are emitted in a good order
/// already, constants are hoisted by hand (see `Emitter::float_const` in `builder.rs`).
fn cranelift_flags(position_independent: bool) -> Result<settings::Flags, CodegenError> {
    let mut flags = settings::builder();
    let pic = if position_independent {
        "true"
    } else {
        "false"
    };
    for (k, v) in [
        ("opt_level", "none"),
        ("use_colocated_libcalls", "false"),
        ("is_pic", pic),
        ("enable_verifier", "true"),
    ] {
        flags
            .set(k, v)
            .map_err(|e| CodegenError::new(format!("cranelift setting {k}={v}: {e}")))?;
    }
    Ok(settings::Flags::new(flags))
}

fn finish_isa(builder: IsaBuilder, flags: settings::Flags) -> Result<OwnedTargetIsa, CodegenError> {
    builder
        .finish(flags)
        .map_err(|e| CodegenError::new(format!("building the ISA: {e}")))
}

impl Target {
    /// Whether the AVX2/FMA microkernels (256-bit, `iced-x86`) may be used.
    pub fn has_avx2_fma(&self) -> bool {
        if !cfg!(target_arch = "x86_64") && self.native {
            return false;
        }
        let has = |f: &str| {
            if self.native {
                host_has(f)
            } else {
                self.features.contains(&f)
            }
        };
        self.fma && has("has_avx2") && has("has_fma") && has("has_avx")
    }

    /// Whether the AVX-512F microkernels (512-bit zmm, `iced-x86`) may be used: the AVX2/FMA
    /// path is available and the target (`x86_64-avx512`, or `native` on such a host) has
    /// AVX-512F.
    pub fn has_avx512f(&self) -> bool {
        let has = if self.native {
            cfg!(target_arch = "x86_64") && host_has("has_avx512f")
        } else {
            self.features.contains(&"has_avx512f")
        };
        self.has_avx2_fma() && has
    }

    /// Whether the int8 kernels may use AVX-512 VNNI (`vpdpbusd`: four u8 x s8 products summed
    /// into an i32 lane, no intermediate saturation): on `x86_64-avx512` (which requires it,
    /// see [`AVX512`]) and on `native` when the host has the AVX-512 microkernels, VNNI and
    /// BW (the u8 tile stores). Without it the int8 kernels pair bytes (`vpmaddubsw`) or words
    /// (`vpmaddwd`).
    pub fn has_int8_dot_product(&self) -> bool {
        // (A named target with the AVX-512 microkernels is `x86_64-avx512`.)
        let vnni = !self.native
            || (cfg!(target_arch = "x86_64")
                && host_has("has_avx512vnni")
                && host_has("has_avx512bw"));
        self.microkernel_isa() == crate::x64::asm::Isa::Avx512 && vnni
    }

    /// This target for code run in this process (the JIT): `native` on a host with AMX-INT8
    /// lets the int8 kernels use tiles (Linux's permission for the tile state is asked when
    /// the first one does). Not for objects: the program that links one would need the
    /// permission itself.
    pub fn for_jit(&self) -> Target {
        let mut t = self.clone();
        t.tiles = self.native && self.has_int8_dot_product() && host_has_amx();
        t
    }

    /// Whether the int8 kernels may use AMX tiles ([`Target::for_jit`] on an AMX host; they
    /// do when Linux grants the tile state, else they take the VNNI kernels).
    pub fn has_int8_tiles(&self) -> bool {
        self.tiles
    }

    /// The microkernel ISA of the GEMM path (meaningful when [`Target::has_avx2_fma`]): AVX-512
    /// for `x86_64-avx512`, and for `native` on a host with AVX-512F, VL and DQ. Checked by
    /// disassembly and an instruction-level emulator (`x64/asm/emulator.rs`) everywhere, and
    /// run against tract and the interpreter on AVX-512 hardware (a Xeon with AVX-512: 1.0-1.23x
    /// faster than the AVX2 kernels on resnet18, mobilenet_v2, bert_tiny, MiniLM, DistilBERT).
    pub(crate) fn microkernel_isa(&self) -> crate::x64::asm::Isa {
        let has = if self.native {
            cfg!(target_arch = "x86_64")
                && ["has_avx512f", "has_avx512vl", "has_avx512dq"]
                    .iter()
                    .all(|f| host_has(f))
        } else {
            self.features.contains(&"has_avx512f")
        };
        if self.has_avx2_fma() && has {
            crate::x64::asm::Isa::Avx512
        } else {
            crate::x64::asm::Isa::Avx2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The int8 kernels use VNNI on `x86_64-avx512` (which requires it) and on a native host
    /// that has it next to the AVX-512 microkernels; never on the other targets.
    #[test]
    fn int8_dot_products_only_where_the_target_has_them() {
        let has = |name: &str| Target::parse(name).unwrap().has_int8_dot_product();
        assert!(has("x86_64-avx512"));
        for name in ["x86_64-avx2", "x86_64-sse4.2", "aarch64-neon"] {
            assert!(!has(name), "{name}");
        }
        #[cfg(target_arch = "x86_64")]
        {
            let native = Target::parse("native").unwrap();
            let expected = std::is_x86_feature_detected!("avx512vnni")
                && native.microkernel_isa() == crate::x64::asm::Isa::Avx512;
            assert_eq!(native.has_int8_dot_product(), expected);
        }
    }
}
