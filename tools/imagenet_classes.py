#!/usr/bin/env python3
"""Writes zfnet/assets/imagenet1k/classes.tsv, the 1000 ImageNet-1k classes in logit order
(WordNet id, short label, WordNet lemmas), from the data files of timm (Apache-2.0), whose
licence is copied beside it. Not typed by hand.

Usage: pip download --no-deps timm==1.0.31 -d /tmp/timm && python3 tools/imagenet_classes.py /tmp/timm/timm-1.0.31-py3-none-any.whl
"""
import os
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "zfnet", "assets", "imagenet1k")


def main(wheel):
    z = zipfile.ZipFile(wheel)
    synsets = z.read("timm/data/_info/imagenet_synsets.txt").decode().split()
    lemmas = dict(line.split("\t", 1) for line in
                  z.read("timm/data/_info/imagenet_synset_to_lemma.txt").decode().splitlines() if line)
    assert len(synsets) == 1000 and len(set(synsets)) == 1000
    licence = next(n for n in z.namelist() if n.endswith("licenses/LICENSE"))
    os.makedirs(OUT, exist_ok=True)
    first = {w: lemmas[w].split(",")[0].strip() for w in synsets}
    # two classes share a first lemma (crane, maillot): their labels carry the WordNet id
    shared = {l for l in first.values() if list(first.values()).count(l) > 1}
    with open(os.path.join(OUT, "classes.tsv"), "w") as f:
        for wnid in synsets:
            label = f"{first[wnid]} ({wnid})" if first[wnid] in shared else first[wnid]
            f.write(f"{wnid}\t{label}\t{lemmas[wnid].strip()}\n")
    with open(os.path.join(OUT, "LICENSE-timm"), "wb") as f:
        f.write(z.read(licence))
    with open(os.path.join(OUT, "SOURCE.md"), "w") as f:
        f.write(f"# Where classes.tsv comes from\n\n"
                f"`timm/data/_info/imagenet_synsets.txt` (the 1000 WordNet ids in the logit order of "
                f"every torchvision/pytorchcv/timm ImageNet-1k model) and "
                f"`timm/data/_info/imagenet_synset_to_lemma.txt` (their WordNet lemmas) from the "
                f"wheel `{os.path.basename(wheel)}` of timm (PyPI), licensed Apache-2.0 "
                f"(LICENSE-timm). Columns: WordNet id, label (the first lemma; with the id where two "
                f"classes share it: crane, maillot), all lemmas. "
                f"Written by tools/imagenet_classes.py.\n")


if __name__ == "__main__":
    main(sys.argv[1])
