#!/usr/bin/env python3
"""Writes tests/fixtures/import/*.onnx: narrowed graphs with the structure of the ONNX model zoo's
`zfnet512` and `bvlcalexnet` (Caffe-born: floor-mode pools, BGR 0-255 input), built with the onnx
helper, and what ONNX Runtime computes on them, so `zfvis import` is tested against the runtime
people use these files with:

  zfnet512-narrow.onnx     conv1 7x7/2 p1 -> Relu -> LRN -> MaxPool 3/2 floor; conv2 5x5/2 (same);
                           conv3-5 3x3 p1 (zfnet512's 512/1024/512 maps, narrowed); pool5 2x2/2;
                           Reshape; Gemm (transB=1) x3 with Relu and Dropout; Softmax.
                           Caffe2 names (gpu_0/conv1_w_0 ...).
  bvlcalexnet-narrow.onnx  conv1 11x11/4; LRN before pool; conv2, conv4, conv5 grouped (group=2);
                           Flatten; fc6 as MatMul + Add, fc7 as Gemm transB=0, fc8 Gemm transB=1;
                           Softmax.
  <name>.expected.safetensors  input, every conv layer's Relu / LRN / MaxPool output, fc6, fc7,
                           logits and the Softmax, from ONNX Runtime (the graph with those
                           tensors added as outputs).

Usage (needs onnx, onnxruntime, numpy, safetensors):
  ~/.cache/zfvis/pyref/bin/python tools/make_onnx_fixtures.py
"""
import hashlib
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "import")
CLASSES = 10


def he(rng, shape):
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


class Graph:
    def __init__(self, prefix, seed):
        self.rng = np.random.default_rng(seed)
        self.prefix = prefix
        self.nodes, self.inits, self.probes = [], [], {}

    def name(self, s):
        return f"{self.prefix}{s}"

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(array, self.name(name)))
        return self.name(name)

    def node(self, op, inputs, out, probe=None, **attrs):
        out = self.name(out)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        if probe:
            self.probes[probe] = out
        return out

    def conv(self, x, i, c_in, c_out, k, stride, pad, group=1):
        w = self.init(f"conv{i}_w_0", he(self.rng, (c_out, c_in // group, k, k)))
        b = self.init(f"conv{i}_b_0", self.rng.uniform(-0.1, 0.1, c_out).astype(np.float32))
        y = self.node("Conv", [x, w, b], f"conv{i}_1", kernel_shape=[k, k], strides=[stride, stride],
                      pads=[pad] * 4, group=group)
        return self.node("Relu", [y], f"conv{i}_2", probe=f"conv{i}.activation")

    def lrn(self, x, i):
        return self.node("LRN", [x], f"norm{i}_1", probe=f"conv{i}.normalized",
                         size=5, alpha=1e-4, beta=0.75, bias=1.0)

    def pool(self, x, i, k=3, s=2, end_pad=0):
        pads = {"pads": [0, 0, end_pad, end_pad]} if end_pad else {}
        return self.node("MaxPool", [x], f"pool{i}_1", probe=f"conv{i}.pooled",
                         kernel_shape=[k, k], strides=[s, s], **pads)

    def fc(self, x, name, f_in, f_out, kind, relu=True):
        w = he(self.rng, (f_out, f_in))
        b = self.rng.uniform(-0.1, 0.1, f_out).astype(np.float32)
        if kind == "matmul":
            y = self.node("MatMul", [x, self.init(f"{name}_w_0", w.T.copy())], f"{name}_mm")
            y = self.node("Add", [y, self.init(f"{name}_b_0", b)], f"{name}_1")
        else:
            trans = 1 if kind == "gemm" else 0
            wt = w if trans else w.T.copy()
            y = self.node("Gemm", [x, self.init(f"{name}_w_0", wt), self.init(f"{name}_b_0", b)],
                          f"{name}_1", transB=trans)
        if not relu:
            self.probes["logits"] = y
            return y
        y = self.node("Relu", [y], f"{name}_2", probe=name)
        return self.node("Dropout", [y], f"{name}_3")

    def model(self, data, out):
        x = helper.make_tensor_value_info(data, TensorProto.FLOAT, [1, 3, 224, 224])
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, CLASSES])
        graph = helper.make_graph(self.nodes, "chain", [x], [y], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)],
                              producer_name="tools/make_onnx_fixtures.py")
        m.ir_version = 7
        onnx.checker.check_model(m)
        return m


def zfnet512():
    g = Graph("gpu_0/", seed=11)
    data = "gpu_0/data_0"
    c = [16, 24, 32, 48, 32]
    x = g.pool(g.lrn(g.conv(data, 1, 3, c[0], 7, 2, 1), 1), 1)     # 110 -> 54
    x = g.pool(g.lrn(g.conv(x, 2, c[0], c[1], 5, 2, 0), 2), 2)     # 25 -> 12
    x = g.conv(x, 3, c[1], c[2], 3, 1, 1)
    x = g.conv(x, 4, c[2], c[3], 3, 1, 1)
    x = g.pool(g.conv(x, 5, c[3], c[4], 3, 1, 1), 5, k=2, s=2)       # 12 -> 6
    shape = g.init("shape", np.array([1, -1], dtype=np.int64))
    x = g.node("Reshape", [x, shape], "flat")
    x = g.fc(x, "fc6", c[4] * 36, 64, "gemm")
    x = g.fc(x, "fc7", 64, 64, "gemm")
    x = g.fc(x, "fc8", 64, CLASSES, "gemm", relu=False)
    out = g.node("Softmax", [x], "softmax_1", probe="softmax")
    return g, data, out


