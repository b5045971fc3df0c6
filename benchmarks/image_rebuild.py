#!/usr/bin/env python3
"""Image rebuild cost, in one run: cold build vs. a code-only change, on the real engine.

    sudo bash scripts/docker-up.sh            # engine + base image (once)
    python benchmarks/image_rebuild.py [--hardware cpu] [--json]

1. cold build: the CPU image from a copy of the tree with the layer cache off (dependencies really install);
2. code-only rebuild: one line appended to a source file in that copy, built with the cache on;
3. the layers that changed between the two images and their bytes; the total image size.

Targets (issue 4): rebuild <= 0.1x cold; changed layers <= 1 % of image bytes; CPU image <= 1.6 GB.
Exit status 1 when a target is missed. The copies and the two images are removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cli"))

from trainpod import images  # noqa: E402
from trainpod.config.loader import load_catalog  # noqa: E402
from trainpod.settings import Settings  # noqa: E402

TARGET_REBUILD_RATIO = 0.10
TARGET_CHANGED_FRACTION = 0.01
TARGET_IMAGE_BYTES = 1.6e9


def timed_build(plan: images.ImagePlan, client: object, no_cache: bool) -> float:
    start = time.perf_counter()
    images.build(plan, client=client, force=True, no_cache=no_cache)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hardware", default="cpu")
    ap.add_argument("--base-image", default=os.environ.get("TRAINPOD_BASE_IMAGE") or None)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()

    hw = load_catalog(use_cwd=False).get("hardware", args.hardware)
    settings = Settings(image_repository="trainpod-bench")
    client = images.docker_client()
    with tempfile.TemporaryDirectory(prefix="trainpod-bench-") as tmp:
        tree = images.copy_source_tree(Path(tmp) / "tree", ROOT)
        cold = images.image_plan(args.hardware, hw, settings, base_image=args.base_image, root=tree)
        cold_s = timed_build(cold, client, no_cache=True)
        edited = tree / "cli" / "trainpod" / "images" / "plan.py"
        edited.write_text(edited.read_text() + f"\n# benchmark edit {time.time_ns()}\n")
        warm = images.image_plan(args.hardware, hw, settings, base_image=args.base_image, root=tree)
        rebuild_s = timed_build(warm, client, no_cache=False)

    old = client.images.get(cold.tag).attrs["RootFS"]["Layers"]
    new = client.images.get(warm.tag).attrs["RootFS"]["Layers"]
    shared = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
    n_changed = len(new) - shared
    history = client.api.history(warm.tag)  # newest first; entries with Size > 0 are the layers
    changed_bytes = sum([h["Size"] for h in history if h["Size"] > 0][:n_changed])
    total = client.images.get(warm.tag).attrs["Size"]
    for tag in (warm.tag, cold.tag):
        client.images.remove(tag)

    result = {
        "hardware": args.hardware,
        "base_image": cold.build_args["BASE_IMAGE"],
        "cold_build_s": round(cold_s, 1),
        "code_only_rebuild_s": round(rebuild_s, 1),
        "rebuild_ratio": round(rebuild_s / cold_s, 3),
        "layers_total": len(new),
        "layers_changed": n_changed,
        "changed_bytes": changed_bytes,
        "changed_fraction": round(changed_bytes / total, 5),
        "image_bytes": total,
        "targets_met": {
            f"rebuild <= {TARGET_REBUILD_RATIO}x cold": rebuild_s <= TARGET_REBUILD_RATIO * cold_s,
            f"changed layers <= {TARGET_CHANGED_FRACTION:.0%} of image": changed_bytes <= TARGET_CHANGED_FRACTION * total,
            f"image <= {TARGET_IMAGE_BYTES / 1e9:.1f} GB": total <= TARGET_IMAGE_BYTES,
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            if key != "targets_met":
                print(f"{key:22} {value}")
        for name, ok in result["targets_met"].items():
            print(f"{'PASS' if ok else 'MISS':22} {name}")
    return 0 if all(result["targets_met"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
