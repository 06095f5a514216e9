//! A small interpreter for the x86-64 instructions the AVX-512 microkernels use (the f32 ones
//! and the int8 VNNI ones), so that their results can be checked on hosts without AVX-512
//! (test only). Memory is a set of virtual
//! regions; any access outside them (e.g. a masked-off lane that is read anyway) panics.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

const GPRS: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

pub(super) struct Machine {
    pub gpr: [u64; 16],
    zmm: [[u32; 16]; 32],
    k: [u16; 8],
    zf: bool,
    /// `(base address, bytes)`.
    pub mem: Vec<(u64, Vec<u8>)>,
}

/// 32-bit halves of [`GPRS`], then the low bytes the kernels use.
const GPRS32: [Register; 16] = [
    Register::EAX,
    Register::ECX,
    Register::EDX,
    Register::EBX,
    Register::ESP,
    Register::EBP,
    Register::ESI,
    Register::EDI,
    Register::R8D,
    Register::R9D,
    Register::R10D,
    Register::R11D,
    Register::R12D,
    Register::R13D,
    Register::R14D,
    Register::R15D,
];
const GPRS8: [Register; 4] = [Register::AL, Register::CL, Register::DL, Register::BL];

/// Index and size in bytes of a general register.
fn gpr(r: Register) -> (usize, usize) {
    let find = |t: &[Register]| t.iter().position(|&g| g == r);
    if let Some(i) = find(&GPRS) {
        (i, 8)
    } else if let Some(i) = find(&GPRS32) {
        (i, 4)
    } else if let Some(i) = find(&GPRS8) {
        (i, 1)
    } else {
        panic!("emulator: register {r:?}")
    }
}

fn gi(r: Register) -> usize {
    gpr(r).0
}

