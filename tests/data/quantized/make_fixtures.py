#!/usr/bin/env python3
"""Make the quantized-ONNX fixtures of tests/quantized_onnx.rs.

Each case is a directory `<name>/` holding `model.onnx`, `input_<i>.pb` and `output_<i>.pb`
(serialized TensorProtos): the outputs are onnxruntime's (CPU provider, graph optimizations
disabled), so the Rust test compares optc against an independent implementation without
needing onnxruntime in CI. Run with the corpus venv (onnx + onnxruntime):

    ~/.cache/optc-corpus/venv/bin/python tests/data/quantized/make_fixtures.py

It rewrites every case (deterministic: fixed seeds). Cases: every quantization op of the
importer over dtypes (u8/i8/i32), per-tensor and per-axis parameters, axes, opsets,
optional inputs, parameters as run-time inputs; and small models made by onnxruntime's own
quantization tool (quantize_dynamic, quantize_static: the patterns passes/quantize rewrites).

onnxruntime's u8 x s8 kernels on AVX2 sum pairs of products in 16 bits with saturation
(`vpmaddubsw`); these fixtures keep signed weights in [-64, 63] so no pair can saturate and
onnxruntime's integer results are exact.
"""

import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ONNX_TYPES = {
    np.float32: T.FLOAT,
    np.uint8: T.UINT8,
    np.int8: T.INT8,
    np.int32: T.INT32,
}


def onnx_type(a):
    return ONNX_TYPES[a.dtype.type]


def run_ort(model):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        model.SerializeToString(), so, providers=["CPUExecutionProvider"]
    )


def save(name, model, feeds):
    """Write case `name`: the model, its inputs (graph-input order) and onnxruntime's outputs."""
    onnx.checker.check_model(model)
    sess = run_ort(model)
    names = [i.name for i in sess.get_inputs()]
    outs = sess.run(None, {n: feeds[n] for n in names})
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))
    for i, n in enumerate(names):
        t = numpy_helper.from_array(feeds[n], n)
        with open(os.path.join(d, f"input_{i}.pb"), "wb") as f:
            f.write(t.SerializeToString())
    for i, (o, v) in enumerate(zip(sess.get_outputs(), outs)):
        t = numpy_helper.from_array(np.asarray(v), o.name)
        with open(os.path.join(d, f"output_{i}.pb"), "wb") as f:
            f.write(t.SerializeToString())


