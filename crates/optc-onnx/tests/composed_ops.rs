//! Ops imported as compositions in modules of their own (`AffineGrid`, `Col2Im`, `Det`, `DeformConv`,
//! `MaxUnpool`, `TensorScatter`, `MaxPool`'s indices output, `MelWeightMatrix`, `TfIdfVectorizer`, `ai.onnx.ml`'s ops) and the training modes of `BatchNormalization` and
//! `Dropout`, each against its ONNX reference definition written out here independently in
//! f64, element by element (the determinant by the Leibniz formula, not by elimination).

mod common;

use common::import;
use optc_ir::{DType, Data, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};

fn rand_t(shape: &[usize], seed: &mut u64, scale: f32) -> Tensor {
    common::rand_scaled(shape, seed, scale)
}

fn i64s(shape: &[usize], v: Vec<i64>) -> Tensor {
    Tensor::new(shape.to_vec(), Data::I64(v)).unwrap()
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

fn run(m: &ModelBuilder, inputs: &[Tensor]) -> Vec<Tensor> {
    optc_ir::interp::run(&import(m), inputs).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_close(ours: &Tensor, want: &[f64], shape: &[usize], tolerance: f64, what: &str) {
    assert_eq!(ours.shape(), shape, "{what}");
    for (i, (x, y)) in ours.to_f64_vec().iter().zip(want).enumerate() {
        assert!(
            (x - y).abs() <= tolerance * (1.0 + y.abs()),
            "{what} [{i}]: {x} vs {y}"
        );
    }
}

/// The multi-index of flat position `i` in `shape` (row-major).
fn unflatten(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        idx[k] = i % shape[k];
        i /= shape[k];
    }
    idx
}

#[test]
fn affine_grid_maps_normalized_pixel_coordinates() {
    let mut seed = 1u64;
    for (spatial, align) in [
        (vec![3usize, 4], 0),
        (vec![3, 4], 1),
        (vec![1, 5], 1),
        (vec![2, 3, 2], 0),
        (vec![2, 1, 3], 1),
    ] {
        let d = spatial.len();
        let n = 2;
        let theta = rand_t(&[n, d, d + 1], &mut seed, 1.5);
        let mut size = vec![n as i64, 3];
        size.extend(spatial.iter().map(|&v| v as i64));
        let mut m = ModelBuilder::new(20);
        m.input("theta", DType::F32, &dims(&[n, d, d + 1]))
            .initializer("size", &i64s(&[d + 2], size))
            .node(
                "AffineGrid",
                &["theta", "size"],
                &["grid"],
                vec![("align_corners", Attr::Int(align))],
            )
            .output("grid");
        let coordinate = |i: usize, len: usize| -> f64 {
            if align == 1 {
                if len == 1 {
                    -1.0
                } else {
                    -1.0 + 2.0 * i as f64 / (len - 1) as f64
                }
            } else {
                (2.0 * i as f64 + 1.0) / len as f64 - 1.0
            }
        };
        let t = theta.to_f64_vec();
        let mut shape = vec![n];
        shape.extend(&spatial);
        shape.push(d);
        let want: Vec<f64> = (0..shape.iter().product())
            .map(|flat| {
                let idx = unflatten(flat, &shape);
                let (b, out) = (idx[0], idx[d + 1]);
                // The homogeneous point: the innermost axis' coordinate first, then a 1.
                let mut point: Vec<f64> = (0..d)
                    .rev()
                    .map(|axis| coordinate(idx[axis + 1], spatial[axis]))
                    .collect();
                point.push(1.0);
                (0..=d)
                    .map(|j| t[(b * d + out) * (d + 1) + j] * point[j])
                    .sum()
            })
            .collect();
        let got = run(&m, &[theta]);
        assert_close(
            &got[0],
            &want,
            &shape,
            1e-6,
            &format!("AffineGrid {spatial:?} {align}"),
        );
    }
}

#[test]
fn col2im_adds_every_block_element_into_its_pixel() {
    let mut seed = 2u64;
    // (image, block, strides, dilations, pads)
    type Case = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>);
    let cases: Vec<Case> = vec![
        (
            vec![5, 5],
            vec![2, 2],
            vec![1, 1],
            vec![1, 1],
            vec![0, 0, 0, 0],
        ),
        (
            vec![6, 5],
            vec![3, 2],
            vec![2, 1],
            vec![1, 2],
            vec![1, 0, 2, 1],
        ),
        (
            vec![7, 6],
            vec![2, 3],
            vec![3, 2],
            vec![2, 1],
            vec![0, 1, 1, 0],
        ),
        (
            vec![3, 4, 3],
            vec![2, 2, 1],
            vec![1, 2, 1],
            vec![1, 1, 2],
            vec![0, 1, 0, 1, 0, 1],
        ),
    ];
    for (image, block, strides, dilations, pads) in cases {
        let nd = image.len();
        let (n, c) = (2usize, 3usize);
        let blocks: Vec<usize> = (0..nd)
            .map(|i| {
                (image[i] + pads[i] + pads[nd + i] - dilations[i] * (block[i] - 1) - 1) / strides[i]
                    + 1
            })
            .collect();
        let k: usize = block.iter().product();
        let l: usize = blocks.iter().product();
        let x = rand_t(&[n, c * k, l], &mut seed, 1.0);
        let as_i64 = |v: &[usize]| v.iter().map(|&e| e as i64).collect::<Vec<_>>();
        let mut m = ModelBuilder::new(18);
        m.input("x", DType::F32, &dims(&[n, c * k, l]))
            .initializer("image", &i64s(&[nd], as_i64(&image)))
            .initializer("block", &i64s(&[nd], as_i64(&block)))
            .node(
                "Col2Im",
                &["x", "image", "block"],
                &["y"],
                vec![
                    ("strides", Attr::Ints(as_i64(&strides))),
                    ("dilations", Attr::Ints(as_i64(&dilations))),
                    ("pads", Attr::Ints(as_i64(&pads))),
                ],
            )
            .output("y");
        let xv = x.to_f64_vec();
        let pixels: usize = image.iter().product();
        let mut want = vec![0.0; n * c * pixels];
        for b in 0..n {
            for ch in 0..c {
                for e in 0..k {
                    let offset = unflatten(e, &block);
                    for p in 0..l {
                        let at = unflatten(p, &blocks);
                        let pos: Vec<i64> = (0..nd)
                            .map(|i| {
                                (at[i] * strides[i] + offset[i] * dilations[i]) as i64
                                    - pads[i] as i64
                            })
                            .collect();
                        if (0..nd).all(|i| pos[i] >= 0 && pos[i] < image[i] as i64) {
                            let flat = (0..nd).fold(0, |f, i| f * image[i] + pos[i] as usize);
                            want[(b * c + ch) * pixels + flat] +=
                                xv[(b * c * k + ch * k + e) * l + p];
                        }
                    }
                }
            }
        }
        let mut shape = vec![n, c];
        shape.extend(&image);
        let got = run(&m, &[x]);
        assert_close(
            &got[0],
            &want,
            &shape,
            1e-5,
            &format!("Col2Im {image:?} {block:?}"),
        );
    }
}

