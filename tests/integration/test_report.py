"""``trainpod runs report``: from a real smoke run to an HTML file that a real browser renders offline.

The report's plotted series (its JSON data island) are checked against the run's ``logs/metrics.jsonl``, its
PNGs are decoded, and Debian's headless Chromium loads the file from disk with every host name unresolvable and
background networking off, then takes a screenshot that must show something (not a blank page).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.train]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``trainpod ARGS`` with the module's own run registry (``cwd/state``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRAINPOD_STATE_DIR": str(cwd / "state")}
    return subprocess.run([sys.executable, "-m", "trainpod", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, stdin=subprocess.DEVNULL, env=env)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    return width, height


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, str, str]:
    """One real `trainpod launch smoke --remote local` (shortened to 12 steps, evaluated every 4)."""
    root = tmp_path_factory.mktemp("report")
    res = _cli("launch", "smoke", "--remote", "local", "--output-dir", str(root / "runs"),
               "--set", "max_steps=12", "--set", "eval_steps=4", "--set", "save_steps=4", "--set", "logging_steps=2",
               cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr  # no --yes and no terminal: local never asks
    (run_dir,) = (root / "runs").iterdir()
    return root, run_dir.name, res.stderr


def test_the_closing_summary_names_the_next_commands(smoke_run):
    _, run_id, stderr = smoke_run
    assert f"run {run_id}: succeeded" in stderr
    assert "steps       12" in stderr and "val loss    final " in stderr
    assert f"trainpod evaluate {run_id}" in stderr and f"trainpod runs report {run_id}" in stderr
    assert "--resume" not in stderr.split("next:")[-1]  # nothing to resume after a success


def test_report_plots_what_metrics_jsonl_holds_and_renders_offline_in_chromium(smoke_run, tmp_path):
    root, run_id, _ = smoke_run
    out = tmp_path / "report.html"
    res = _cli("runs", "report", run_id[:12], "-o", str(out), cwd=root)  # a unique prefix works
    assert res.returncode == 0, res.stderr
    assert f"report: {out}" in res.stdout
    page = out.read_text(encoding="utf-8")

    # self-contained: nothing to fetch
    assert not re.search(r"(src|href)=\"(?!data:)", page), "a resource outside the file"
    assert "http://" not in page and "https://" not in page

    # the data island equals metrics.jsonl (one record per step)
    island = re.search(r'<script type="application/json" id="trainpod-data">(.*?)</script>', page, re.S)
    assert island is not None
    data = json.loads(island.group(1).replace("<\\/", "</"))["series"]
    records = [json.loads(line) for line in (root / "runs" / run_id / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))
    assert data["loss"] == [[r["step"], r["loss"]] for r in records]
    assert data["lr"] == [[r["step"], r["lr"]] for r in records]
    assert data["mem_mb"] == [[r["step"], r["mem_mb"]] for r in records if r["mem_mb"] is not None]
    assert data["val_loss"] == [[r["step"], r["val_loss"]] for r in records if "val_loss" in r]
    assert [s for s, _ in data["val_loss"]] == [4, 8, 12]
    expected_tps = [[b["step"], round(b["tokens"] / (b["elapsed_s"] - a["elapsed_s"]), 3)]
                    for a, b in zip(records, records[1:], strict=False)]
    assert data["tokens_per_s"] == expected_tps
    assert data["cost_usd"] == []  # a local run costs nothing: no cost plot

    # four plots (loss, learning rate, throughput, memory), each a real PNG
    pngs = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]
    assert len(pngs) == 4
    for png in pngs:
        w, h = _png_size(png)
        assert w >= 300 and h >= 150
    meta = json.loads((root / "runs" / run_id / "metadata.json").read_text())
    assert f"{meta['best_val_loss']:.6g}" in page and "step-00000008" in page  # overview and checkpoint list

    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed here (CI installs it: apt-get install chromium)")
    shot = tmp_path / "shot.png"
    browser = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
         "--hide-scrollbars", out.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert shot.is_file() and shot.stat().st_size > 20_000, browser.stdout + browser.stderr
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1200, 1600)
        pixels = img.convert("RGB").resize((300, 400))
        colours = pixels.getcolors(maxcolors=300 * 400) or []
        not_white = sum(n for n, c in colours if sum(c) < 720)
    assert len(colours) > 50, "the screenshot is (nearly) one colour: nothing rendered"
    assert not_white > 0.03 * 300 * 400, "the screenshot is (nearly) blank"
    if os.environ.get("REPORT_SCREENSHOT"):  # keep a copy for people to look at
        shutil.copy(shot, os.environ["REPORT_SCREENSHOT"])


def test_report_of_an_unknown_run_is_a_clear_error(smoke_run):
    root, _, _ = smoke_run
    res = _cli("runs", "report", "no-such-run", cwd=root)
    assert res.returncode == 2 and "no run 'no-such-run'" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.s3
def test_report_of_a_remote_run_reads_its_s3_output_and_plots_the_cost(s3, tmp_path):
    """A RunPod run that was never downloaded: the report reads metrics and checkpoints from S3 and adds the
    cost over time (the pod's price x elapsed time)."""
    from trainpod import storage
    from trainpod.backends.base import RunHandle
    from trainpod.runs import RunRegistry

    run_id = "oracle-rauru-cloud-20260101-000000-abc123"
    out = s3.uri(f"runs/{run_id}")
    records = [{"step": i, "loss": 3.0 - 0.1 * i, "lr": 1e-4, "tokens": 4096, "elapsed_s": 60.0 * i,
                "mem_mb": 20000.0 + i, **({"val_loss": 2.9 - 0.05 * i} if i % 2 == 0 else {})} for i in range(1, 7)]
    storage.write_bytes(f"{out}/logs/metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    storage.write_bytes(f"{out}/status.json", json.dumps({"state": "stopped", "step": 6}).encode())
    storage.write_bytes(f"{out}/checkpoints/step-00000004/manifest.json", b"{}")
    state = tmp_path / "state"
    RunRegistry(state).save(RunHandle(run_id=run_id, backend="runpod", preset="oracle-rauru-cloud", provider_id="p1",
                                      output=out, created="2026-01-01T00:00:00+00:00",
                                      extra={"cost_per_hr": 0.69, "estimated_cost_usd": 2.76,
                                             "gpu_type_id": "NVIDIA GeForce RTX 4090"}))
    report = tmp_path / "r.html"
    res = subprocess.run([sys.executable, "-m", "trainpod", "runs", "report", run_id, "-o", str(report)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "TRAINPOD_STATE_DIR": str(state)})
    assert res.returncode == 0, res.stderr
    page = report.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="trainpod-data">(.*?)</script>', page, re.S).group(1))["series"]
    assert data["cost_usd"] == [[r["step"], round(0.69 * r["elapsed_s"] / 3600, 6)] for r in records]
    assert data["tokens_per_s"] == [[r["step"], round(4096 / 60.0, 3)] for r in records[1:]]
    assert data["val_loss"] == [[r["step"], r["val_loss"]] for r in records if "val_loss" in r]
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 5  # loss, lr, tokens/s, memory, cost
    assert "step-00000004" in page and "NVIDIA GeForce RTX 4090" in page and out in page
