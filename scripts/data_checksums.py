#!/usr/bin/env python3
"""Print the content checksums mftrnn verifies (SHA-256 over the decoded pixels and labels of each
split, mftrnn/data.py CONTENT_SHA256) for a copy of MNIST and CIFAR-10, and whether they match.

    python scripts/data_checksums.py [ROOT]        # default: $MFTRNN_DATA, else ../shared/data
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from mftrnn.data import CONTENT_SHA256, NAMES, _read_raw, content_sha256, resolve_root
from mftrnn.errors import DataError
from mftrnn.schema import Dataset


def main() -> int:
    default = os.environ.get("MFTRNN_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    root = resolve_root(sys.argv[1] if len(sys.argv) > 1 else default)
    bad = 0
    for dataset in Dataset:
        for train in (True, False):
            split = "train" if train else "test"
            try:
                digest = content_sha256(*_read_raw(dataset, root, train, download=False))
            except DataError as exc:
                print(f"{NAMES[dataset]:<9} {split:<5} unreadable: {exc}")
                bad += 1
                continue
            ok = digest == CONTENT_SHA256[(dataset, train)]
            bad += not ok
            print(f"{NAMES[dataset]:<9} {split:<5} {digest}  {'ok' if ok else 'DIFFERS from mftrnn/data.py'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