/// The determinant by the Leibniz formula (sum over permutations), n <= 5.
fn leibniz(a: &[f64], n: usize) -> f64 {
    fn permutations(rest: Vec<usize>) -> Vec<(Vec<usize>, f64)> {
        if rest.is_empty() {
            return vec![(vec![], 1.0)];
        }
        let mut out = vec![];
        for (i, &first) in rest.iter().enumerate() {
            let mut others = rest.clone();
            others.remove(i);
            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
            for (mut p, s) in permutations(others) {
                p.insert(0, first);
                out.push((p, s * sign));
            }
        }
        out
    }
    permutations((0..n).collect())
        .into_iter()
        .map(|(p, s)| s * (0..n).map(|r| a[r * n + p[r]]).product::<f64>())
        .sum()
}

#[test]
fn det_matches_the_leibniz_formula() {
    let mut seed = 3u64;
    for (outer, n) in [
        (vec![], 1usize),
        (vec![3], 2),
        (vec![2, 2], 3),
        (vec![4], 4),
        (vec![2], 5),
    ] {
        let mut shape = outer.clone();
        shape.extend([n, n]);
        let mut x = rand_t(&shape, &mut seed, 2.0);
        if n >= 3 {
            // The first matrix needs a row swap at once (a zero corner); the second is
            // singular (two equal rows); the third has a zero column.
            let mut v = x.to_f64_vec();
            v[0] = 0.0;
            for j in 0..n {
                v[n * n + n + j] = v[n * n + j];
            }
            if outer.iter().product::<usize>() > 2 {
                for r in 0..n {
                    v[2 * n * n + r * n + 1] = 0.0;
                }
            }
            x = Tensor::new(
                shape.clone(),
                Data::F32(v.iter().map(|&e| e as f32).collect()),
            )
            .unwrap();
        }
        for dtype in [DType::F32, DType::F64] {
            let input = if dtype == DType::F64 {
                Tensor::new(shape.clone(), Data::F64(x.to_f64_vec())).unwrap()
            } else {
                x.clone()
            };
            let mut m = ModelBuilder::new(22);
            m.input("x", dtype, &dims(&shape))
                .node("Det", &["x"], &["y"], vec![])
                .output("y");
            let xv = input.to_f64_vec();
            let want: Vec<f64> = xv.chunks(n * n).map(|a| leibniz(a, n)).collect();
            let got = run(&m, &[input]);
            let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert_close(
                &got[0],
                &want,
                &outer,
                tolerance,
                &format!("Det {shape:?} {dtype}"),
            );
        }
    }
}

#[test]
fn max_unpool_puts_values_where_their_indices_point() {
    let mut seed = 4u64;
    // (input spatial, kernel, strides, pads, output_shape spatial)
    type Case = (Vec<usize>, Vec<i64>, Vec<i64>, Vec<i64>, Option<Vec<usize>>);
    let cases: Vec<Case> = vec![
        (vec![2, 2], vec![2, 2], vec![2, 2], vec![0, 0, 0, 0], None),
        (vec![3, 2], vec![3, 2], vec![2, 2], vec![1, 0, 0, 1], None),
        (
            vec![2, 3],
            vec![2, 2],
            vec![2, 2],
            vec![0, 0, 0, 0],
            Some(vec![5, 7]),
        ),
    ];
    for (spatial, kernel, strides, pads, output) in cases {
        let (n, c) = (2usize, 2usize);
        let mut shape = vec![n, c];
        shape.extend(&spatial);
        let x = rand_t(&shape, &mut seed, 1.0);
        let mut unpooled = vec![n, c];
        for i in 0..2 {
            unpooled.push(
                ((spatial[i] as i64 - 1) * strides[i] - pads[i] - pads[2 + i] + kernel[i]) as usize,
            );
        }
        let total: usize = unpooled.iter().product();
        // Distinct positions, two of them repeated (the last value wins).
        let mut indices: Vec<i64> = (0..x.numel())
            .map(|i| ((i * 7 + 3) % total) as i64)
            .collect();
        indices[1] = indices[0];
        let mut m = ModelBuilder::new(22);
        m.input("x", DType::F32, &dims(&shape))
            .input("i", DType::I64, &dims(&shape));
        let mut ins = vec!["x", "i"];
        if let Some(o) = &output {
            let mut full = vec![n as i64, c as i64];
            full.extend(o.iter().map(|&v| v as i64));
            m.initializer("shape", &i64s(&[4], full));
            ins.push("shape");
        }
        m.node(
            "MaxUnpool",
            &ins,
            &["y"],
            vec![
                ("kernel_shape", Attr::Ints(kernel.clone())),
                ("strides", Attr::Ints(strides.clone())),
                ("pads", Attr::Ints(pads.clone())),
            ],
        )
        .output("y");
        let mut flat = vec![0.0; total];
        for (v, &i) in x.to_f64_vec().iter().zip(&indices) {
            flat[i as usize] = *v;
        }
        let (want, out_shape) = match &output {
            None => (flat, unpooled.clone()),
            Some(o) => {
                let mut full = vec![n, c];
                full.extend(o);
                let want = (0..full.iter().product())
                    .map(|f| {
                        let idx = unflatten(f, &full);
                        if (0..4).all(|k| idx[k] < unpooled[k]) {
                            flat[(0..4).fold(0, |a, k| a * unpooled[k] + idx[k])]
                        } else {
                            0.0
                        }
                    })
                    .collect();
                (want, full)
            }
        };
        let got = run(&m, &[x, i64s(&shape, indices)]);
        assert_close(
            &got[0],
            &want,
            &out_shape,
            0.0,
            &format!("MaxUnpool {spatial:?}"),
        );
    }
}

