//! A sample of random graphs compiled ahead of time for AArch64, linked with the C example
//! by the cross gcc and run under qemu-user, compared with the interpreter. (`.ci/run`
//! installs both tools; elsewhere the test is skipped when they are missing.)

use optc_fuzz::source::SplitMix;
use optc_ir::{Data, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

const GRAPHS: usize = 24;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn random_graphs_run_as_aarch64_objects_like_the_interpreter() {
    if !have("qemu-aarch64") || !have("aarch64-linux-gnu-gcc") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have qemu-aarch64 and aarch64-linux-gnu-gcc (see .ci/run)"
        );
        eprintln!("skipped: qemu-aarch64 or aarch64-linux-gnu-gcc is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("optc-fuzz-aarch64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rng = SplitMix::new(6);
    let mut ran = 0;
    while ran < GRAPHS {
        let Some(graph) = optc_fuzz::graphs::generate(&rng.bytes(96)) else {
            continue;
        };
        let inputs = optc::random_inputs(&graph.input_types(), 11);
        let Ok(want) = optc_ir::interp::run(&graph, &inputs) else {
            continue;
        };
        let name = format!("g{ran}");
        let opts = optc::Options {
            opt_level: 3,
            target: "aarch64-neon".into(),
            ..Default::default()
        };
        let obj_opts = optc::ObjectOptions {
            name: name.clone(),
            source: name.clone(),
            keep_clif: false,
            keep_asm: false,
        };
        let text = optc_ir::text::print(&graph);
        let art = optc::compile_object_graph(graph.clone(), &opts, &obj_opts)
            .unwrap_or_else(|e| panic!("AArch64 compile failed: {e}\n{text}"));
        let obj = dir.join(format!("{name}.o"));
        std::fs::write(&obj, art.object()).expect("write object");
        std::fs::write(dir.join(format!("{name}.h")), art.header()).expect("write header");
        let exe = dir.join(&name);
        let cc = Command::new("aarch64-linux-gnu-gcc")
            .arg("-O2")
            .arg(format!("-DOPTC_MODEL={name}"))
            .arg("-I")
            .arg(&dir)
            .arg(root().join("examples/c/main.c"))
            .arg(&obj)
            .args(["-lm", "-o"])
            .arg(&exe)
            .output()
            .expect("gcc runs");
        assert!(
            cc.status.success(),
            "{}",
            String::from_utf8_lossy(&cc.stderr)
        );
        let mut args: Vec<PathBuf> = vec![];
        for (i, t) in inputs.iter().enumerate() {
            let p = dir.join(format!("{name}_in{i}.bin"));
            std::fs::write(&p, t.data().to_le_bytes()).expect("write input");
            args.push(p);
        }
        let outs: Vec<PathBuf> = (0..want.len())
            .map(|i| dir.join(format!("{name}_out{i}.bin")))
            .collect();
        args.extend(outs.iter().cloned());
        let run = Command::new("qemu-aarch64")
            .arg("-L")
            .arg("/usr/aarch64-linux-gnu")
            .arg(&exe)
            .args(&args)
            .output()
            .expect("qemu runs");
        assert!(
            run.status.success(),
            "{}\n{text}",
            String::from_utf8_lossy(&run.stderr)
        );
        let got: Vec<Tensor> = outs
            .iter()
            .zip(&want)
            .map(|(p, w)| {
                let bytes = std::fs::read(p).expect("output written");
                let data = Data::from_le_bytes(w.dtype(), &bytes).expect("whole elements");
                Tensor::new(w.shape().to_vec(), data).expect("output size")
            })
            .collect();
        if let Err(why) = optc_fuzz::differential::agree(&got, &want) {
            panic!("the AArch64 object differs from the interpreter: {why}\n{text}");
        }
        ran += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