def one_node(name, op, inputs, attrs=None, opset=13, out_types=None, n_out=1):
    del out_types  # inferred by onnx
    """A model of one node: `inputs` is a list of (name, array, is_initializer); an input
    named "" is an omitted optional input."""
    graph_inputs, inits, feeds, names = [], [], {}, []
    for n, a, init in inputs:
        a = np.asarray(a)
        names.append(n)
        if n == "":
            continue
        if init:
            inits.append(numpy_helper.from_array(a, n))
        else:
            graph_inputs.append(h.make_tensor_value_info(n, onnx_type(a), list(a.shape)))
            feeds[n] = a
    outs = [f"y{i}" for i in range(n_out)]
    node = h.make_node(op, names, outs, **(attrs or {}))
    g = h.make_graph([node], name, graph_inputs, [h.make_empty_tensor_value_info(o) for o in outs],
                     inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8 if opset <= 18 else 10
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    save(name, m, feeds)


def rng(seed):
    return np.random.default_rng(seed)


def f32(r, shape, lo=-4.0, hi=4.0):
    return r.uniform(lo, hi, size=shape).astype(np.float32)


def u8(r, shape, lo=0, hi=256):
    return r.integers(lo, hi, size=shape).astype(np.uint8)


def i8(r, shape, lo=-64, hi=64):
    return r.integers(lo, hi, size=shape).astype(np.int8)


def quantize_cases():
    r = rng(1)
    x = f32(r, (2, 3, 4), -300, 300)
    one_node(
        "quantize_u8",
        "QuantizeLinear",
        [("x", x, False), ("s", np.float32(1.7), True), ("z", np.uint8(117), True)],
        out_types=[T.UINT8],
    )
    one_node(
        "quantize_i8",
        "QuantizeLinear",
        [("x", x, False), ("s", np.float32(0.9), True), ("z", np.int8(-5), True)],
        out_types=[T.INT8],
    )
    one_node(
        "quantize_no_zero_opset10",
        "QuantizeLinear",
        [("x", x, False), ("s", np.float32(2.3), True)],
        opset=10,
        out_types=[T.UINT8],
    )
    # Exact halves of the scale: rounding half to even.
    halves = (np.arange(-40, 40, dtype=np.float32) * 0.25).reshape(4, 20)
    one_node(
        "quantize_halves",
        "QuantizeLinear",
        [("x", halves, False), ("s", np.float32(0.5), True), ("z", np.uint8(128), True)],
        out_types=[T.UINT8],
    )
    one_node(
        "quantize_per_axis_1",
        "QuantizeLinear",
        [
            ("x", x, False),
            ("s", np.array([0.5, 2.0, 3.1], np.float32), True),
            ("z", np.array([0, 128, 255], np.uint8), True),
        ],
        out_types=[T.UINT8],
    )
    one_node(
        "quantize_per_axis_0_i8",
        "QuantizeLinear",
        [
            ("x", x, False),
            ("s", np.array([1.5, 0.7], np.float32), True),
            ("z", np.array([3, -7], np.int8), True),
        ],
        attrs={"axis": 0},
        out_types=[T.INT8],
    )
    one_node(
        "quantize_per_axis_negative",
        "QuantizeLinear",
        [
            ("x", x, False),
            ("s", np.array([1.0, 2.0, 4.0, 8.0], np.float32), True),
            ("z", np.array([10, 20, 30, 40], np.uint8), True),
        ],
        attrs={"axis": -1},
        out_types=[T.UINT8],
    )
    # Parameters computed at run time (graph inputs).
    one_node(
        "quantize_runtime_parameters",
        "QuantizeLinear",
        [("x", x, False), ("s", np.float32(1.3), False), ("z", np.uint8(99), False)],
        out_types=[T.UINT8],
    )
    one_node(
        "quantize_output_dtype_opset21",
        "QuantizeLinear",
        [("x", x, False), ("s", np.float32(2.5), True)],
        attrs={"output_dtype": T.INT8},
        opset=21,
        out_types=[T.INT8],
    )


def dequantize_cases():
    r = rng(2)
    one_node(
        "dequantize_u8",
        "DequantizeLinear",
        [("x", u8(r, (3, 5)), False), ("s", np.float32(0.37), True), ("z", np.uint8(131), True)],
    )
    one_node(
        "dequantize_i8",
        "DequantizeLinear",
        [("x", i8(r, (3, 5), -128, 128), False), ("s", np.float32(0.05), True),
         ("z", np.int8(-3), True)],
    )
    one_node(
        "dequantize_i32_no_zero",
        "DequantizeLinear",
        [("x", r.integers(-2**30, 2**30, (7,)).astype(np.int32), False),
         ("s", np.float32(1e-3), True)],
    )
    one_node(
        "dequantize_per_axis_i8",
        "DequantizeLinear",
        [
            ("x", i8(r, (4, 3, 2), -128, 128), False),
            ("s", np.array([0.1, 0.02, 3.0], np.float32), True),
            ("z", np.array([0, 5, -9], np.int8), True),
        ],
    )
    one_node(
        "dequantize_per_axis_0_u8_weights",
        "DequantizeLinear",
        [
            ("x", u8(r, (4, 3, 2)), True),
            ("s", np.array([0.1, 0.2, 0.3, 0.4], np.float32), True),
            ("z", np.array([1, 2, 3, 4], np.uint8), True),
        ],
        attrs={"axis": 0},
    )


def dynamic_cases():
    r = rng(3)
    for name, x in [
        ("dynamic_quantize_mixed", f32(r, (3, 17), -3, 5)),
        ("dynamic_quantize_positive", f32(r, (40,), 0.5, 9)),
        ("dynamic_quantize_negative", f32(r, (2, 2, 5), -7, -0.25)),
        ("dynamic_quantize_example", np.array([0, 2, -3, -2.5, 1.34, 0.5], np.float32)),
    ]:
        one_node(
            name,
            "DynamicQuantizeLinear",
            [("x", x, False)],
            n_out=3,
            opset=11,
            out_types=[T.UINT8, T.FLOAT, T.UINT8],
        )


def matmul_integer_cases():
    r = rng(4)
    one_node(
        "matmul_integer_u8_i8",
        "MatMulInteger",
        [("a", u8(r, (5, 17)), False), ("b", i8(r, (17, 6)), True),
         ("za", np.uint8(121), True), ("zb", np.int8(0), True)],
        opset=10,
    )
    one_node(
        "matmul_integer_u8_u8",
        "MatMulInteger",
        [("a", u8(r, (4, 9)), False), ("b", u8(r, (9, 3)), False),
         ("za", np.uint8(7), True), ("zb", np.uint8(200), True)],
        opset=10,
    )
    one_node(
        "matmul_integer_no_zeros",
        "MatMulInteger",
        [("a", u8(r, (3, 8)), False), ("b", i8(r, (8, 5)), True)],
        opset=10,
    )
    one_node(
        "matmul_integer_batched",
        "MatMulInteger",
        [("a", u8(r, (2, 3, 4, 10)), False), ("b", i8(r, (10, 7)), True),
         ("za", np.uint8(128), True)],
        opset=10,
    )
    one_node(
        "matmul_integer_batched_both",
        "MatMulInteger",
        [("a", u8(r, (2, 1, 3, 6)), False), ("b", u8(r, (4, 6, 5)), False),
         ("za", np.uint8(3), True), ("zb", np.uint8(250), True)],
        opset=10,
    )
    one_node(
        "matmul_integer_per_column",
        "MatMulInteger",
        [("a", u8(r, (4, 12)), False), ("b", i8(r, (12, 5)), True),
         ("za", np.uint8(99), True), ("zb", i8(r, (5,), -5, 5), True)],
        opset=10,
    )
    one_node(
        "matmul_integer_runtime_zero",
        "MatMulInteger",
        [("a", u8(r, (1, 3, 16)), False), ("b", i8(r, (16, 8)), True),
         ("za", np.uint8(140), False), ("zb", np.int8(0), True)],
        opset=10,
    )


def conv_integer_cases():
    r = rng(5)
    x = u8(r, (1, 4, 6, 7))
    one_node(
        "conv_integer_3x3_pad",
        "ConvInteger",
        [("x", x, False), ("w", u8(r, (8, 4, 3, 3)), True), ("zx", np.uint8(100), True),
         ("zw", np.uint8(128), True)],
        attrs={"pads": [1, 1, 1, 1]},
        opset=10,
    )
    one_node(
        "conv_integer_stride_dilation",
        "ConvInteger",
        [("x", x, False), ("w", u8(r, (3, 4, 2, 3)), True), ("zx", np.uint8(30), True)],
        attrs={"strides": [2, 1], "dilations": [1, 2], "pads": [0, 1, 2, 0]},
        opset=10,
    )
    one_node(
        "conv_integer_group",
        "ConvInteger",
        [("x", x, False), ("w", u8(r, (6, 2, 3, 3)), True), ("zx", np.uint8(5), True),
         ("zw", np.uint8(1), True)],
        attrs={"group": 2, "auto_pad": "SAME_UPPER"},
        opset=10,
    )
    one_node(
        "conv_integer_no_zeros_1d",
        "ConvInteger",
        [("x", u8(r, (2, 3, 11)), False), ("w", u8(r, (4, 3, 3)), True)],
        attrs={"pads": [2, 1]},
        opset=10,
    )


def qlinear_cases():
    r = rng(6)
    one_node(
        "qlinear_matmul_u8",
        "QLinearMatMul",
        [("a", u8(r, (5, 16)), False), ("sa", np.float32(0.02), True), ("za", np.uint8(120), True),
         ("b", u8(r, (16, 7)), True), ("sb", np.float32(0.013), True), ("zb", np.uint8(128), True),
         ("sy", np.float32(0.07), True), ("zy", np.uint8(100), True)],
        opset=10,
    )
    one_node(
        "qlinear_matmul_i8_weights_batched",
        "QLinearMatMul",
        [("a", u8(r, (2, 3, 24)), False), ("sa", np.float32(0.05), True), ("za", np.uint8(60), True),
         ("b", i8(r, (24, 6)), True), ("sb", np.float32(0.004), True), ("zb", np.int8(0), True),
         ("sy", np.float32(0.03), True), ("zy", np.uint8(128), True)],
        opset=10,
    )
    one_node(
        "qlinear_matmul_per_column_i8_out",
        "QLinearMatMul",
        [("a", i8(r, (4, 20)), False), ("sa", np.float32(0.05), True), ("za", np.int8(3), True),
         ("b", i8(r, (20, 5)), True), ("sb", np.array([0.01, 0.02, 0.005, 0.03, 0.011], np.float32), True),
         ("zb", np.zeros(5, np.int8), True),
         ("sy", np.float32(0.08), True), ("zy", np.int8(-10), True)],
        opset=21,
    )
    w = i8(r, (8, 4, 3, 3))
    one_node(
        "qlinear_conv_per_channel_bias",
        "QLinearConv",
        [("x", u8(r, (1, 4, 6, 6)), False), ("sx", np.float32(0.03), True), ("zx", np.uint8(110), True),
         ("w", w, True), ("sw", (0.002 + 0.001 * np.arange(8)).astype(np.float32), True),
         ("zw", np.zeros(8, np.int8), True),
         ("sy", np.float32(0.05), True), ("zy", np.uint8(90), True),
         ("b", r.integers(-3000, 3000, (8,)).astype(np.int32), True)],
        attrs={"pads": [1, 1, 1, 1]},
        opset=10,
    )
    one_node(
        "qlinear_conv_u8_group_stride",
        "QLinearConv",
        [("x", u8(r, (2, 4, 7, 7)), False), ("sx", np.float32(0.1), True), ("zx", np.uint8(128), True),
         ("w", u8(r, (4, 2, 3, 3)), True), ("sw", np.float32(0.01), True), ("zw", np.uint8(127), True),
         ("sy", np.float32(0.2), True), ("zy", np.uint8(128), True)],
        attrs={"group": 2, "strides": [2, 2]},
        opset=10,
    )


def tool_models():
    """Small models quantized by onnxruntime's own tool: the patterns passes/quantize
    rewrites (dynamic MatMulInteger, static QDQ conv and gemm, per channel)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    tmp = os.path.join(HERE, "_tmp")
    os.makedirs(tmp, exist_ok=True)
    r = rng(7)

    # A two-layer MLP in the transformer style: MatMul + Add, Relu, MatMul + Add, residual.
    d, hdim = 16, 24
    w1 = f32(r, (d, hdim), -0.5, 0.5)
    b1 = f32(r, (hdim,), -0.1, 0.1)
    w2 = f32(r, (hdim, d), -0.5, 0.5)
    b2 = f32(r, (d,), -0.1, 0.1)
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["m1"]),
        h.make_node("Add", ["b1", "m1"], ["a1"]),
        h.make_node("Relu", ["a1"], ["r1"]),
        h.make_node("MatMul", ["r1", "w2"], ["m2"]),
        h.make_node("Add", ["m2", "b2"], ["a2"]),
        h.make_node("Add", ["a2", "x"], ["y"]),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in
             [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)]]
    g = h.make_graph(nodes, "mlp", [h.make_tensor_value_info("x", T.FLOAT, [1, 5, d])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    fp = os.path.join(tmp, "mlp.onnx")
    onnx.save(m, fp)
    for per_channel in [False, True]:
        out = os.path.join(tmp, f"mlp_dyn_{per_channel}.onnx")
        quantize_dynamic(fp, out, weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=True)
        name = "tool_dynamic_mlp" + ("_per_channel" if per_channel else "")
        save(name, onnx.load(out), {"x": f32(r, (1, 5, d), -2, 2)})

    # A small CNN: conv 3x3 + relu, conv 3x3 stride 2 + relu, residual-free, flatten, gemm.
    c1 = f32(r, (8, 3, 3, 3), -0.4, 0.4)
    cb1 = f32(r, (8,), -0.1, 0.1)
    c2 = f32(r, (8, 8, 3, 3), -0.2, 0.2)
    cb2 = f32(r, (8,), -0.1, 0.1)
    fw = f32(r, (10, 8 * 4 * 4), -0.1, 0.1)
    fb = f32(r, (10,), -0.1, 0.1)
    nodes = [
        h.make_node("Conv", ["x", "c1", "cb1"], ["v1"], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["v1"], ["r1"]),
        h.make_node("Conv", ["r1", "c2", "cb2"], ["v2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        h.make_node("Relu", ["v2"], ["r2"]),
        h.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[1, 1],
                    pads=[0, 0, 1, 1]),
        h.make_node("Flatten", ["p2"], ["f"]),
        h.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in
             [("c1", c1), ("cb1", cb1), ("c2", c2), ("cb2", cb2), ("fw", fw), ("fb", fb)]]
    g = h.make_graph(nodes, "cnn", [h.make_tensor_value_info("x", T.FLOAT, [2, 3, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    fp = os.path.join(tmp, "cnn.onnx")
    onnx.save(m, fp)

    class Reader(CalibrationDataReader):
        def __init__(self):
            rr = rng(8)
            self.data = iter([{"x": f32(rr, (2, 3, 8, 8), -1, 1)} for _ in range(8)])

        def get_next(self):
            return next(self.data, None)

    for per_channel in [False, True]:
        out = os.path.join(tmp, f"cnn_qdq_{per_channel}.onnx")
        quantize_static(fp, out, Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel, reduce_range=True)
        name = "tool_static_cnn" + ("_per_channel" if per_channel else "")
        save(name, onnx.load(out), {"x": f32(r, (2, 3, 8, 8), -1, 1)})
    shutil.rmtree(tmp)


def main():
    for d in os.listdir(HERE):
        p = os.path.join(HERE, d)
        if os.path.isdir(p):
            shutil.rmtree(p)
    quantize_cases()
    dequantize_cases()
    dynamic_cases()
    matmul_integer_cases()
    conv_integer_cases()
    qlinear_cases()
    tool_models()
    n = sum(os.path.isdir(os.path.join(HERE, d)) for d in os.listdir(HERE))
    size = sum(
        os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(HERE) for f in fs
    )
    print(f"{n} cases, {size / 1024:.0f} KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
