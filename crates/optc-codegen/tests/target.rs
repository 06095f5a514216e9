//! The target description: every named target parses into ISA level, vector registers,
//! caches and core count, and the GEMM blocking follows the caches.

use optc_codegen::Target;

#[test]
fn targets_describe_themselves() {
    for name in [
        "native",
        "x86_64-sse4.2",
        "x86_64-avx2",
        "x86_64-avx512",
        "aarch64-neon",
    ] {
        let t = Target::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let c = t.caches();
        assert!(
            c.l1d >= 16 << 10 && c.l2 > c.l1d && c.l3 >= c.l2,
            "{name}: {c:?}"
        );
        assert!([16, 32].contains(&t.vector_regs()), "{name}");
        assert_eq!(t.vector_lanes(), 4, "{name}");
        let d = t.describe();
        assert!(
            d.starts_with(name) && d.contains("KC=") && d.contains("L2"),
            "{d}"
        );
        if name == "native" {
            assert!(t.cores() >= 1);
        } else {
            assert_eq!(
                t.cores(),
                0,
                "{name}: AOT targets leave the core count to run time"
            );
        }
    }
    let d = Target::parse("x86_64-avx2").unwrap().describe();
    // 32 KiB L1d, 512 KiB L2: a 16 KiB B panel (256 x 16 floats), a 144 KiB A block.
    assert!(d.contains("KC=256 MC=144"), "{d}");
    assert!(Target::parse("x86_64-avx512")
        .unwrap()
        .describe()
        .contains("AVX-512F"));
    assert!(Target::parse("x86_64-sse4.2")
        .unwrap()
        .describe()
        .contains("SSE4.2"));
    let e = Target::parse("vax").unwrap_err().to_string();
    assert!(e.contains("vax") && e.contains("x86_64-avx2"), "{e}");
}

#[test]
fn winograd_limit_is_validated() {
    let t = Target::parse("x86_64-avx2").unwrap();
    assert_eq!(t.winograd(), 4);
    assert_eq!(t.clone().with_winograd(0).unwrap().winograd(), 0);
    assert_eq!(t.clone().with_winograd(2).unwrap().winograd(), 2);
    let e = t.with_winograd(3).unwrap_err().to_string();
    assert!(e.contains("0 (off), 2 or 4"), "{e}");
}
