//! `ConvTranspose`, imported as a convolution over the zero-inserted input (or, strided
//! without dilation, one convolution per output phase put in place), against tract
//! (and the interpreter) over strides, pads, dilations, groups, output padding, output
//! shapes, auto_pad and 1-3 spatial dims; the weight constant or given at run time.

mod common;

use common::*;
use optc_onnx::builder::Attr as A;

fn case(
    label: &str,
    x: &[usize],
    w: &[usize],
    bias: bool,
    weight_input: bool,
    attrs: Vec<(&str, A)>,
) {
    let mut r = Rng::new(label.len() as u64 + 7);
    let xt = r.tensor(x, -1.0, 1.0);
    let wt = r.tensor(w, -1.0, 1.0);
    let mut ins = vec![("x", xt, false), ("w", wt, !weight_input)];
    if bias {
        let c_out = w[1]
            * attrs
                .iter()
                .find(|(n, _)| *n == "group")
                .map_or(1, |(_, a)| match a {
                    A::Int(g) => *g as usize,
                    _ => 1,
                });
        ins.push(("b", r.tensor(&[c_out], -1.0, 1.0), true));
    }
    check_op(label, "ConvTranspose", 17, &ins, attrs, 1);
}

#[test]
fn strides_pads_and_dilations() {
    case("plain", &[1, 2, 4, 5], &[2, 3, 3, 3], false, false, vec![]);
    case(
        "stride 2",
        &[2, 3, 4, 4],
        &[3, 2, 3, 3],
        true,
        false,
        vec![("strides", A::Ints(vec![2, 2]))],
    );
    case(
        "stride 3x2, pads",
        &[1, 2, 3, 5],
        &[2, 4, 3, 2],
        true,
        false,
        vec![
            ("strides", A::Ints(vec![3, 2])),
            ("pads", A::Ints(vec![1, 0, 2, 1])),
        ],
    );
    case(
        "dilation 2, stride 2, pads larger than the kernel reach",
        &[1, 1, 5, 4],
        &[1, 2, 2, 3],
        false,
        false,
        vec![
            ("strides", A::Ints(vec![2, 2])),
            ("dilations", A::Ints(vec![2, 1])),
            ("pads", A::Ints(vec![3, 2, 3, 2])),
        ],
    );
    case(
        "output padding",
        &[1, 2, 3, 3],
        &[2, 2, 3, 3],
        true,
        false,
        vec![
            ("strides", A::Ints(vec![2, 3])),
            ("output_padding", A::Ints(vec![1, 2])),
        ],
    );
}

#[test]
fn groups_and_run_time_weights() {
    case(
        "groups 2",
        &[1, 4, 3, 3],
        &[4, 3, 2, 2],
        true,
        false,
        vec![("group", A::Int(2)), ("strides", A::Ints(vec![2, 2]))],
    );
    case(
        "depthwise",
        &[2, 3, 4, 4],
        &[3, 1, 3, 3],
        false,
        false,
        vec![("group", A::Int(3)), ("pads", A::Ints(vec![1, 1, 1, 1]))],
    );
    case(
        "weight at run time",
        &[1, 2, 3, 4],
        &[2, 3, 3, 2],
        false,
        true,
        vec![("strides", A::Ints(vec![2, 1]))],
    );
}

#[test]
fn output_shape_and_auto_pad() {
    case(
        "output_shape",
        &[1, 1, 3, 3],
        &[1, 2, 3, 3],
        false,
        false,
        vec![
            ("strides", A::Ints(vec![3, 2])),
            ("output_shape", A::Ints(vec![10, 8])),
        ],
    );
    for mode in ["SAME_UPPER", "SAME_LOWER"] {
        case(
            mode,
            &[1, 2, 3, 4],
            &[2, 2, 4, 3],
            true,
            false,
            vec![
                ("strides", A::Ints(vec![2, 2])),
                ("auto_pad", A::Str(mode.into())),
            ],
        );
    }
}

#[test]
fn one_and_three_spatial_dims() {
    case(
        "1d",
        &[2, 3, 7],
        &[3, 2, 4],
        true,
        false,
        vec![("strides", A::Ints(vec![3])), ("pads", A::Ints(vec![1, 2]))],
    );
    case(
        "3d",
        &[1, 2, 3, 3, 2],
        &[2, 2, 2, 2, 2],
        false,
        false,
        vec![("strides", A::Ints(vec![2, 1, 2]))],
    );
}

