"""benchmarks/gpu_check.py end to end on CPU (``--quick --device cpu``: tiny shapes), so the one-shot GPU check
cannot rot while no GPU is around: every section runs through the same code a GPU machine runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.train, pytest.mark.multiproc]


def test_gpu_check_quick_on_cpu_runs_every_section(tmp_path) -> None:
    out = tmp_path / "gpu-check.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--quick", "--device", "cpu",
                          "--json", str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["header"]["device"] == "cpu" and result["header"]["quick"] is True
    rows = {(r["check"], r["case"]): r for r in result["rows"]}

    smoke = [r for (check, _), r in rows.items() if check == "smoke"]
    assert len(smoke) == 2 and all(r["ok"] for r in smoke)
    assert smoke[0]["exit"] == 0 and smoke[1]["exit"] == "3 then 0"
    assert smoke[0]["last_loss"] < smoke[0]["first_loss"]
    assert smoke[1]["last_loss"] == pytest.approx(smoke[0]["last_loss"], rel=1e-4)  # resume = uninterrupted

    for finetune in ("lora", "full"):
        for trainer in ("trainpod", "hf"):
            row = rows[("throughput", f"tiny {finetune} {trainer}")]
            assert row["ok"] and row["tokens_per_s"] > 0
        assert rows[("throughput", f"tiny {finetune} hf")]["trainpod_ratio"] > 0
        trl = rows[("throughput", f"tiny {finetune} trl")]
        assert trl["ok"] is True or (trl["ok"] is None and "TRL not importable" in trl["detail"])

    guard = rows[("memory guard", "ram_percent = 0.1 %")]
    assert guard["ok"] and guard["exit"] == 4 and guard["detail"].startswith("stopped with checkpoint step-")
    torchrun = rows[("torchrun", "1 process, gloo")]
    assert torchrun["ok"] and "PROBE ok gloo world 1" in torchrun["detail"]
    # the printed table names every section
    for word in ("smoke", "throughput", "memory guard", "torchrun"):
        assert word in res.stdout