#[test]
fn tensor_scatter_writes_the_update_at_each_rows_index() {
    let mut seed = 5u64;
    for (circular, writes, axis) in [
        (false, vec![0i64, 2], -2i64),
        (true, vec![3, 1], -2),
        (true, vec![2, 0], 1),
        (false, vec![1, 0], 2),
    ] {
        let (b, h, max_len, len, d) = (2usize, 2usize, 4usize, 2usize, 3usize);
        let ax = if axis < 0 {
            (4 + axis) as usize
        } else {
            axis as usize
        };
        let mut cache_shape = vec![b, h, max_len, d];
        let mut update_shape = vec![b, h, len, d];
        if ax == 1 {
            cache_shape = vec![b, max_len, h, d];
            update_shape = vec![b, len, h, d];
        }
        let cache = rand_t(&cache_shape, &mut seed, 1.0);
        let update = rand_t(&update_shape, &mut seed, 1.0);
        let mut m = ModelBuilder::new(24);
        m.input("cache", DType::F32, &dims(&cache_shape))
            .input("update", DType::F32, &dims(&update_shape))
            .input("w", DType::I64, &[b as i64])
            .node(
                "TensorScatter",
                &["cache", "update", "w"],
                &["out"],
                vec![
                    (
                        "mode",
                        Attr::Str(if circular { "circular" } else { "linear" }.into()),
                    ),
                    ("axis", Attr::Int(axis)),
                ],
            )
            .output("out");
        let mut want = cache.to_f64_vec();
        let u = update.to_f64_vec();
        for (f, &value) in u.iter().enumerate() {
            let mut idx = unflatten(f, &update_shape);
            let mut p = writes[idx[0]] as usize + idx[ax];
            if circular {
                p %= max_len;
            }
            idx[ax] = p;
            let at = (0..4).fold(0, |a, k| a * cache_shape[k] + idx[k]);
            want[at] = value;
        }
        let got = run(&m, &[cache, update, i64s(&[b], writes.clone())]);
        assert_close(
            &got[0],
            &want,
            &cache_shape,
            0.0,
            &format!("TensorScatter {writes:?}"),
        );
    }
}

#[test]
fn batch_norm_training_mode_uses_and_updates_the_batch_statistics() {
    let mut seed = 6u64;
    let (n, c, hw) = (3usize, 4usize, 5usize);
    let x = rand_t(&[n, c, hw], &mut seed, 2.0);
    let params: Vec<Tensor> = (0..4).map(|_| rand_t(&[c], &mut seed, 1.0)).collect();
    let var = Tensor::new(
        vec![c],
        Data::F32(
            params[3]
                .to_f64_vec()
                .iter()
                .map(|v| (v.abs() + 0.5) as f32)
                .collect(),
        ),
    )
    .unwrap();
    let (epsilon, momentum) = (1e-3f32, 0.8f32);
    let mut m = ModelBuilder::new(15);
    m.input("x", DType::F32, &dims(&[n, c, hw]))
        .initializer("scale", &params[0])
        .initializer("bias", &params[1])
        .initializer("mean", &params[2])
        .initializer("var", &var)
        .node(
            "BatchNormalization",
            &["x", "scale", "bias", "mean", "var"],
            &["y", "running_mean", "running_var"],
            vec![
                ("training_mode", Attr::Int(1)),
                ("epsilon", Attr::Float(epsilon)),
                ("momentum", Attr::Float(momentum)),
            ],
        )
        .output("y")
        .output("running_mean")
        .output("running_var");
    let xv = x.to_f64_vec();
    let (s, bias, mean0, var0) = (
        params[0].to_f64_vec(),
        params[1].to_f64_vec(),
        params[2].to_f64_vec(),
        var.to_f64_vec(),
    );
    let (momentum, epsilon) = (momentum as f64, epsilon as f64);
    let mut y = vec![0.0; xv.len()];
    let (mut running_mean, mut running_var) = (vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let values: Vec<f64> = (0..n)
            .flat_map(|b| (0..hw).map(move |p| (b, p)))
            .map(|(b, p)| xv[(b * c + ch) * hw + p])
            .collect();
        let count = values.len() as f64;
        let mean = values.iter().sum::<f64>() / count;
        let v = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / count;
        running_mean[ch] = mean0[ch] * momentum + mean * (1.0 - momentum);
        running_var[ch] = var0[ch] * momentum + v * (1.0 - momentum);
        for b in 0..n {
            for p in 0..hw {
                let i = (b * c + ch) * hw + p;
                y[i] = (xv[i] - mean) / (v + epsilon).sqrt() * s[ch] + bias[ch];
            }
        }
    }
    let got = run(&m, &[x]);
    assert_close(&got[0], &y, &[n, c, hw], 1e-5, "y");
    assert_close(&got[1], &running_mean, &[c], 1e-6, "running mean");
    assert_close(&got[2], &running_var, &[c], 1e-6, "running var");
}

#[test]
fn training_dropout_runs_only_at_ratio_zero() {
    let mut seed = 7u64;
    let x = rand_t(&[3, 4], &mut seed, 1.0);
    let model = |ratio: f32| {
        let mut m = ModelBuilder::new(22);
        m.input("x", DType::F32, &[3, 4])
            .initializer("ratio", &Tensor::scalar_f32(ratio))
            .initializer(
                "training",
                &Tensor::new(vec![], Data::Bool(vec![true])).unwrap(),
            )
            .node(
                "Dropout",
                &["x", "ratio", "training"],
                &["y", "mask"],
                vec![],
            )
            .output("y")
            .output("mask");
        m
    };
    let got = run(&model(0.0), std::slice::from_ref(&x));
    assert_eq!(got[0], x);
    assert_eq!(got[1].to_f64_vec(), vec![1.0; 12]);
    let err = optc_onnx::import_bytes(&model(0.5).to_bytes(), &Default::default())
        .expect_err("ratio 0.5 in training mode is refused")
        .to_string();
    assert!(
        err.contains("Dropout") && err.contains("ratio 0.5"),
        "{err}"
    );
}