/// Kernel = stride (no padding): imported as a 1x1 conv to `C_out x k...` channels and the
/// blocks put in place; U-Net's 2x2 stride 2, groups, uneven kernels, 1-D and 3-D, a weight
/// given at run time, and the cases next to it that keep the zero-inserted convolution
/// (a pad, output padding, a dilation).
#[test]
fn kernel_equal_to_stride() {
    let s2 = || ("strides", A::Ints(vec![2, 2]));
    case(
        "u-net 2x2",
        &[2, 6, 5, 7],
        &[6, 4, 2, 2],
        true,
        false,
        vec![s2()],
    );
    case(
        "3x2 groups 2",
        &[1, 4, 3, 5],
        &[4, 3, 3, 2],
        true,
        false,
        vec![("group", A::Int(2)), ("strides", A::Ints(vec![3, 2]))],
    );
    case(
        "1d k4",
        &[2, 3, 6],
        &[3, 5, 4],
        true,
        false,
        vec![("strides", A::Ints(vec![4]))],
    );
    case(
        "3d",
        &[1, 2, 3, 2, 4],
        &[2, 3, 2, 2, 2],
        true,
        false,
        vec![("strides", A::Ints(vec![2, 2, 2]))],
    );
    case(
        "run-time weight",
        &[1, 3, 4, 4],
        &[3, 2, 2, 2],
        false,
        true,
        vec![s2()],
    );
    case("1x1", &[1, 5, 3, 3], &[5, 4, 1, 1], true, false, vec![]);
    case(
        "padded",
        &[1, 2, 4, 4],
        &[2, 3, 2, 2],
        true,
        false,
        vec![s2(), ("pads", A::Ints(vec![1, 0, 0, 1]))],
    );
    case(
        "output padding",
        &[1, 2, 3, 3],
        &[2, 3, 2, 2],
        false,
        false,
        vec![s2(), ("output_padding", A::Ints(vec![1, 1]))],
    );
}

/// Strided kernels as one convolution per output phase (taps `r, r + s, ...` of the kernel,
/// zeros past its end), put in place and cropped: DCGAN's 4x4 at stride 2 with pads 1, 3x3
/// at stride 2 with output padding, a kernel shorter than its stride (phases without taps),
/// uneven strides with groups, 1-D, a weight given at run time; a dilation, and more than
/// 64 phases, keep the zero-inserted convolution.
#[test]
fn strided_kernels_by_phases() {
    let pads = |p: Vec<i64>| ("pads", A::Ints(p));
    case(
        "dcgan 4x4 s2 p1",
        &[1, 6, 5, 4],
        &[6, 3, 4, 4],
        true,
        false,
        vec![("strides", A::Ints(vec![2, 2])), pads(vec![1, 1, 1, 1])],
    );
    case(
        "3x3 s2 p1 op1",
        &[2, 3, 4, 5],
        &[3, 4, 3, 3],
        true,
        false,
        vec![
            ("strides", A::Ints(vec![2, 2])),
            pads(vec![1, 1, 1, 1]),
            ("output_padding", A::Ints(vec![1, 1])),
        ],
    );
    case(
        "1x1 s2",
        &[1, 2, 3, 3],
        &[2, 3, 1, 1],
        true,
        false,
        vec![("strides", A::Ints(vec![2, 2]))],
    );
    case(
        "5x3 s(3,2) groups 2",
        &[1, 4, 3, 4],
        &[4, 2, 5, 3],
        true,
        false,
        vec![
            ("group", A::Int(2)),
            ("strides", A::Ints(vec![3, 2])),
            pads(vec![2, 0, 1, 1]),
        ],
    );
    case(
        "1d k7 s4",
        &[2, 3, 6],
        &[3, 2, 7],
        false,
        false,
        vec![("strides", A::Ints(vec![4])), pads(vec![3, 2])],
    );
    case(
        "run-time weight 4x4 s2",
        &[1, 2, 3, 3],
        &[2, 2, 4, 4],
        false,
        true,
        vec![("strides", A::Ints(vec![2, 2])), pads(vec![1, 2, 2, 1])],
    );
    case(
        "81 phases keep zero insertion",
        &[1, 2, 2, 3],
        &[2, 2, 3, 3],
        true,
        false,
        vec![("strides", A::Ints(vec![9, 9]))],
    );
    case(
        "dilation keeps zero insertion",
        &[1, 2, 4, 4],
        &[2, 2, 3, 3],
        true,
        false,
        vec![
            ("strides", A::Ints(vec![2, 2])),
            ("dilations", A::Ints(vec![2, 2])),
        ],
    );
}

#[test]
fn bad_attributes_name_the_problem() {
    let mut r = Rng::new(1);
    let (bytes, _) = one_node(
        "ConvTranspose",
        17,
        &[
            ("x", r.tensor(&[1, 2, 3, 3], -1.0, 1.0), false),
            ("w", r.tensor(&[3, 2, 3, 3], -1.0, 1.0), true),
        ],
        vec![],
        1,
    );
    let e = optc::compile_bytes(&bytes, &optc::Options::default())
        .err()
        .expect("channels differ")
        .to_string();
    assert!(e.contains("ConvTranspose") && e.contains("channels"), "{e}");
    let (bytes, _) = one_node(
        "ConvTranspose",
        17,
        &[
            ("x", r.tensor(&[1, 2, 3, 3], -1.0, 1.0), false),
            ("w", r.tensor(&[2, 2, 3, 3], -1.0, 1.0), true),
        ],
        vec![("strides", A::Ints(vec![0, 1]))],
        1,
    );
    let e = optc::compile_bytes(&bytes, &optc::Options::default())
        .err()
        .expect("stride 0")
        .to_string();
    assert!(e.contains("strides"), "{e}");
}