impl Machine {
    pub fn new() -> Machine {
        Machine {
            gpr: [0; 16],
            zmm: [[0; 16]; 32],
            k: [0; 8],
            zf: false,
            mem: vec![],
        }
    }
    pub fn set(&mut self, r: Register, v: u64) {
        self.gpr[gi(r)] = v;
    }
    fn slot(&mut self, addr: u64, len: usize) -> &mut [u8] {
        for (base, bytes) in &mut self.mem {
            if addr >= *base && addr + len as u64 <= *base + bytes.len() as u64 {
                let o = (addr - *base) as usize;
                return &mut bytes[o..o + len];
            }
        }
        panic!("emulator: access of {len} bytes at {addr:#x} outside every region");
    }
    pub fn read32(&mut self, addr: u64) -> u32 {
        u32::from_le_bytes(self.slot(addr, 4).try_into().unwrap())
    }
    fn read64(&mut self, addr: u64) -> u64 {
        u64::from_le_bytes(self.slot(addr, 8).try_into().unwrap())
    }
    fn write32(&mut self, addr: u64, v: u32) {
        self.slot(addr, 4).copy_from_slice(&v.to_le_bytes());
    }
    fn reg(&self, r: Register) -> u64 {
        let v = self.gpr[gi(r)];
        match gpr(r).1 {
            8 => v,
            4 => v & 0xffff_ffff,
            1 => v & 0xff,
            s => panic!("emulator: {s}-byte register"),
        }
    }
    /// Write a general register (32-bit writes zero-extend).
    fn wreg(&mut self, r: Register, v: u64) {
        let v = match gpr(r).1 {
            8 => v,
            4 => v & 0xffff_ffff,
            s => panic!("emulator: write of {s}-byte register"),
        };
        self.gpr[gi(r)] = v;
    }
    fn addr(&self, i: &Instruction) -> u64 {
        if i.is_ip_rel_memory_operand() {
            return i.ip_rel_memory_address();
        }
        let mut a = i.memory_displacement64();
        if i.memory_base() != Register::None {
            a = a.wrapping_add(self.reg(i.memory_base()));
        }
        if i.memory_index() != Register::None {
            a = a.wrapping_add(self.reg(i.memory_index()) * i.memory_index_scale() as u64);
        }
        a
    }
    fn zi(r: Register) -> usize {
        assert!(r.is_zmm(), "emulator: vector register {r:?} is not a zmm");
        r as usize - Register::ZMM0 as usize
    }
    /// The register file index of an xmm register (the low 128 bits of its zmm).
    fn xi(r: Register) -> usize {
        assert!(r.is_xmm(), "emulator: vector register {r:?} is not an xmm");
        r as usize - Register::XMM0 as usize
    }
    /// Write an xmm destination: its 4 dwords, the rest of the zmm zeroed (VEX and EVEX).
    fn xdst(&mut self, r: Register, v: [u32; 4]) {
        let d = &mut self.zmm[Self::xi(r)];
        *d = [0; 16];
        d[..4].copy_from_slice(&v);
    }
    fn write8(&mut self, addr: u64, v: u8) {
        self.slot(addr, 1)[0] = v;
    }
    fn ki(r: Register) -> usize {
        assert!((Register::K0 as usize..=Register::K7 as usize).contains(&(r as usize)));
        r as usize - Register::K0 as usize
    }
    fn mask(&self, i: &Instruction) -> u16 {
        if i.has_op_mask() {
            self.k[Self::ki(i.op_mask())]
        } else {
            0xffff
        }
    }
    /// A vector source operand (register, 16 floats, or an f32 broadcast).
    fn vsrc(&mut self, i: &Instruction, o: u32, mask: u16) -> [u32; 16] {
        match i.op_kind(o) {
            OpKind::Register => self.zmm[Self::zi(i.op_register(o))],
            OpKind::Memory => {
                let a = self.addr(i);
                if i.is_broadcast()
                    || matches!(
                        i.mnemonic(),
                        Mnemonic::Vbroadcastss | Mnemonic::Vpbroadcastd
                    )
                {
                    [self.read32(a); 16]
                } else {
                    let mut v = [0; 16];
                    for (l, x) in v.iter_mut().enumerate() {
                        if mask >> l & 1 == 1 {
                            *x = self.read32(a + 4 * l as u64);
                        }
                    }
                    v
                }
            }
            k => panic!("emulator: operand kind {k:?}"),
        }
    }
    /// Write a zmm destination under the instruction's mask (merge or zero).
    fn vdst(&mut self, i: &Instruction, v: [u32; 16]) {
        let m = self.mask(i);
        let d = &mut self.zmm[Self::zi(i.op0_register())];
        for l in 0..16 {
            if m >> l & 1 == 1 {
                d[l] = v[l];
            } else if i.zeroing_masking() {
                d[l] = 0;
            }
        }
    }
    /// f32 lanes of both sources.
    fn lanes(&mut self, i: &Instruction, f: impl Fn(f32, f32) -> f32) {
        self.dwords(i, |a, b| f(f32::from_bits(a), f32::from_bits(b)).to_bits());
    }
    /// Dword lanes of both sources.
    fn dwords(&mut self, i: &Instruction, f: impl Fn(u32, u32) -> u32) {
        let a = self.vsrc(i, 1, 0xffff);
        let b = self.vsrc(i, 2, 0xffff);
        let mut r = [0; 16];
        for l in 0..16 {
            r[l] = f(a[l], b[l]);
        }
        self.vdst(i, r);
    }
    /// Dword lanes of the destination (an accumulator) and both sources.
    fn ternary(&mut self, i: &Instruction, f: impl Fn(u32, u32, u32) -> u32) {
        let d = self.zmm[Self::zi(i.op0_register())];
        let a = self.vsrc(i, 1, 0xffff);
        let b = self.vsrc(i, 2, 0xffff);
        let mut r = [0; 16];
        for l in 0..16 {
            r[l] = f(d[l], a[l], b[l]);
        }
        self.vdst(i, r);
    }
    fn src64(&mut self, i: &Instruction, o: u32) -> u64 {
        match i.op_kind(o) {
            OpKind::Register => self.reg(i.op_register(o)),
            OpKind::Memory => {
                let a = self.addr(i);
                self.read64(a)
            }
            OpKind::Immediate8
            | OpKind::Immediate32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
            | OpKind::Immediate64 => i.immediate(o),
            k => panic!("emulator: operand kind {k:?}"),
        }
    }