def zfnet512_ceil():
    """zfnet512's structure with Caffe's ceil-mode pools written as floor-mode pools padded at the
    end (as converters emit them): 110 -> 55, 26 -> 13, 13 -> 7."""
    g = Graph("gpu_0/", seed=13)
    data = "gpu_0/data_0"
    c = [16, 24, 32, 48, 32]
    x = g.pool(g.lrn(g.conv(data, 1, 3, c[0], 7, 2, 1), 1), 1, end_pad=1)
    x = g.pool(g.lrn(g.conv(x, 2, c[0], c[1], 5, 2, 0), 2), 2, end_pad=1)
    x = g.conv(x, 3, c[1], c[2], 3, 1, 1)
    x = g.conv(x, 4, c[2], c[3], 3, 1, 1)
    x = g.pool(g.conv(x, 5, c[3], c[4], 3, 1, 1), 5, k=2, s=2, end_pad=1)
    x = g.node("Flatten", [x], "flat", axis=1)
    x = g.fc(x, "fc6", c[4] * 49, 32, "gemm")
    x = g.fc(x, "fc7", 32, 32, "gemm")
    x = g.fc(x, "fc8", 32, CLASSES, "gemm", relu=False)
    out = g.node("Softmax", [x], "softmax_1", probe="softmax")
    return g, data, out


def bvlcalexnet():
    g = Graph("", seed=12)
    data = "data_0"
    c = [16, 32, 48, 48, 32]
    x = g.pool(g.lrn(g.conv(data, 1, 3, c[0], 11, 4, 0), 1), 1)         # 54 -> 26
    x = g.pool(g.lrn(g.conv(x, 2, c[0], c[1], 5, 1, 2, group=2), 2), 2)  # 26 -> 12
    x = g.conv(x, 3, c[1], c[2], 3, 1, 1)
    x = g.conv(x, 4, c[2], c[3], 3, 1, 1, group=2)
    x = g.pool(g.conv(x, 5, c[3], c[4], 3, 1, 1, group=2), 5)            # 12 -> 5
    x = g.node("Flatten", [x], "flat", axis=1)
    x = g.fc(x, "fc6", c[4] * 25, 64, "matmul")
    x = g.fc(x, "fc7", 64, 64, "gemm_t")
    x = g.fc(x, "fc8", 64, CLASSES, "gemm", relu=False)
    out = g.node("Softmax", [x], "prob_1", probe="softmax")
    return g, data, out


def caffe_input():
    """A smooth BGR 0-255 picture less the mean pixel, as Caffe-born models are fed."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, 224), np.linspace(-1, 1, 224), indexing="ij")
    bgr = np.stack([np.sin(6 * xx), np.cos(5 * yy), xx * yy * 2]) * 100.0
    return bgr[None].astype(np.float32)


def main():
    os.makedirs(DIR, exist_ok=True)
    sums = {}
    # the ceil variant keeps only what shows its geometry (pool5 and the logits), not even its
    # input, which is the others': a small file
    small = {"conv5.pooled", "logits"}
    for name, build, keep in (("zfnet512-narrow", zfnet512, None),
                              ("bvlcalexnet-narrow", bvlcalexnet, None),
                              ("zfnet512-ceil-narrow", zfnet512_ceil, small)):
        g, data, out = build()
        model = g.model(data, out)
        path = os.path.join(DIR, f"{name}.onnx")
        onnx.save(model, path)
        # the same graph with every probed tensor as an output too
        probed = onnx.ModelProto()
        probed.CopyFrom(model)
        for t in g.probes.values():
            if t != out:
                probed.graph.output.append(helper.make_empty_tensor_value_info(t))
        sess = ort.InferenceSession(probed.SerializeToString(), providers=["CPUExecutionProvider"])
        x = caffe_input()
        names = [o.name for o in sess.get_outputs()]
        values = dict(zip(names, sess.run(None, {data: x})))
        # (the small one's input is the others': caffe_input())
        expected = {"input": x} if keep is None else {}
        expected.update({k: np.ascontiguousarray(values[t]) for k, t in g.probes.items()
                         if keep is None or k in keep})
        save_file(expected, os.path.join(DIR, f"{name}.expected.safetensors"))
        raw = open(path, "rb").read()
        sums[f"{name}.onnx"] = {"sha1": hashlib.sha1(raw).hexdigest(),
                                "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
        print(name, {k: v.shape for k, v in expected.items()})
    path = os.path.join(DIR, "checksums.json")
    all_sums = json.load(open(path))
    all_sums.update(sums)
    all_sums["_onnx_written_by"] = (f"tools/make_onnx_fixtures.py with onnx {onnx.__version__}, "
                                    f"onnxruntime {ort.__version__}")
    with open(path, "w") as f:
        json.dump(all_sums, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