#[test]
fn max_pool_indices_name_each_windows_first_largest() {
    let mut seed = 8u64;
    // (spatial, kernel, strides, dilations, pads, ceil_mode, storage_order)
    type Case = (
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        i64,
        i64,
    );
    let cases: Vec<Case> = vec![
        (
            vec![5, 5],
            vec![2, 2],
            vec![2, 2],
            vec![1, 1],
            vec![0, 0, 0, 0],
            0,
            0,
        ),
        (
            vec![5, 5],
            vec![2, 2],
            vec![2, 2],
            vec![1, 1],
            vec![0, 0, 0, 0],
            0,
            1,
        ),
        (
            vec![6, 7],
            vec![3, 2],
            vec![2, 1],
            vec![1, 2],
            vec![1, 0, 1, 1],
            0,
            1,
        ),
        (
            vec![5, 6],
            vec![3, 3],
            vec![2, 2],
            vec![1, 1],
            vec![1, 1, 0, 0],
            1,
            0,
        ),
        (
            vec![4, 3, 5],
            vec![2, 2, 3],
            vec![1, 2, 2],
            vec![1, 1, 1],
            vec![0, 1, 1, 1, 0, 1],
            0,
            0,
        ),
    ];
    for (spatial, kernel, strides, dilations, pads, ceil, order) in cases {
        let nsp = spatial.len();
        let (n, c) = (2usize, 3usize);
        let mut shape = vec![n, c];
        shape.extend(&spatial);
        // Few distinct values, so windows hold ties.
        let x = Tensor::new(
            shape.clone(),
            Data::F32(
                rand_t(&shape, &mut seed, 1.0)
                    .to_f64_vec()
                    .iter()
                    .map(|v| (v * 3.0).round() as f32)
                    .collect(),
            ),
        )
        .unwrap();
        let as_i64 = |v: &[usize]| v.iter().map(|&e| e as i64).collect::<Vec<_>>();
        let mut m = ModelBuilder::new(12);
        m.input("x", DType::F32, &dims(&shape))
            .node(
                "MaxPool",
                &["x"],
                &["y", "i"],
                vec![
                    ("kernel_shape", Attr::Ints(as_i64(&kernel))),
                    ("strides", Attr::Ints(as_i64(&strides))),
                    ("dilations", Attr::Ints(as_i64(&dilations))),
                    ("pads", Attr::Ints(as_i64(&pads))),
                    ("ceil_mode", Attr::Int(ceil)),
                    ("storage_order", Attr::Int(order)),
                ],
            )
            .output("y")
            .output("i");
        let out: Vec<usize> = (0..nsp)
            .map(|i| {
                let span =
                    spatial[i] + pads[i] + pads[nsp + i] - dilations[i] * (kernel[i] - 1) - 1;
                let mut o = span / strides[i] + 1;
                if ceil == 1 && span % strides[i] != 0 && o * strides[i] < spatial[i] + pads[i] {
                    o += 1;
                }
                o
            })
            .collect();
        let xv = x.to_f64_vec();
        let pixels: usize = spatial.iter().product();
        let outputs: usize = out.iter().product();
        let taps: usize = kernel.iter().product();
        let (mut values, mut indices) = (vec![], vec![]);
        for plane in 0..n * c {
            for o in 0..outputs {
                let at = unflatten(o, &out);
                let mut best: Option<(f64, i64)> = None;
                for t in 0..taps {
                    let tap = unflatten(t, &kernel);
                    let pos: Vec<i64> = (0..nsp)
                        .map(|i| {
                            (at[i] * strides[i] + tap[i] * dilations[i]) as i64 - pads[i] as i64
                        })
                        .collect();
                    if !(0..nsp).all(|i| pos[i] >= 0 && pos[i] < spatial[i] as i64) {
                        continue;
                    }
                    let row = (0..nsp).fold(0, |f, i| f * spatial[i] as i64 + pos[i]);
                    let col = (0..nsp)
                        .rev()
                        .fold(0, |f, i| f * spatial[i] as i64 + pos[i]);
                    let v = xv[plane * pixels + row as usize];
                    if best.is_none_or(|(b, _)| v > b) {
                        let reported = if order == 1 { col } else { row };
                        best = Some((v, (plane * pixels) as i64 + reported));
                    }
                }
                let (v, i) = best.expect("a window holds an input element");
                values.push(v);
                indices.push(i as f64);
            }
        }
        let mut out_shape = vec![n, c];
        out_shape.extend(&out);
        let got = run(&m, &[x]);
        let what = format!("MaxPool {spatial:?} {kernel:?} order {order}");
        assert_close(&got[0], &values, &out_shape, 0.0, &what);
        assert_eq!(got[1].dtype(), DType::I64, "{what}");
        assert_close(&got[1], &indices, &out_shape, 0.0, &what);
    }
}

#[test]
fn mel_weight_matrix_holds_triangular_filters() {
    for (mel_bins, dft_length, sample_rate, low, high) in [
        (8i32, 16i32, 8192i32, 0.0f32, 4096.0f32),
        (20, 512, 16000, 20.0, 8000.0),
        (5, 64, 8000, 300.0, 3400.0),
    ] {
        let scalar_i32 = |v: i32| Tensor::new(vec![], Data::I32(vec![v])).unwrap();
        let mut m = ModelBuilder::new(17);
        m.initializer("bins", &scalar_i32(mel_bins))
            .initializer("dft", &scalar_i32(dft_length))
            .initializer("rate", &scalar_i32(sample_rate))
            .initializer("low", &Tensor::scalar_f32(low))
            .initializer("high", &Tensor::scalar_f32(high))
            .node(
                "MelWeightMatrix",
                &["bins", "dft", "rate", "low", "high"],
                &["w"],
                vec![],
            )
            .output("w");
        // The edges as the reference computes them: log1p in f32, the rest in f64.
        let to_mel = |hz: f32| (2595.0f32 * (hz / 700.0).ln_1p()) as f64 / 10f64.ln();
        let (lo, hi) = (to_mel(low), to_mel(high));
        let count = mel_bins as usize + 2;
        let edges: Vec<usize> = (0..count)
            .map(|i| {
                let mel = i as f64 * (hi - lo) / count as f64 + lo;
                let hz = 700.0 * (mel / 2595.0 * 10f64.ln()).exp_m1();
                ((dft_length as f64 + 1.0) * hz / sample_rate as f64).floor() as usize
            })
            .collect();
        let spectrum = dft_length as usize / 2 + 1;
        let bins = mel_bins as usize;
        let mut want = vec![0.0; spectrum * bins];
        for f in 0..bins {
            let (l, c, r) = (edges[f], edges[f + 1], edges[f + 2]);
            for (j, row) in want.chunks_mut(bins).enumerate() {
                if c == l && j == c {
                    row[f] = 1.0;
                } else if l < c && (l..=c).contains(&j) {
                    row[f] = (j - l) as f64 / (c - l) as f64;
                }
                if c < r && (c..r).contains(&j) {
                    row[f] = (r - j) as f64 / (r - c) as f64;
                }
            }
        }
        let got = run(&m, &[]);
        assert_close(
            &got[0],
            &want,
            &[spectrum, bins],
            1e-7,
            &format!("mel {mel_bins}"),
        );
    }
}

