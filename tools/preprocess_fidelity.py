#!/usr/bin/env python3
"""How far zfvis's preprocessing is from torchvision's, in grey levels and in probability.

zfvis decodes with the `image` crate (pure Rust JPEG), resizes the short side to 256 with a
triangle filter scaled to the downsampling factor, and crops the centre 224. The reference is the
torchvision pipeline a PyTorch user runs: PIL (libjpeg-turbo) → `transforms.Resize(256)`
(bilinear, antialiased) → `CenterCrop(224)`. For each image this script uploads the file to a real
`zfvis serve`, reads back the crop the network saw (`/api/images/{id}/input`, lossless PNG) and
compares it with the reference crop; then runs the same model (an ONNX graph of its weights,
tools/bench_ort.py) on both crops and compares the top class and its probability.

Usage (needs torch, torchvision, onnxruntime, onnx, safetensors, aiohttp-free: urllib only;
~/.cache/zfvis/pyref has them):
  ~/.cache/zfvis/pyref/bin/python tools/preprocess_fidelity.py [--per-class 10] [--bin PATH]
"""
import argparse
import glob
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
import uuid

import numpy as np
import onnxruntime as ort
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ort import graph  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/zfvis/target"))
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def upload(url, path):
    boundary = uuid.uuid4().hex
    with open(path, "rb") as f:
        data = f.read()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url}/api/images", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def crop_of(url, image_id):
    with urllib.request.urlopen(f"{url}/api/images/{image_id}/input") as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


def reference(path):
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    return np.asarray(tf(Image.open(path).convert("RGB")))


def probabilities(sess, crops):
    x = ((np.stack(crops).astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    logits = sess.run(None, {"input": np.ascontiguousarray(x)})[0]
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--bin", default=os.path.join(TARGET, "debug", "zfvis"))
    ap.add_argument("--weights", default="model-weights/zfnet-imagenette.safetensors")
    args = ap.parse_args()
    val = os.path.join(ROOT, "..", "shared/datasets/imagenette/val")
    sets = {"demo photos (various sizes, downscaled)": sorted(
        f for f in glob.glob(os.path.join(ROOT, "web/assets/demo/*")) if f.endswith((".jpg", ".png")))}
    if os.path.isdir(val):
        sets["Imagenette val (224 px JPEGs, upscaled to 256)"] = [
            f for d in sorted(glob.glob(os.path.join(val, "*"))) for f in sorted(glob.glob(os.path.join(d, "*")))[:args.per_class]]
    else:
        print(f"no {val}: only the demo photos", file=sys.stderr)
    cache = tempfile.mkdtemp(prefix="zfvis-fidelity-")
    proc = subprocess.Popen([args.bin, "serve", "--addr", "127.0.0.1:0", "--weights", args.weights,
                             "--cache-dir", cache, "--ui-dir", "/nonexistent"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = None
    for line in proc.stdout:
        m = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        sys.exit("the server did not start")
    sess = ort.InferenceSession(graph(os.path.join(ROOT, args.weights), "zfnet"),
                                providers=["CPUExecutionProvider"])
    try:
        for name, files in sets.items():
            ours, refs = [], []
            for f in files:
                ours.append(crop_of(url, upload(url, f)["id"]))
                refs.append(reference(f))
            diff = np.abs(np.stack(ours).astype(int) - np.stack(refs).astype(int))
            p_ours, p_ref = probabilities(sess, ours), probabilities(sess, refs)
            top_ours, top_ref = p_ours.argmax(1), p_ref.argmax(1)
            dp = np.abs(p_ours[np.arange(len(files)), top_ref] - p_ref[np.arange(len(files)), top_ref])
            print(f"{name}: {len(files)} images")
            print(f"  crop vs torchvision: max {diff.max()} grey levels, mean {diff.mean():.3f}, "
                  f"{(diff > 2).mean() * 100:.2f}% of values off by more than 2")
            print(f"  same top class: {(top_ours == top_ref).sum()} of {len(files)}; probability of "
                  f"the reference's top class: mean |Δ| {dp.mean() * 100:.3f} points, max {dp.max() * 100:.2f}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
