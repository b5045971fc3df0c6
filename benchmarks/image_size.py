#!/usr/bin/env python3
"""CUDA image size, side by side with the same stack on an ``nvidia/cuda:*-runtime`` base.

    sudo bash scripts/docker-up.sh                     # engine, base image, loopback registry (once)
    python benchmarks/image_size.py [--hardware cloud-rtx-4090] [--registry 127.0.0.1:5055] [--json]

Measured on the real engine, from a copy of the tree:
1. the image (built if missing: a cold build is timed): uncompressed size, number of layers, the biggest layers;
2. as pushed: pushed to the registry, the manifest's compressed layer sizes summed;
3. a code-only change (one line in a source file) rebuilt with the cache: seconds, changed layers and bytes;
4. the CUDA libraries the torch wheels bring (``nvidia-*`` wheels under site-packages/nvidia) that an
   ``nvidia/cuda:*-runtime`` base ships a second copy of (cudart, cuBLAS, cuFFT, cuRAND, cuSOLVER, cuSPARSE,
   NVRTC, nvJitLink, NVTX, NCCL): their size uncompressed and gzip-compressed, measured inside the image.

The same stack on nvidia/cuda:*-runtime cannot be built here (that base cannot be pulled), so it is estimated
two ways: a *measured lower bound* (this image + the duplicated libraries: the runtime base holds at least those,
its Ubuntu + apt Python being about this image's Debian + Python), and, with ``--published-runtime-gb`` (the
size Docker Hub lists for the runtime tag), this image - its own base + that published size.
Target (issue 17): this image at least 30 % smaller. Exit status 1 when the lower bound misses it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cli"))

from trainpod import images  # noqa: E402
from trainpod.config.loader import load_catalog  # noqa: E402
from trainpod.settings import Settings  # noqa: E402

TARGET_SMALLER = 0.30
# Libraries of the nvidia/cuda runtime flavour that torch's nvidia-* wheels also ship (file name prefixes).
DUPLICATED = ("libcudart", "libcublas", "libcublasLt", "libcufft", "libcufftw", "libcurand", "libcusolver",
              "libcusparse.", "libnvrtc", "libnvJitLink", "libnvToolsExt", "libnvtx", "libnccl")
MEASURE = r"""
import glob, gzip, io, json, os, sys
prefixes = tuple(sys.argv[1].split(","))
files = [f for f in glob.glob("/opt/venv/lib/python3*/site-packages/nvidia/**/lib/*", recursive=True)
         if os.path.isfile(f) and not os.path.islink(f) and os.path.basename(f).startswith(prefixes)
         and not f.endswith(".a")]  # the runtime flavour has no static libraries
raw = sum(os.path.getsize(f) for f in files)
packed = 0
for f in files:
    buf = io.BytesIO()
    with open(f, "rb") as src, gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6) as gz:
        while chunk := src.read(1 << 20):
            gz.write(chunk)
    packed += buf.tell()
wheels = sum(os.path.getsize(os.path.join(d, n)) for p in glob.glob("/opt/venv/lib/python3*/site-packages/nvidia")
             for d, _, names in os.walk(p) for n in names if not os.path.islink(os.path.join(d, n)))
print(json.dumps({"files": sorted(os.path.basename(f) for f in files), "bytes": raw, "gzip_bytes": packed,
                  "all_nvidia_wheels_bytes": wheels}))
