#!/usr/bin/env python3
"""Writes the parity fixtures under tests/fixtures/ from an independent reference: PyTorch running
pytorchcv's own ZFNet / AlexNet code (the layout of the pretrained `zfnet-1727-d010ddca.pth`).

The networks are narrower than the paper (same layers, kernels, strides, paddings, LRN and
ceil-mode pools; fewer channels, fc width 64, 10 classes) so the fixtures stay small; zfvis reads
widths from the weights, so the same code path runs. For each architecture it writes
  <arch>-narrow.safetensors  weights in zfvis naming (conv1.weight … fc8.bias)
  <arch>-narrow.json         the zfvis manifest
  <arch>-narrow.expected.safetensors  input, per-layer outputs, pool switches, logits

Usage (needs torch, pytorchcv, safetensors; not needed to run the tests):
  python3 -m venv ~/.cache/zfvis/pyref && ~/.cache/zfvis/pyref/bin/pip install torch pytorchcv safetensors
  ~/.cache/zfvis/pyref/bin/python tools/make_fixture.py
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from pytorchcv.models.alexnet import AlexNet, AlexDense

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")

LAYOUTS = {
    # pytorchcv get_zfnet(version="a") and get_alexnet(version="a"), channels narrowed
    "zfnet": dict(kernel_sizes=[[7], [5], [3, 3, 3]], strides=[[2], [2], [1, 1, 1]],
                  paddings=[[1], [0], [1, 1, 1]]),
    "alexnet": dict(kernel_sizes=[[11], [5], [3, 3, 3]], strides=[[4], [1], [1, 1, 1]],
                    paddings=[[0], [2], [1, 1, 1]]),
}
CHANNELS = [[16], [32], [48, 40, 24]]
FC_WIDTH = 64
CLASSES = 10
IMAGENETTE = [("n01440764", "tench"), ("n02102040", "English springer"),
              ("n02979186", "cassette player"), ("n03000684", "chain saw"),
              ("n03028079", "church"), ("n03394916", "French horn"),
              ("n03417042", "garbage truck"), ("n03425413", "gas pump"),
              ("n03445777", "golf ball"), ("n03888257", "parachute")]


def build(arch):
    torch.manual_seed({"zfnet": 1, "alexnet": 2}[arch])
    net = AlexNet(channels=CHANNELS, use_lrn=True, num_classes=CLASSES, **LAYOUTS[arch])
    # pytorchcv hard-codes fc width 4096; swap in its own blocks at width 64
    flat = CHANNELS[2][-1] * 6 * 6
    net.output.fc1 = AlexDense(flat, FC_WIDTH)
    net.output.fc2 = AlexDense(FC_WIDTH, FC_WIDTH)
    net.output.fc3 = nn.Linear(FC_WIDTH, CLASSES)
    with torch.no_grad():  # pytorchcv zeroes conv biases; make them matter
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.uniform_(-0.1, 0.1)
    return net.eval()


def rename(state):
    names = {}
    convs = ["features.stage1.unit1", "features.stage2.unit1", "features.stage3.unit1",
             "features.stage3.unit2", "features.stage3.unit3"]
    for i, prefix in enumerate(convs):
        for p in ("weight", "bias"):
            names[f"{prefix}.conv.{p}"] = f"conv{i + 1}.{p}"
    for src, dst in (("output.fc1.fc", "fc6"), ("output.fc2.fc", "fc7"), ("output.fc3", "fc8")):
        for p in ("weight", "bias"):
            names[f"{src}.{p}"] = f"{dst}.{p}"
    assert set(names) == set(state), sorted(set(state) ^ set(names))
    return {names[k]: v.contiguous() for k, v in state.items()}


def run(arch):
    net = build(arch)
    units = [net.features.stage1.unit1, net.features.stage2.unit1, net.features.stage3.unit1,
             net.features.stage3.unit2, net.features.stage3.unit3]
    pools = {0: net.features.stage1.pool1, 1: net.features.stage2.pool2, 4: net.features.stage3.pool3}
    got = {}

    def keep(name):
        def hook(_m, _i, out):
            got[name] = out.detach().clone()
        return hook

    for i, unit in enumerate(units):
        unit.activ.register_forward_hook(keep(f"conv{i + 1}.activation"))
        if i < 2:
            unit.register_forward_hook(keep(f"conv{i + 1}.normalized"))
    for i, pool in pools.items():
        pool.register_forward_hook(keep(f"conv{i + 1}.pooled"))
    net.output.fc1.activ.register_forward_hook(keep("fc6"))
    net.output.fc2.activ.register_forward_hook(keep("fc7"))

    g = torch.Generator().manual_seed(7)
    noise = torch.randn(1, 3, 224, 224, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 224), torch.linspace(-1, 1, 224), indexing="ij")
    pattern = torch.stack([torch.sin(6 * xx), torch.cos(5 * yy), xx * yy * 2]).unsqueeze(0)
    x = torch.cat([noise, pattern]) if arch == "zfnet" else pattern
    with torch.no_grad():
        logits = net(x)
        for i in pools:
            src = got.get(f"conv{i + 1}.normalized", got[f"conv{i + 1}.activation"])
            _, idx = F.max_pool2d(src, 3, 2, ceil_mode=True, return_indices=True)
            got[f"conv{i + 1}.switches"] = idx.to(torch.int64)
    got["input"] = x
    got["logits"] = logits
    os.makedirs(OUT, exist_ok=True)
    base = os.path.join(OUT, f"{arch}-narrow")
    save_file(rename(net.state_dict()), base + ".safetensors")
    save_file({k: v.contiguous() for k, v in got.items()}, base + ".expected.safetensors")
    manifest = {
        "format": 1,
        "name": f"{arch}-narrow-fixture",
        "architecture": arch,
        "fc_width": FC_WIDTH,
        "classes": [{"wnid": w, "label": l} for w, l in IMAGENETTE],
        "preprocess": {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406],
                       "std": [0.229, 0.224, 0.225]},
        "trained": False,
        "provenance": f"Test fixture: pytorchcv {arch} layout at random init (torch seed), narrowed; "
                      f"written by tools/make_fixture.py with torch {torch.__version__}.",
    }
    with open(base + ".json", "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(arch, {k: tuple(v.shape) for k, v in got.items()}, file=sys.stderr)


if __name__ == "__main__":
    for a in LAYOUTS:
        run(a)
