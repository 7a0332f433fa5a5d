#!/usr/bin/env python3
"""Writes tests/fixtures/import/: the narrow pytorchcv ZFNet and AlexNet of make_fixture.py, saved
by torch itself in the formats `zfvis import` reads, so its reader is tested against files torch
wrote rather than against our own idea of them:

  zfnet-narrow.legacy.pth         state dict, legacy (pre-1.6) format, like zfnet-1727-d010ddca.pth
  zfnet-narrow.model.legacy.pth   the whole nn.Module pickled, legacy format
  alexnet-narrow.zip.pth          state dict, zip format (torch >= 1.6 default)
  alexnet-narrow.model.zip.pth    the whole nn.Module pickled, zip format
  alexnet-tv-narrow.zip.pth       torchvision's AlexNet layout (no LRN, floor pools, conv1 padding
                                  2), narrowed, as a state dict with torchvision's names
  alexnet-tv-narrow.expected.safetensors   its input, every layer's output, pool switches, logits
  checksums.json                  sha1 and sha256 of each (for --sha1 / --sha256)

The networks are the ones whose outputs tests/fixtures/<arch>-narrow.expected.safetensors holds
(same seeds); the script checks that their weights equal <arch>-narrow.safetensors, so the
parity fixtures apply to the imported files unchanged.

Usage (needs torch, pytorchcv, safetensors):
  ~/.cache/zfvis/pyref/bin/python tools/make_import_fixtures.py
"""
import hashlib
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixture import OUT, build, rename  # noqa: E402

DIR = os.path.join(OUT, "import")


def torchvision_alexnet(c=(16, 32, 48, 40, 24), fc=64, classes=10):
    """torchvision.models.AlexNet's exact module tree (same indices, so the same state-dict names),
    narrowed."""
    torch.manual_seed(3)
    net = nn.Module()
    net.features = nn.Sequential(
        nn.Conv2d(3, c[0], 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
    net.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    net.classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(c[4] * 36, fc), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Linear(fc, classes))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.uniform_(-0.1, 0.1)
    return net.eval()


def torchvision_expected(net):
    """Input and every layer's output, computed step by step with PyTorch's own ops."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 224), torch.linspace(-1, 1, 224), indexing="ij")
    x = torch.stack([torch.sin(6 * xx), torch.cos(5 * yy), xx * yy * 2]).unsqueeze(0)
    got = {"input": x}
    f = net.features
    convs = [0, 3, 6, 8, 10]
    pools = {0: 2, 1: 5, 4: 12}
    h = x
    with torch.no_grad():
        for i, ci in enumerate(convs):
            h = F.relu(f[ci](h))
            got[f"conv{i + 1}.activation"] = h.clone()
            if i in pools:
                h, idx = F.max_pool2d(h, 3, 2, ceil_mode=False, return_indices=True)
                got[f"conv{i + 1}.pooled"] = h.clone()
                got[f"conv{i + 1}.switches"] = idx.to(torch.int64)
        flat = torch.flatten(net.avgpool(h), 1)
        fc6 = F.relu(net.classifier[1](flat))
        fc7 = F.relu(net.classifier[4](fc6))
        got["fc6"], got["fc7"], got["logits"] = fc6, fc7, net.classifier[6](fc7)
        # the same network as torchvision runs it, end to end
        ref = net.classifier(torch.flatten(net.avgpool(net.features(x)), 1))
        assert torch.allclose(ref, got["logits"], atol=1e-6)
    return {k: v.contiguous() for k, v in got.items()}


def main():
    os.makedirs(DIR, exist_ok=True)
    sums = {}
    for arch, fmt in (("zfnet", "legacy"), ("alexnet", "zip")):
        net = build(arch)
        want = load_file(os.path.join(OUT, f"{arch}-narrow.safetensors"))
        got = rename(net.state_dict())
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), \
            f"{arch}: torch no longer builds the parity fixture's weights; rerun make_fixture.py"
        zip_format = fmt == "zip"
        for what, obj in (("", net.state_dict()), (".model", net)):
            name = f"{arch}-narrow{what}.{fmt}.pth"
            torch.save(obj, os.path.join(DIR, name), _use_new_zipfile_serialization=zip_format)
            data = open(os.path.join(DIR, name), "rb").read()
            sums[name] = {"sha1": hashlib.sha1(data).hexdigest(),
                          "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    tv = torchvision_alexnet()
    name = "alexnet-tv-narrow.zip.pth"
    torch.save(tv.state_dict(), os.path.join(DIR, name))
    save_file(torchvision_expected(tv), os.path.join(DIR, "alexnet-tv-narrow.expected.safetensors"))
    data = open(os.path.join(DIR, name), "rb").read()
    sums[name] = {"sha1": hashlib.sha1(data).hexdigest(),
                  "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    sums["_written_by"] = f"tools/make_import_fixtures.py with torch {torch.__version__}"
    with open(os.path.join(DIR, "checksums.json"), "w") as f:
        json.dump(sums, f, indent=2)
        f.write("\n")
    print(json.dumps(sums, indent=1))


if __name__ == "__main__":
    main()