"""


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def pushed_bytes(registry: str, repo: str, tag: str) -> int:
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        manifest = json.load(resp)
    return sum(layer["size"] for layer in manifest["layers"]) + manifest["config"]["size"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hardware", default="cloud-rtx-4090")
    ap.add_argument("--base-image", default=os.environ.get("TRAINPOD_BASE_IMAGE") or None)
    ap.add_argument("--registry", default="127.0.0.1:5055", help="registry to push to (measures 'as pushed')")
    ap.add_argument("--published-runtime-gb", type=float,
                    help="uncompressed size Docker Hub lists for the matching nvidia/cuda:*-runtime tag")
    ap.add_argument("--skip-rebuild", action="store_true", help="skip the code-only rebuild measurement")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()

    hw = load_catalog(use_cwd=False).get("hardware", args.hardware)
    settings = Settings(registry=args.registry, image_repository="trainpod-size-bench")
    client = images.docker_client()
    result: dict = {"hardware": args.hardware}
    with tempfile.TemporaryDirectory(prefix="trainpod-size-") as tmp:
        tree = images.copy_source_tree(Path(tmp) / "tree", ROOT)
        plan = images.image_plan(args.hardware, hw, settings, base_image=args.base_image, root=tree)
        start = time.perf_counter()
        built = images.build(plan, client=client)
        result["base_image"] = plan.build_args["BASE_IMAGE"]
        result["build_s" if built else "build"] = round(time.perf_counter() - start, 1) if built else "cached"
        img = client.images.get(plan.tag)
        result["image_bytes"] = img.attrs["Size"]
        result["layers"] = len(img.attrs["RootFS"]["Layers"])
        history = [h for h in client.api.history(plan.tag) if h["Size"] > 0]
        result["biggest_layers"] = [{"bytes": h["Size"], "step": h["CreatedBy"].replace("/bin/sh -c ", "")[:90]}
                                    for h in sorted(history, key=lambda h: -h["Size"])[:5]]
        base = client.images.get(plan.build_args["BASE_IMAGE"]).attrs["Size"]
        result["base_bytes"] = base

        images.push(plan, settings, client=client)
        result["pushed_bytes"] = pushed_bytes(args.registry, plan.repository.split("/", 1)[1], plan.tag_name)

        out = client.containers.run(plan.tag, ["python", "-c", MEASURE, ",".join(DUPLICATED)], network_mode="host",
                                    remove=True).decode().strip().splitlines()[-1]
        dup = json.loads(out)
        result["duplicated_cuda_libs"] = {k: dup[k] for k in ("bytes", "gzip_bytes", "all_nvidia_wheels_bytes")}
        result["duplicated_files"] = len(dup["files"])

        if not args.skip_rebuild:
            edited = tree / "cli" / "trainpod" / "images" / "plan.py"
            edited.write_text(edited.read_text() + f"\n# benchmark edit {time.time_ns()}\n")
            warm = images.image_plan(args.hardware, hw, settings, base_image=args.base_image, root=tree)
            start = time.perf_counter()
            images.build(warm, client=client)
            result["code_only_rebuild_s"] = round(time.perf_counter() - start, 1)
            old, new = img.attrs["RootFS"]["Layers"], client.images.get(warm.tag).attrs["RootFS"]["Layers"]
            shared = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), len(old))
            changed = len(new) - shared
            sized = [h["Size"] for h in client.api.history(warm.tag) if h["Size"] > 0]
            result["code_only_changed_layers"] = changed
            result["code_only_changed_bytes"] = sum(sized[:changed])
            client.images.remove(warm.tag)
        client.images.remove(plan.tag)  # the registry-named tag; the content-addressed local one stays

    ours, ours_gz = result["image_bytes"], result["pushed_bytes"]
    lower = ours + dup["bytes"]
    lower_gz = ours_gz + dup["gzip_bytes"]
    result["nvidia_runtime_stack_lower_bound_bytes"] = lower
    result["nvidia_runtime_stack_lower_bound_pushed_bytes"] = lower_gz
    result["smaller_by"] = round(1 - ours / lower, 3)
    result["smaller_by_pushed"] = round(1 - ours_gz / lower_gz, 3)
    if args.published_runtime_gb:
        est = ours - base + args.published_runtime_gb * 1e9
        result["nvidia_runtime_stack_from_published_bytes"] = int(est)
        result["smaller_by_vs_published"] = round(1 - ours / est, 3)
    result["target_met"] = result["smaller_by"] >= TARGET_SMALLER

    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if result["target_met"] else 1
    how = f"built in {result['build_s']}s" if "build_s" in result else "already built"
    print(f"{args.hardware} image on {result['base_image']}: {result['layers']} layers ({how})")
    rows = [("", "trainpod", "same stack on nvidia/cuda runtime", "trainpod smaller by")]
    rows.append(("uncompressed", gb(ours), f">= {gb(lower)} (measured lower bound)", f">= {result['smaller_by']:.0%}"))
    rows.append(("as pushed (gzip)", gb(ours_gz), f">= {gb(lower_gz)} (measured lower bound)",
                 f">= {result['smaller_by_pushed']:.0%}"))
    if args.published_runtime_gb:
        rows.append(("uncompressed", gb(ours), f"{gb(result['nvidia_runtime_stack_from_published_bytes'])} "
                     f"(published runtime {args.published_runtime_gb:g} GB)",
                     f"{result['smaller_by_vs_published']:.0%}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"duplicated CUDA libraries ({result['duplicated_files']} files): {gb(dup['bytes'])} "
          f"({gb(dup['gzip_bytes'])} gzip); all nvidia-* wheels: {gb(dup['all_nvidia_wheels_bytes'])}")
    print(f"base image {result['base_image']}: {gb(base)}")
    if "code_only_rebuild_s" in result:
        print(f"code-only rebuild: {result['code_only_rebuild_s']}s, {result['code_only_changed_layers']} layers, "
              f"{result['code_only_changed_bytes'] / 1e6:.1f} MB changed")
    for layer in result["biggest_layers"]:
        print(f"  {gb(layer['bytes']):>9}  {layer['step']}")
    print(f"{'PASS' if result['target_met'] else 'MISS'}: at least {TARGET_SMALLER:.0%} smaller (lower bound)")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