/// `x` [H, W] (row-major) bilinearly at (h, w), zero outside.
fn bilinear(x: &[f64], ih: usize, iw: usize, h: f64, w: f64) -> f64 {
    let (h0, w0) = (h.floor(), w.floor());
    let mut sum = 0.0;
    for (dh, dw) in [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)] {
        let (hc, wc) = (h0 + dh, w0 + dw);
        if hc >= 0.0 && hc < ih as f64 && wc >= 0.0 && wc < iw as f64 {
            let weight = (1.0 - (h - hc).abs()) * (1.0 - (w - wc).abs());
            sum += weight * x[hc as usize * iw + wc as usize];
        }
    }
    sum
}

#[test]
fn deform_conv_samples_each_tap_at_its_offset() {
    let mut seed = 9u64;
    // (C, M, group, offset_group, input, kernel, strides, dilations, pads, mask and bias)
    type Case = (
        usize,
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [i64; 2],
        [i64; 2],
        [i64; 4],
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            1,
            1,
            1,
            1,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            false,
        ),
        (
            4,
            6,
            2,
            2,
            [5, 6],
            [3, 2],
            [2, 1],
            [1, 2],
            [1, 0, 1, 1],
            true,
        ),
        (
            2,
            2,
            1,
            2,
            [4, 4],
            [2, 2],
            [1, 2],
            [2, 1],
            [0, 0, 0, 1],
            true,
        ),
    ];
    for (c, m_out, group, offset_group, [ih, iw], [kh, kw], strides, dilations, pads, extras) in
        cases
    {
        let n = 2;
        let oh = ((ih as i64 + pads[0] + pads[2] - (kh as i64 - 1) * dilations[0] - 1) / strides[0]
            + 1) as usize;
        let ow = ((iw as i64 + pads[1] + pads[3] - (kw as i64 - 1) * dilations[1] - 1) / strides[1]
            + 1) as usize;
        let taps = kh * kw;
        let x = rand_t(&[n, c, ih, iw], &mut seed, 1.0);
        let w = rand_t(&[m_out, c / group, kh, kw], &mut seed, 1.0);
        let offset = rand_t(&[n, offset_group * taps * 2, oh, ow], &mut seed, 1.6);
        let mask = rand_t(&[n, offset_group * taps, oh, ow], &mut seed, 1.0);
        let bias = rand_t(&[m_out], &mut seed, 1.0);
        let mut model = ModelBuilder::new(19);
        model
            .input("x", DType::F32, &dims(&[n, c, ih, iw]))
            .input("w", DType::F32, &dims(&[m_out, c / group, kh, kw]))
            .input(
                "offset",
                DType::F32,
                &dims(&[n, offset_group * taps * 2, oh, ow]),
            );
        let mut ins = vec!["x", "w", "offset"];
        let mut inputs = vec![x.clone(), w.clone(), offset.clone()];
        if extras {
            model.input("b", DType::F32, &[m_out as i64]).input(
                "mask",
                DType::F32,
                &dims(&[n, offset_group * taps, oh, ow]),
            );
            ins.extend(["b", "mask"]);
            inputs.extend([bias.clone(), mask.clone()]);
        }
        model
            .node(
                "DeformConv",
                &ins,
                &["y"],
                vec![
                    ("group", Attr::Int(group as i64)),
                    ("offset_group", Attr::Int(offset_group as i64)),
                    ("strides", Attr::Ints(strides.to_vec())),
                    ("dilations", Attr::Ints(dilations.to_vec())),
                    ("pads", Attr::Ints(pads.to_vec())),
                ],
            )
            .output("y");
        let (xv, wv, ov, mv, bv) = (
            x.to_f64_vec(),
            w.to_f64_vec(),
            offset.to_f64_vec(),
            mask.to_f64_vec(),
            bias.to_f64_vec(),
        );
        let mut want = vec![0.0; n * m_out * oh * ow];
        for b in 0..n {
            for o in 0..m_out {
                let gi = o / (m_out / group);
                for i in 0..oh {
                    for j in 0..ow {
                        let mut sum = if extras { bv[o] } else { 0.0 };
                        for cc in 0..c / group {
                            let ch = gi * (c / group) + cc;
                            let og = ch / (c / offset_group);
                            let plane = &xv[(b * c + ch) * ih * iw..][..ih * iw];
                            for t in 0..taps {
                                let (ki, kj) = (t / kw, t % kw);
                                let at = |k: usize| {
                                    ((b * offset_group * taps * 2 + og * taps * 2 + t * 2 + k) * oh
                                        + i)
                                        * ow
                                        + j
                                };
                                let h = (i as i64 * strides[0] - pads[0] + ki as i64 * dilations[0])
                                    as f64
                                    + ov[at(0)];
                                let wpos = (j as i64 * strides[1] - pads[1]
                                    + kj as i64 * dilations[1])
                                    as f64
                                    + ov[at(1)];
                                let scale = if extras {
                                    mv[((b * offset_group * taps + og * taps + t) * oh + i) * ow
                                        + j]
                                } else {
                                    1.0
                                };
                                sum += wv[(o * (c / group) + cc) * taps + t]
                                    * scale
                                    * bilinear(plane, ih, iw, h, wpos);
                            }
                        }
                        want[((b * m_out + o) * oh + i) * ow + j] = sum;
                    }
                }
            }
        }
        let got = run(&model, &inputs);
        assert_close(
            &got[0],
            &want,
            &[n, m_out, oh, ow],
            1e-5,
            &format!("DeformConv C {c} group {group}/{offset_group}"),
        );
    }
}