    /// Run `code` (loaded at `ip`) as the System-V call `f(args..)`: the first six integer
    /// arguments in rdi, rsi, rdx, rcx, r8, r9, the others on a stack region (at
    /// `0x7000_0000`, after a return address) that rsp points to; until `ret`, at most
    /// `limit` instructions.
    pub fn call(&mut self, code: &[u8], ip: u64, args: &[u64], limit: usize) {
        const STACK: u64 = 0x7000_0000;
        let regs = [
            Register::RDI,
            Register::RSI,
            Register::RDX,
            Register::RCX,
            Register::R8,
            Register::R9,
        ];
        for (&r, &v) in regs.iter().zip(args) {
            self.set(r, v);
        }
        let mut stack = vec![0xdead_beefu64];
        stack.extend(args.iter().skip(regs.len()));
        let bytes = stack.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.mem.push((STACK, bytes));
        self.set(Register::RSP, STACK);
        self.run(code, ip, limit);
    }

    /// Run `code` (loaded at `ip`) from its start until `ret`; at most `limit` instructions.
    pub fn run(&mut self, code: &[u8], ip: u64, limit: usize) {
        let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
        for _ in 0..limit {
            let i = d.decode();
            assert!(
                !i.is_invalid(),
                "emulator: invalid instruction at {:#x}",
                i.ip()
            );
            let mut jump = None;
            match i.mnemonic() {
                Mnemonic::Ret => return,
                Mnemonic::Vzeroupper
                | Mnemonic::Nop
                | Mnemonic::Prefetcht0
                | Mnemonic::Prefetcht1 => {}
                Mnemonic::Lea => {
                    let a = self.addr(&i);
                    self.wreg(i.op0_register(), a);
                }
                Mnemonic::Mov => {
                    let v = self.src64(&i, 1);
                    self.wreg(i.op0_register(), v);
                }
                Mnemonic::Add | Mnemonic::Sub | Mnemonic::And | Mnemonic::Shr | Mnemonic::Shl => {
                    let r = i.op0_register();
                    let (a, b) = (self.reg(r), self.src64(&i, 1));
                    let v = match i.mnemonic() {
                        Mnemonic::Add => a.wrapping_add(b),
                        Mnemonic::Sub => a.wrapping_sub(b),
                        Mnemonic::And => a & b,
                        Mnemonic::Shr => a >> (b & 63),
                        _ => a << (b & 31),
                    };
                    self.wreg(r, v);
                    self.zf = self.reg(r) == 0;
                }
                Mnemonic::Dec => {
                    let r = i.op0_register();
                    let v = self.reg(r).wrapping_sub(1);
                    self.wreg(r, v);
                    self.zf = self.reg(r) == 0;
                }
                Mnemonic::Je => jump = self.zf.then(|| i.near_branch_target()),
                Mnemonic::Jne => jump = (!self.zf).then(|| i.near_branch_target()),
                Mnemonic::Kmovw => {
                    self.k[Self::ki(i.op0_register())] = self.reg(i.op1_register()) as u16;
                }
                Mnemonic::Vpxord => self.dwords(&i, |a, b| a ^ b),
                Mnemonic::Vpandd => self.dwords(&i, |a, b| a & b),
                Mnemonic::Vpord => self.dwords(&i, |a, b| a | b),
                Mnemonic::Vmovups
                | Mnemonic::Vmovdqu32
                | Mnemonic::Vmovdqa32
                | Mnemonic::Vbroadcastss
                | Mnemonic::Vpbroadcastd => {
                    let m = self.mask(&i);
                    if i.op_kind(0) == OpKind::Memory {
                        let v = self.zmm[Self::zi(i.op1_register())];
                        let a = self.addr(&i);
                        for (l, &x) in v.iter().enumerate() {
                            if m >> l & 1 == 1 {
                                self.write32(a + 4 * l as u64, x);
                            }
                        }
                    } else {
                        let v = self.vsrc(&i, 1, m);
                        self.vdst(&i, v);
                    }
                }
                // Per 128-bit lane: the low / high two dwords (ps) or the low / high qword (pd)
                // of both sources, interleaved.
                Mnemonic::Vunpcklps
                | Mnemonic::Vunpckhps
                | Mnemonic::Vunpcklpd
                | Mnemonic::Vunpckhpd => {
                    let (a, b) = (self.vsrc(&i, 1, 0xffff), self.vsrc(&i, 2, 0xffff));
                    let mut r = [0; 16];
                    for lane in 0..4 {
                        let (x, y) = (&a[4 * lane..4 * lane + 4], &b[4 * lane..4 * lane + 4]);
                        let v = match i.mnemonic() {
                            Mnemonic::Vunpcklps => [x[0], y[0], x[1], y[1]],
                            Mnemonic::Vunpckhps => [x[2], y[2], x[3], y[3]],
                            Mnemonic::Vunpcklpd => [x[0], x[1], y[0], y[1]],
                            _ => [x[2], x[3], y[2], y[3]],
                        };
                        r[4 * lane..4 * lane + 4].copy_from_slice(&v);
                    }
                    self.vdst(&i, r);
                }
                // 128-bit lane `imm` of a zmm to memory (masked per dword).
                Mnemonic::Vextractf32x4 => {
                    assert_eq!(
                        i.op_kind(0),
                        OpKind::Memory,
                        "emulator: vextractf32x4 to memory"
                    );
                    let v = self.zmm[Self::zi(i.op1_register())];
                    let lane = (i.immediate(2) & 3) as usize;
                    let (m, a) = (self.mask(&i), self.addr(&i));
                    for l in 0..4 {
                        if m >> l & 1 == 1 {
                            self.write32(a + 4 * l as u64, v[4 * lane + l]);
                        }
                    }
                }
                // The first source with lane `imm` replaced by 16 bytes of memory.
                Mnemonic::Vinsertf32x4 => {
                    assert!(!i.has_op_mask(), "emulator: masked vinsertf32x4");
                    let mut r = self.vsrc(&i, 1, 0xffff);
                    let lane = (i.immediate(3) & 3) as usize;
                    let a = self.addr(&i);
                    for l in 0..4 {
                        r[4 * lane + l] = self.read32(a + 4 * l as u64);
                    }
                    self.vdst(&i, r);
                }
                Mnemonic::Vfmadd231ps => self.ternary(&i, |d, a, b| fma(a, b, d)),
                Mnemonic::Vfnmadd231ps => self.ternary(&i, |d, a, b| fma(a ^ 1 << 31, b, d)),
                Mnemonic::Vfmadd213ps => self.ternary(&i, fma),
                // Per dword lane: + the 4 products of unsigned bytes of the first source and
                // signed bytes of the second, without saturation (wrapping i32).
                Mnemonic::Vpdpbusd => self.ternary(&i, |acc, a, b| {
                    let mut s = acc as i32;
                    for j in 0..4 {
                        let u = (a >> (8 * j)) as u8 as i32;
                        let v = (b >> (8 * j)) as u8 as i8 as i32;
                        s = s.wrapping_add(u * v);
                    }
                    s as u32
                }),
                Mnemonic::Vpaddd => self.dwords(&i, u32::wrapping_add),
                Mnemonic::Vpsubd => self.dwords(&i, u32::wrapping_sub),
                // i32 to f32, rounded to nearest even (MXCSR's default, Rust's `as`).
                Mnemonic::Vcvtdq2ps => {
                    let a = self.vsrc(&i, 1, 0xffff);
                    let mut r = [0; 16];
                    for l in 0..16 {
                        r[l] = (a[l] as i32 as f32).to_bits();
                    }
                    self.vdst(&i, r);
                }
                Mnemonic::Vpslld => {
                    let a = self.vsrc(&i, 1, 0xffff);
                    let s = i.immediate(2) as u32;
                    let mut r = [0; 16];
                    for l in 0..16 {
                        r[l] = if s > 31 { 0 } else { a[l] << s };
                    }
                    self.vdst(&i, r);
                }
                // Only mode 0: to the nearest integer, ties to even.
                Mnemonic::Vrndscaleps => {
                    assert_eq!(i.immediate(2), 0, "emulator: vrndscaleps mode");
                    let a = self.vsrc(&i, 1, 0xffff);
                    let mut r = [0; 16];
                    for l in 0..16 {
                        r[l] = f32::from_bits(a[l]).round_ties_even().to_bits();
                    }
                    self.vdst(&i, r);
                }
                // Only the ordered greater-than predicate (`_CMP_GT_OQ`), into an opmask.
                Mnemonic::Vcmpps => {
                    assert_eq!(i.immediate(3), 0x1e, "emulator: vcmpps predicate");
                    let (a, b) = (self.vsrc(&i, 1, 0xffff), self.vsrc(&i, 2, 0xffff));
                    let mut m = 0u16;
                    for l in 0..16 {
                        if f32::from_bits(a[l]) > f32::from_bits(b[l]) {
                            m |= 1 << l;
                        }
                    }
                    self.k[Self::ki(i.op0_register())] = m;
                }
                // f32 to i32 truncated (NaN and out of range: the integer indefinite).
                Mnemonic::Vcvttps2dq => {
                    let a = self.vsrc(&i, 1, 0xffff);
                    let mut r = [0; 16];
                    for l in 0..16 {
                        let x = f32::from_bits(a[l]);
                        r[l] = if !(-2147483648.0..2147483648.0).contains(&x) {
                            0x8000_0000
                        } else {
                            x as i32 as u32
                        };
                    }
                    self.vdst(&i, r);
                }
                // 16 unsigned dwords to bytes with unsigned saturation, into an xmm.
                Mnemonic::Vpmovusdb => {
                    assert!(!i.has_op_mask(), "emulator: masked vpmovusdb");
                    let a = self.zmm[Self::zi(i.op1_register())];
                    let b: Vec<u8> = a.iter().map(|&x| x.min(255) as u8).collect();
                    let mut v = [0; 4];
                    for (j, w) in v.iter_mut().enumerate() {
                        *w = u32::from_le_bytes(b[4 * j..4 * j + 4].try_into().unwrap());
                    }
                    self.xdst(i.op0_register(), v);
                }
                // An xmm's 16 bytes to memory (vmovdqu8: only the bytes of the mask).
                Mnemonic::Vmovdqu | Mnemonic::Vmovdqu8 => {
                    assert_eq!(
                        i.op_kind(0),
                        OpKind::Memory,
                        "emulator: load by {:?}",
                        i.mnemonic()
                    );
                    let v = self.zmm[Self::xi(i.op1_register())];
                    let (m, a) = (self.mask(&i), self.addr(&i));
                    for b in 0..16 {
                        if m >> b & 1 == 1 {
                            self.write8(a + b as u64, (v[b / 4] >> (8 * (b % 4))) as u8);
                        }
                    }
                }
                // An xmm shifted right by `imm` bytes, zeros in.
                Mnemonic::Vpsrldq => {
                    let a = self.zmm[Self::xi(i.op1_register())];
                    let n = i.immediate(2).min(16) as usize;
                    let bytes: Vec<u8> = a[..4].iter().flat_map(|x| x.to_le_bytes()).collect();
                    let mut out = [0u8; 16];
                    out[..16 - n].copy_from_slice(&bytes[n..]);
                    let mut v = [0; 4];
                    for (j, w) in v.iter_mut().enumerate() {
                        *w = u32::from_le_bytes(out[4 * j..4 * j + 4].try_into().unwrap());
                    }
                    self.xdst(i.op0_register(), v);
                }
                Mnemonic::Vsubps => self.lanes(&i, |a, b| a - b),
                Mnemonic::Vaddps => self.lanes(&i, |a, b| a + b),
                Mnemonic::Vmulps => self.lanes(&i, |a, b| a * b),
                Mnemonic::Vdivps => self.lanes(&i, |a, b| a / b),
                // x86 semantics: the second source unless the first is strictly greater/less.
                Mnemonic::Vmaxps => self.lanes(&i, |a, b| if a > b { a } else { b }),
                Mnemonic::Vminps => self.lanes(&i, |a, b| if a < b { a } else { b }),
                m => panic!("emulator: instruction {m:?} at {:#x}", i.ip()),
            }
            if let Some(t) = jump {
                d.set_position((t - ip) as usize).unwrap();
                d.set_ip(t);
            }
        }
        panic!("emulator: no ret after {limit} instructions");
    }
}

/// `a * b + c` of f32 bit patterns, rounded once.
fn fma(a: u32, b: u32, c: u32) -> u32 {
    f32::from_bits(a)
        .mul_add(f32::from_bits(b), f32::from_bits(c))
        .to_bits()
}
