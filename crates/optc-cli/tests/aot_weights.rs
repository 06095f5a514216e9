//! Lean AOT objects: an object stores each weight once. Weight transforms that grow the
//! data (a Winograd conv's `U`, 1.8x-4x its 3x3 weights) run at the object's first run into
//! zeroed memory instead; concurrent first runs compute them once and all runs give the
//! JIT's bits.

use optc::DType;
use optc_onnx::builder::{Attr, ModelBuilder};
use std::process::Command;

mod common;
use common::{compile_object, jit};

/// Three 3x3 convs the plans run as Winograd: F(4, 3) on the 16x16 maps (`U` 4x the
/// weights), F(2, 3) on the 8x8 map (1.8x).
fn winograd_model() -> (Vec<u8>, usize) {
    let weights = |shape, seed| common::weights(shape, seed, 0.05);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 32, 16, 16]);
    let shapes = [
        ("wa", vec![64, 32, 3, 3]),
        ("wb", vec![64, 64, 3, 3]),
        ("wc", vec![64, 64, 3, 3]),
    ];
    let mut weight_bytes = 0;
    for (k, (name, shape)) in shapes.iter().enumerate() {
        let w = weights(shape.clone(), k as f32);
        weight_bytes += w.numel() * 4;
        b.initializer(name, &w);
    }
    b.initializer("ba", &weights(vec![64], 5.0));
    weight_bytes += 64 * 4;
    let pads = || ("pads", Attr::Ints(vec![1; 4]));
    b.node("Conv", &["x", "wa", "ba"], &["a"], vec![pads()]);
    b.node("Relu", &["a"], &["ra"], vec![]);
    b.node("Conv", &["ra", "wb"], &["bb"], vec![pads()]);
    b.node(
        "MaxPool",
        &["bb"],
        &["p"],
        vec![
            ("kernel_shape", Attr::Ints(vec![2, 2])),
            ("strides", Attr::Ints(vec![2, 2])),
        ],
    );
    b.node("Conv", &["p", "wc"], &["y"], vec![pads()]);
    b.output("y");
    (b.to_bytes(), weight_bytes)
}

/// Runs the model on two threads at once (both first runs, released by a barrier, each with
/// its own workspace), then once more; checks the three outputs are equal and writes one.
const FIRST_RUNS_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "wino.h"

static void *input;
static pthread_barrier_t barrier;
typedef struct { void *out; void *ws; int status; } Run;

static void *run(void *arg) {
    Run *r = arg;
    const void *ins[1] = {input};
    void *outs[1] = {r->out};
    pthread_barrier_wait(&barrier);
    r->status = optc_wino_run(ins, outs, r->ws);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    input = malloc(optc_wino_input_bytes[0]);
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(input, 1, optc_wino_input_bytes[0], f) != optc_wino_input_bytes[0]) return 3;
    fclose(f);
    size_t ws = (optc_wino_workspace_size() + 63) / 64 * 64;
    Run runs[3];
    for (int i = 0; i < 3; i++) {
        runs[i].out = malloc(optc_wino_output_bytes[0]);
        runs[i].ws = aligned_alloc(64, ws);
    }
    pthread_barrier_init(&barrier, NULL, 2);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, run, &runs[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    pthread_barrier_init(&barrier, NULL, 1);
    run(&runs[2]);
    for (int i = 0; i < 3; i++) {
        if (runs[i].status != 0) { fprintf(stderr, "run %d: status %d\n", i, runs[i].status); return 4; }
        if (memcmp(runs[i].out, runs[0].out, optc_wino_output_bytes[0]) != 0) {
            fprintf(stderr, "run %d differs from run 0\n", i);
            return 5;
        }
    }
    f = fopen(argv[2], "wb");
    if (!f || fwrite(runs[0].out, 1, optc_wino_output_bytes[0], f) != optc_wino_output_bytes[0]) return 6;
    fclose(f);
    return 0;
}
"#;

/// Bytes of the object's sections stored in the file (code aside) and of its zeroed ones.
fn data_bytes(obj: &[u8]) -> (u64, u64) {
    use object::{Object, ObjectSection, SectionKind};
    let f = object::File::parse(obj).unwrap();
    let (mut stored, mut zeroed) = (0, 0);
    for s in f.sections() {
        match s.kind() {
            SectionKind::ReadOnlyData | SectionKind::Data | SectionKind::ReadOnlyDataWithRel => {
                stored += s.size()
            }
            SectionKind::UninitializedData => zeroed += s.size(),
            _ => {}
        }
    }
    (stored, zeroed)
}

#[test]
fn winograd_weights_are_stored_once_and_transformed_at_the_first_run() {
    let dir = common::tmpdir("aot", "weights");
    let (bytes, weight_bytes) = winograd_model();
    let model = dir.join("wino.onnx");
    std::fs::write(&model, &bytes).unwrap();
    let obj = dir.join("wino.o");
    compile_object(&model, &obj);
    let (stored, zeroed) = data_bytes(&std::fs::read(&obj).unwrap());
    // The weights (packed for the kernels, MR-row tiles, no padding here) and little else;
    // `U` (4x + 4x + 1.8x the conv weights) is in the zeroed sections.
    assert!(
        stored as f64 <= 1.05 * weight_bytes as f64,
        "the object stores {stored} bytes of data for {weight_bytes} bytes of weights"
    );
    assert!(
        zeroed as f64 >= 3.0 * weight_bytes as f64,
        "no zeroed space for the transformed weights ({zeroed} bytes): did the convs take the Winograd path?"
    );

    let exe = dir.join("first_runs");
    let src = dir.join("first_runs.c");
    std::fs::write(&src, FIRST_RUNS_C).unwrap();
    let cc = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-pthread", "-I"])
        .arg(&dir)
        .arg(&src)
        .arg(&obj)
        .args(["-lm", "-o"])
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );

    let graph = optc::import_bytes(&bytes, &optc::Options::default()).unwrap();
    let inputs = optc::random_inputs(&graph.input_types(), 5);
    let input = dir.join("in.bin");
    std::fs::write(&input, inputs[0].data().to_le_bytes()).unwrap();
    let out = dir.join("out.bin");
    // Each process has one first run; a few of them give the two threads' race a chance
    // to show (a run that read `U` before it was ready differs from the others).
    for _ in 0..8 {
        let run = Command::new(&exe).arg(&input).arg(&out).output().unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    assert_eq!(
        std::fs::read(&out).unwrap(),
        jit(&bytes, &inputs)[0],
        "the object's first runs and the JIT (U computed at compile time) differ"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