#[test]
fn bitcast_reinterprets_held_and_narrow_integers() {
    use optc_onnx::builder::onnx_dtype;
    let code = |d: tract_onnx::pb::tensor_proto::DataType| Attr::Int(d as i64);
    use tract_onnx::pb::tensor_proto::DataType as T;
    let ints: Vec<i64> = vec![
        0,
        1,
        -1,
        65535,
        -32768,
        0x3f80_0000,
        i32::MIN as i64,
        i32::MAX as i64,
    ];
    let floats: Vec<f32> = vec![1.0, -2.0, 0.0, -0.0, 1e-42, f32::INFINITY, 3.5, -7.25];
    let n = ints.len();
    let mut m = ModelBuilder::new(26);
    m.input("i", DType::I32, &[n as i64])
        .input("l", DType::I64, &[n as i64])
        .input("f", DType::F32, &[n as i64])
        // int32 -> uint32 (held widened) -> float32.
        .node("Cast", &["i"], &["u32"], vec![("to", code(T::Uint32))])
        .node(
            "BitCast",
            &["u32"],
            &["from_u32"],
            vec![("to", Attr::Int(onnx_dtype(DType::F32) as i64))],
        )
        // float32 -> uint32 -> int64.
        .node(
            "BitCast",
            &["f"],
            &["to_u32"],
            vec![("to", code(T::Uint32))],
        )
        .node(
            "Cast",
            &["to_u32"],
            &["to_u32_wide"],
            vec![("to", code(T::Int64))],
        )
        // int32 -> int16 -> uint16 -> int32.
        .node("Cast", &["i"], &["i16"], vec![("to", code(T::Int16))])
        .node("BitCast", &["i16"], &["u16"], vec![("to", code(T::Uint16))])
        .node(
            "Cast",
            &["u16"],
            &["u16_wide"],
            vec![("to", code(T::Int32))],
        )
        // int64 -> uint64 -> double; float32 -> int32.
        .node("Cast", &["l"], &["u64"], vec![("to", code(T::Uint64))])
        .node("BitCast", &["u64"], &["d"], vec![("to", code(T::Double))])
        .node("BitCast", &["f"], &["f_bits"], vec![("to", code(T::Int32))])
        .output("from_u32")
        .output("to_u32_wide")
        .output("u16_wide")
        .output("d")
        .output("f_bits");
    let i = Tensor::new(vec![n], Data::I32(ints.iter().map(|&v| v as i32).collect())).unwrap();
    let l = Tensor::new(
        vec![n],
        Data::I64(
            ints.iter()
                .map(|&v| v.wrapping_mul(0x1_0000_0001))
                .collect(),
        ),
    )
    .unwrap();
    let f = Tensor::from_f32(vec![n], floats.clone()).unwrap();
    let got = run(&m, &[i, l.clone(), f]);
    let as_i32 = |v: i64| v as i32;
    // Compared as bits (several are NaNs).
    let want_f: Vec<u32> = ints.iter().map(|&v| as_i32(v) as u32).collect();
    let Data::F32(from_u32) = got[0].data() else {
        panic!("f32 expected")
    };
    assert_eq!(
        from_u32.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want_f
    );
    let want_bits: Vec<i64> = floats.iter().map(|v| v.to_bits() as i64).collect();
    assert_eq!(got[1].data(), &Data::I64(want_bits));
    let want_u16: Vec<i32> = ints
        .iter()
        .map(|&v| as_i32(v) as i16 as u16 as i32)
        .collect();
    assert_eq!(got[2].data(), &Data::I32(want_u16));
    let want_d: Vec<f64> = l
        .to_i64_vec()
        .iter()
        .map(|&v| f64::from_bits(v as u64))
        .collect();
    assert_eq!(
        got[3]
            .to_f64_vec()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        want_d.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let want_i: Vec<i32> = floats.iter().map(|v| v.to_bits() as i32).collect();
    assert_eq!(got[4].data(), &Data::I32(want_i));
    // Widths must match; float16 is not held as its bits.
    let mut m = ModelBuilder::new(26);
    m.input("f", DType::F32, &[2])
        .node("BitCast", &["f"], &["y"], vec![("to", code(T::Int64))])
        .output("y");
    let e = optc_onnx::import_bytes(&m.to_bytes(), &Default::default())
        .expect_err("a width change is refused")
        .to_string();
    assert!(e.contains("BitCast") && e.contains("8 bytes"), "{e}");
}

#[test]
fn ml_domain_binarizer_and_array_feature_extractor() {
    use tract_onnx::pb;
    let mut seed = 10u64;
    // One element at the threshold (not above it).
    let mut v = rand_t(&[3, 5], &mut seed, 2.0).to_f64_vec();
    v[2] = 0.25;
    let x = Tensor::from_f32(vec![3, 5], v.iter().map(|&e| e as f32).collect()).unwrap();
    let mut m = ModelBuilder::new(1);
    m.input("x", DType::F32, &[3, 5])
        .initializer("i", &i64s(&[1, 3], vec![4, 0, 4]))
        .node_in_domain(
            "b",
            "ai.onnx.ml",
            "Binarizer",
            &["x"],
            &["bin"],
            vec![("threshold", Attr::Float(0.25))],
        )
        .node_in_domain(
            "f",
            "ai.onnx.ml",
            "ArrayFeatureExtractor",
            &["x", "i"],
            &["picked"],
            vec![],
        )
        .output("bin")
        .output("picked");
    // A model of ai.onnx.ml ops alone imports only that domain.
    let mut proto = m.to_proto();
    proto.opset_import = vec![pb::OperatorSetIdProto {
        domain: "ai.onnx.ml".into(),
        version: 1,
    }];
    let bytes = prost::Message::encode_to_vec(&proto);
    let g = optc_onnx::import_bytes(&bytes, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let got = optc_ir::interp::run(&g, std::slice::from_ref(&x)).unwrap();
    let xv = x.to_f64_vec();
    let want_bin: Vec<f64> = xv
        .iter()
        .map(|&v| if v > 0.25 { 1.0 } else { 0.0 })
        .collect();
    assert_close(&got[0], &want_bin, &[3, 5], 0.0, "Binarizer");
    let want_picked: Vec<f64> = (0..3)
        .flat_map(|r| [4, 0, 4].map(|c| xv[r * 5 + c]))
        .collect();
    assert_close(&got[1], &want_picked, &[3, 3], 0.0, "ArrayFeatureExtractor");
    // An op of the domain optc does not import is named with its domain.
    let mut m = ModelBuilder::new(1);
    m.input("x", DType::F32, &[3, 5])
        .node_in_domain("s", "ai.onnx.ml", "Scaler", &["x"], &["y"], vec![])
        .output("y");
    let mut proto = m.to_proto();
    proto.opset_import.push(pb::OperatorSetIdProto {
        domain: "ai.onnx.ml".into(),
        version: 1,
    });
    let e = optc_onnx::import_bytes(&prost::Message::encode_to_vec(&proto), &Default::default())
        .expect_err("Scaler is refused")
        .to_string();
    assert!(e.contains("ai.onnx.ml::Scaler"), "{e}");
}

#[test]
fn tree_ensemble_walks_every_tree_to_its_leaf() {
    use tract_onnx::pb;
    // Three trees over three features: every comparison mode, a membership set, NaN that
    // goes the true way at one node, and a tree that is a single leaf (node 7).
    let modes: Vec<u8> = vec![0, 6, 3, 5, 1, 2, 4, 0];
    let features = vec![0i64, 1, 2, 2, 1, 0, 1, 0];
    let splits = vec![0.0f32, f32::NAN, 0.3, 0.0, -0.5, 0.5, 0.75, 0.0];
    // Node 7's children name leaf 2, but as a tree's root whose both children are one leaf
    // it is a leaf itself: leaf 7 (its own index), as the reference reads it.
    let true_ids = vec![1i64, 0, 1, 3, 5, 6, 7, 2];
    let true_leafs = vec![0i64, 1, 1, 1, 1, 1, 1, 1];
    let false_ids = vec![2i64, 3, 2, 4, 5, 6, 8, 2];
    let false_leafs = vec![0i64, 0, 1, 1, 0, 0, 1, 1];
    let missing = vec![0i64, 0, 1, 0, 0, 0, 0, 0];
    let members = vec![0.5f32, -0.25, f32::NAN];
    let leaf_weights = vec![1.5f32, -2.0, 0.25, 4.0, -1.0, 3.0, 0.5, -0.75, 2.5];
    let leaf_targets = vec![0i64, 1, 2, 0, 1, 2, 0, 1, 2];
    let roots = vec![0i64, 4, 7];
    let rows: Vec<[f32; 3]> = vec![
        [0.0, 0.5, 1.0],
        [-1.0, -0.25, 0.0],
        [-1.0, 0.1, 0.0],
        [-1.0, 0.1, 2.0],
        [0.2, -0.6, f32::NAN],
        [0.7, 0.75, 0.3],
        [0.5, 0.75, 0.31],
        [f32::NAN, 0.2, -0.5],
        [0.3, -0.5, 0.9],
    ];
    let eval = |root: usize, x: &[f32; 3]| -> usize {
        // The degenerate tree: its root's own index as a leaf.
        if true_leafs[root] == 1 && false_leafs[root] == 1 && true_ids[root] == false_ids[root] {
            return root;
        }
        let mut at = root;
        loop {
            let v = x[features[at] as usize] as f64;
            let s = splits[at] as f64;
            let mut taken = match modes[at] {
                0 => v <= s,
                1 => v < s,
                2 => v >= s,
                3 => v > s,
                4 => v == s,
                5 => v != s,
                _ => members.iter().any(|&m| m as f64 == v),
            };
            taken |= missing[at] == 1 && v.is_nan();
            let (id, leaf) = if taken {
                (true_ids[at], true_leafs[at])
            } else {
                (false_ids[at], false_leafs[at])
            };
            if leaf == 1 {
                return id as usize;
            }
            at = id as usize;
        }
    };
    let n = rows.len();
    let x = Tensor::from_f32(vec![n, 3], rows.iter().flatten().copied().collect()).unwrap();
    for aggregate in 0..4 {
        let f32_tensor = |v: &[f32]| Tensor::from_f32(vec![v.len()], v.to_vec()).unwrap();
        let mut m = ModelBuilder::new(1);
        m.input("x", DType::F32, &[n as i64, 3])
            .node_in_domain(
                "t",
                "ai.onnx.ml",
                "TreeEnsemble",
                &["x"],
                &["y"],
                vec![
                    (
                        "nodes_modes",
                        Attr::Tensor(Tensor::new(vec![8], Data::U8(modes.clone())).unwrap()),
                    ),
                    ("nodes_featureids", Attr::Ints(features.clone())),
                    ("nodes_splits", Attr::Tensor(f32_tensor(&splits))),
                    ("nodes_truenodeids", Attr::Ints(true_ids.clone())),
                    ("nodes_trueleafs", Attr::Ints(true_leafs.clone())),
                    ("nodes_falsenodeids", Attr::Ints(false_ids.clone())),
                    ("nodes_falseleafs", Attr::Ints(false_leafs.clone())),
                    (
                        "nodes_missing_value_tracks_true",
                        Attr::Ints(missing.clone()),
                    ),
                    ("membership_values", Attr::Tensor(f32_tensor(&members))),
                    ("leaf_weights", Attr::Tensor(f32_tensor(&leaf_weights))),
                    ("leaf_targetids", Attr::Ints(leaf_targets.clone())),
                    ("tree_roots", Attr::Ints(roots.clone())),
                    ("n_targets", Attr::Int(3)),
                    ("aggregate_function", Attr::Int(aggregate)),
                ],
            )
            .output("y");
        let mut proto = m.to_proto();
        proto.opset_import = vec![pb::OperatorSetIdProto {
            domain: "ai.onnx.ml".into(),
            version: 5,
        }];
        let g =
            optc_onnx::import_bytes(&prost::Message::encode_to_vec(&proto), &Default::default())
                .unwrap_or_else(|e| panic!("{e}"));
        let got = optc_ir::interp::run(&g, std::slice::from_ref(&x)).unwrap();
        let initial = match aggregate {
            2 => f32::MAX as f64,
            3 => f32::MIN as f64,
            _ => 0.0,
        };
        let mut want = vec![initial; n * 3];
        for (r, row) in rows.iter().enumerate() {
            for &root in &roots {
                let leaf = eval(root as usize, row);
                let (w, t) = (leaf_weights[leaf] as f64, leaf_targets[leaf] as usize);
                let cell = &mut want[r * 3 + t];
                *cell = match aggregate {
                    0 => *cell + w / 3.0,
                    1 => *cell + w,
                    2 => cell.min(w),
                    _ => cell.max(w),
                };
            }
        }
        assert_close(
            &got[0],
            &want,
            &[n, 3],
            1e-6,
            &format!("TreeEnsemble aggregate {aggregate}"),
        );
    }
}

/// The reference's count: per skip distance, per start, a walk along the pool's prefixes,
/// each pool gram of a counted size met on the way counting once (unigrams only at
/// distance 1).
fn tfidf_counts(
    row: &[i64],
    grams: &std::collections::HashMap<Vec<i64>, usize>,
    (min, max, skip): (usize, usize, usize),
    columns: usize,
) -> Vec<f64> {
    let prefixes: std::collections::HashSet<Vec<i64>> = grams
        .keys()
        .flat_map(|g| (1..=g.len()).map(move |k| g[..k].to_vec()))
        .collect();
    let mut out = vec![0.0; columns];
    let mut start_size = min;
    for d in 1..=skip + 1 {
        for p in 0..row.len() {
            let mut gram = vec![];
            let mut at = p;
            while gram.len() < max && at < row.len() {
                gram.push(row[at]);
                if !prefixes.contains(&gram) {
                    break;
                }
                if gram.len() >= start_size {
                    if let Some(&c) = grams.get(&gram) {
                        out[c] += 1.0;
                    }
                }
                at += d;
            }
        }
        if start_size == 1 {
            start_size = 2;
            if start_size > max {
                break;
            }
        }
    }
    out
}

#[test]
fn tfidf_vectorizer_counts_grams_at_every_skip() {
    // Unigrams 2, 3, 5; bigrams (2 3), (3 5), (2 3) again (the later entry keeps the
    // column); trigrams (2 3 5), (2 5 5).
    let pool = vec![2i64, 3, 5, 2, 3, 3, 5, 2, 3, 2, 3, 5, 2, 5, 5];
    let counts = vec![0i64, 3, 9];
    let indexes = vec![0i64, 1, 2, 3, 4, 5, 6, 7];
    let weights = vec![0.5f32, 1.0, 2.0, 0.25, 3.0, 1.5, 0.75, 4.0];
    let data: Vec<i64> = vec![2, 3, 5, 5, 2, 5, 3, 5, 5, 2, 2, 3, 7, 5, 2, 3];
    for (min, max, skip, mode, weighted, one_row) in [
        (1i64, 3i64, 2i64, "TF", false, false),
        (2, 3, 1, "TF", false, true),
        (1, 2, 0, "IDF", true, false),
        (1, 3, 3, "TFIDF", true, false),
        (1, 1, 2, "IDF", false, false),
    ] {
        let (rows, width) = if one_row { (1, 16) } else { (2, 8) };
        let shape: Vec<i64> = if one_row { vec![16] } else { vec![2, 8] };
        let mut attrs = vec![
            ("pool_int64s", Attr::Ints(pool.clone())),
            ("ngram_counts", Attr::Ints(counts.clone())),
            ("ngram_indexes", Attr::Ints(indexes.clone())),
            ("min_gram_length", Attr::Int(min)),
            ("max_gram_length", Attr::Int(max)),
            ("max_skip_count", Attr::Int(skip)),
            ("mode", Attr::Str(mode.into())),
        ];
        if weighted {
            attrs.push(("weights", Attr::Floats(weights.clone())));
        }
        let mut m = ModelBuilder::new(9);
        m.input("x", DType::I32, &shape)
            .node("TfIdfVectorizer", &["x"], &["y"], attrs)
            .output("y");
        // The loaded grams (sizes in min..=max) and their columns, in id order.
        let mut grams = std::collections::HashMap::new();
        let mut id = 0;
        for (size, run) in [(1usize, &pool[0..3]), (2, &pool[3..9]), (3, &pool[9..15])] {
            for g in run.chunks(size) {
                if (min as usize..=max as usize).contains(&size) {
                    grams.insert(g.to_vec(), indexes[id] as usize);
                }
                id += 1;
            }
        }
        let mut want = vec![];
        for r in 0..rows {
            let c = tfidf_counts(
                &data[r * width..][..width],
                &grams,
                (min as usize, max as usize, skip as usize),
                8,
            );
            for (i, v) in c.into_iter().enumerate() {
                let w = if weighted { weights[i] as f64 } else { 1.0 };
                want.push(match mode {
                    "TF" => v,
                    "IDF" => {
                        if v > 0.0 {
                            w
                        } else {
                            0.0
                        }
                    }
                    _ => w * v,
                });
            }
        }
        let x = Tensor::new(
            shape.iter().map(|&d| d as usize).collect(),
            Data::I32(data.iter().map(|&v| v as i32).collect()),
        )
        .unwrap();
        let out_shape = if one_row { vec![8] } else { vec![2, 8] };
        let got = run(&m, &[x]);
        assert_close(
            &got[0],
            &want,
            &out_shape,
            0.0,
            &format!("TfIdf {min}..{max} skip {skip} {mode}"),
        );
    }
}

#[test]
fn nonzero_of_a_constant_lists_the_indices() {
    // [[1, 0, 2], [0, 0, -3]] and a NaN (nonzero) in a 3-D constant.
    let values = vec![1.0f32, 0.0, 2.0, 0.0, -0.0, f32::NAN, 0.0, 4.0];
    let c = Tensor::from_f32(vec![2, 2, 2], values.clone()).unwrap();
    let mut m = ModelBuilder::new(13);
    m.initializer("c", &c)
        .node("NonZero", &["c"], &["y"], vec![])
        .output("y");
    let got = run(&m, &[]);
    // Row-major order: the rank's index rows, one column per nonzero element.
    let hits: Vec<usize> = (0..8).filter(|&i| values[i] != 0.0).collect();
    let mut want = vec![0.0; 3 * hits.len()];
    for (j, &i) in hits.iter().enumerate() {
        for (axis, v) in unflatten(i, &[2, 2, 2]).into_iter().enumerate() {
            want[axis * hits.len() + j] = v as f64;
        }
    }
    assert_eq!(got[0].dtype(), DType::I64);
    assert_close(&got[0], &want, &[3, hits.len()], 0.0, "NonZero");
    // Of a value computed at run time, refused naming the node.
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[4])
        .node("NonZero", &["x"], &["y"], vec![])
        .output("y");
    let e = optc_onnx::import_bytes(&m.to_bytes(), &Default::default())
        .expect_err("a run-time input is refused")
        .to_string();
    assert!(e.contains("NonZero") && e.contains("constant"), "{e}");
}
