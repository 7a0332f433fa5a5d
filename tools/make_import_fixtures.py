#!/usr/bin/env python3
"""Writes tests/fixtures/import/: the narrow pytorchcv ZFNet and AlexNet of make_fixture.py, saved
by torch itself in the formats `zfvis import` reads, so its reader is tested against files torch
wrote rather than against our own idea of them:

  zfnet-narrow.legacy.pth         state dict, legacy (pre-1.6) format, like zfnet-1727-d010ddca.pth
  zfnet-narrow.model.legacy.pth   the whole nn.Module pickled, legacy format
  alexnet-narrow.zip.pth          state dict, zip format (torch >= 1.6 default)
  alexnet-narrow.model.zip.pth    the whole nn.Module pickled, zip format
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
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixture import OUT, build, rename  # noqa: E402

DIR = os.path.join(OUT, "import")


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
    sums["_written_by"] = f"tools/make_import_fixtures.py with torch {torch.__version__}"
    with open(os.path.join(DIR, "checksums.json"), "w") as f:
        json.dump(sums, f, indent=2)
        f.write("\n")
    print(json.dumps(sums, indent=1))


if __name__ == "__main__":
    main()
