mod common;
use common::*;
use optc_codegen::{compile_jit, Target};
use optc_ir::quantized::ActivationQuantization;
use optc_ir::{Data, Graph, Op, Tensor};

fn graph(
    m: usize,
    k: usize,
    n: usize,
    act: ActivationQuantization,
    lim: i64,
    f32mm: bool,
) -> Graph {
    let mut rng = Rng::new(1);
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[m, k]));
    if f32mm {
        let b = g.add_const("b", f32t(&mut rng, &[k, n]));
        let y = g.add("mm", Op::MatMul, &[x, b]).unwrap();
        g.add_output("y", y);
        return g;
    }
    let w: Vec<i8> = (0..k * n).map(|_| rng.int(-lim, lim) as i8).collect();
    let w = g.add_const("w", Tensor::new(vec![k, n], Data::I8(w)).unwrap());
    let ws = g.add_const("ws", f32t(&mut rng, &[n]));
    let mut ins = vec![x, w, ws];
    if act == ActivationQuantization::Static {
        ins.push(
            g.add_const(
                "xs",
                Tensor::scalar_f32(
                    std::env::var("ZZ_XS")
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0.01),
                ),
            ),
        );
        ins.push(g.add_const("xz", Tensor::new(vec![], Data::U8(vec![100])).unwrap()));
    }
    let y = g
        .add("q", Op::QuantizedMatMul { activation: act }, &ins)
        .unwrap();
    g.add_output("y", y);
    g
}

#[test]
fn zz_speed() {
    let t = Target::host().unwrap();
    for &(m, k, n) in &[
        (1usize, 784usize, 512usize),
        (1, 1280, 1000),
        (49, 512, 512),
        (49, 4608, 512),
    ] {
        for (name, act, lim, f32mm) in [
            ("f32", ActivationQuantization::Dynamic, 0, true),
            ("dyn bp", ActivationQuantization::Dynamic, 64, false),
            ("static bp", ActivationQuantization::Static, 64, false),
            ("dyn wp", ActivationQuantization::Dynamic, 127, false),
        ] {
            let g = graph(m, k, n, act, lim, f32mm);
            let mut jm = compile_jit(&g, &t).unwrap();
            jm.set_threads(1);
            let inputs = inputs_for(&g, 3);
            let mut outs: Vec<Tensor> = jm
                .output_types()
                .iter()
                .map(|t| Tensor::zeros(t.dtype, t.shape.clone()))
                .collect();
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let mut ws = jm.new_workspace();
            let mut best = f64::MAX;
            for _ in 0..5 {
                let it = 200;
                let t0 = std::time::Instant::now();
                for _ in 0..it {
                    jm.run(&refs, &mut outs, &mut ws).unwrap();
                }
                best = best.min(t0.elapsed().as_secs_f64() / it as f64);
            }
            eprintln!(
                "M={m} K={k} N={n} {name}: {:.1} us, {:.1} GOP/s",
                best * 1e6,
                2.0 * (m * k * n) as f64 / best / 1e9
            );
        }
    }
}

#[test]
fn zz_profile() {
    let Ok(which) = std::env::var("ZZ_CASE") else {
        return;
    };
    let t = Target::host().unwrap();
    let act = if which == "dyn" {
        ActivationQuantization::Dynamic
    } else {
        ActivationQuantization::Static
    };
    let g = graph(
        128,
        std::env::var("ZZ_K").unwrap().parse().unwrap(),
        std::env::var("ZZ_N").unwrap().parse().unwrap(),
        act,
        64,
        false,
    );
    let mut jm = compile_jit(&g, &t).unwrap();
    jm.set_threads(1);
    let inputs = inputs_for(&g, 3);
    let mut outs: Vec<Tensor> = jm
        .output_types()
        .iter()
        .map(|t| Tensor::zeros(t.dtype, t.shape.clone()))
        .collect();
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let mut ws = jm.new_workspace();
    for _ in 0..3000 {
        jm.run(&refs, &mut outs, &mut ws).unwrap();
    }
}
