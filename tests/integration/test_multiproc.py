"""Several training processes on CPU, for real: torchrun + gloo, DeepSpeed ZeRO-2, two "nodes".

Every run is started exactly the way backends start it — the argv/env of
:func:`trainpod.launchcmd.trainer_command` — as subprocesses on this machine. The reference is the
session's one-rank ``smoke_baseline`` (batch 8, 30 steps): the trainer shards rows so that R ranks x
batch b see, per optimizer step, the rows one rank x batch R*b sees, and normalises the loss by the
targets of all ranks, so the per-step losses of every multi-process shape below must equal it (up
to float summation order).

Runtime: six trainer launches (~15-30 s each on 2 cores, most of it interpreter + torch start-up).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.train import SMOKE_STEPS, read_metrics, trainer_env, wait_for
from trainpod.config import load_catalog
from trainpod.launchcmd import trainer_command
from trainpod.launcher import launch_shape
from trainpod.manifest import list_checkpoints, verify_dir
from trainpod.spec import RunSpec, StorageURIs, utcnow_iso

pytestmark = [pytest.mark.multiproc, pytest.mark.train]

STOPPED = 3  # trainpod_trainer.exitcodes
LOSS_TOL = 2e-3  # gloo all-reduce / sharded sums reorder float additions; a data-order bug is ~0.1+
TIMEOUT = 240


def make_spec(out: Path, preset: str, run_id: str, port: int | None = None, **overrides: Any) -> tuple[RunSpec, Path]:
    cfg = load_catalog(use_cwd=False).resolve(preset, overrides)
    shape = launch_shape(cfg)
    if port is not None:
        shape = shape.model_copy(update={"master_port": port})
    spec = RunSpec(run_id=run_id, created=utcnow_iso(), remote="local", config=cfg, launch=shape,
                   storage=StorageURIs(dataset=cfg.dataset.path, output=str(out)))
    return spec, spec.write(out.parent / f"{out.name}.spec.json")


def command(spec: RunSpec, path: Path, node_rank: int = 0, wrapped: bool = True) -> tuple[list[str], dict[str, str]]:
    """The backends' launch line, run with this interpreter. ``wrapped``: torchrun under
    ``trainpod_trainer.launch``, which hands the trainer's exit code back (torchrun alone says 1)."""
    argv, env = trainer_command(spec, spec_path=str(path), node_rank=node_rank, python=sys.executable, cpu_count=2)
    launcher = "trainpod_trainer.launch" if wrapped else "torch.distributed.run"
    argv[argv.index("-m") + 1] = launcher  # whichever of the two launch lines trainer_command emits
    return argv, trainer_env(**env)


def run(spec: RunSpec, path: Path) -> subprocess.CompletedProcess[str]:
    argv, env = command(spec, path)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def assert_matches(losses: dict[int, float], baseline: dict[int, float], steps: range) -> None:
    diffs = {s: abs(losses[s] - baseline[s]) for s in steps}
    worst = max(diffs, key=diffs.__getitem__)
    assert diffs[worst] < LOSS_TOL, f"step {worst}: {losses[worst]} vs one-rank {baseline[worst]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_match_one_rank_and_sigterm_checkpoints_once(smoke_baseline, tmp_path):
    """2 ranks x batch 4 == 1 rank x batch 8; SIGTERM to the launcher: one checkpoint, exit 3;
    the resumed run continues the same curve; only rank 0 wrote anything."""
    baseline = read_metrics(smoke_baseline)
    out = tmp_path / "out"
    spec, path = make_spec(out, "smoke-ddp", "ddp-run", hyperparameters={"save_steps": 1000})
    assert spec.launch.nproc_per_node == 2 and spec.config.batch_size * 2 == 8
    argv, env = command(spec, path)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = out / "logs" / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2, TIMEOUT, proc)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == STOPPED, log

    status = json.loads((out / "status.json").read_text())
    stopped_at = status["step"]
    assert status["state"] == "stopped" and status["exit_code"] == STOPPED
    assert stopped_at < SMOKE_STEPS, "the run finished before SIGTERM arrived: the test proves nothing"
    (only,) = list_checkpoints(out / "checkpoints")  # exactly one, not one per rank
    assert only[0] == stopped_at and verify_dir(only[1]) == []
    assert log.count("SIGTERM received") == 2  # both ranks got it (rank 1 logs warnings)...
    assert log.count("checkpoint step-") == 1  # ...and one checkpoint was written

    res = run(spec, path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resumed from {only[1]}" in res.stderr
    assert res.stderr.count(f"step {SMOKE_STEPS}/{SMOKE_STEPS} loss") == 1  # rank 1 does not log progress
    assert_matches(read_metrics(out), baseline, range(1, SMOKE_STEPS + 1))

    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, SMOKE_STEPS + 1))  # one writer, no duplicates
    assert len({r["pid"] for r in lines}) == 2  # one process per launch (rank 0 of each)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["training"]["world_size"] == 2 and meta["training"]["effective_batch_size"] == 8
    assert (out / "DONE").is_file() and (out / "adapter_model.safetensors").is_file()
    assert len(list_checkpoints(out / "checkpoints")) == 1


def test_deepspeed_zero2_trains_checkpoints_and_resumes(smoke_baseline, tmp_path):
    """ZeRO-2 on CPU (DS_ACCELERATOR=cpu, gloo), 2 ranks x batch 2 x accumulation 2: the same curve;
    checkpoints hold every rank's shard with the manifest written last; a resumed run repeats the
    uninterrupted one's steps exactly."""
    baseline = read_metrics(smoke_baseline)
    out = tmp_path / "out"
    spec, path = make_spec(out, "smoke-zero2", "zero2-run")
    argv, env = command(spec, path)
    assert env["DS_ACCELERATOR"] == "cpu" and env["TRAINPOD_DEEPSPEED_CONFIG"] == "zero2"
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "deepspeed: ZeRO stage 2 (zero2), micro batch 2, accumulation 2, train batch 8" in res.stderr
    losses = read_metrics(out)
    assert_matches(losses, baseline, range(1, SMOKE_STEPS + 1))

    ckpts = dict(list_checkpoints(out / "checkpoints"))
    assert sorted(ckpts) == [10, 20]
    first = ckpts[10]
    assert verify_dir(first) == []
    listed = {f["path"] for f in json.loads((first / "manifest.json").read_text())["files"]}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt",
            "mp_rank_00_model_states.pt", "trainer_state.json", "rng.pt"} <= listed
    newest_file = max(first.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert newest_file.name == "manifest.json"

    # a run preempted right after step 10: only that checkpoint in its output
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(first), str(resumed / "checkpoints")], check=True)
    spec2, path2 = make_spec(resumed, "smoke-zero2", "zero2-resumed")
    res = run(spec2, path2)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resumed from" in res.stderr and "(step 10," in res.stderr
    again = read_metrics(resumed)
    assert sorted(again) == list(range(11, SMOKE_STEPS + 1))
    assert_matches(again, losses, range(11, SMOKE_STEPS + 1))


def test_two_nodes_rendezvous_over_c10d_on_loopback(smoke_baseline, tmp_path):
    """Two torchrun processes (node_rank 0 and 1, one rank each) meet through c10d on 127.0.0.1."""
    out = tmp_path / "out"
    spec, path = make_spec(out, "smoke-ddp", "two-nodes", port=free_port(),
                           hardware={"nnodes": 2, "nproc_per_node": 1})
    procs = []
    for node_rank in (0, 1):
        argv, env = command(spec, path, node_rank=node_rank, wrapped=False)
        assert f"--node-rank={node_rank}" in argv and f"--rdzv-endpoint=127.0.0.1:{spec.launch.master_port}" in argv
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n----\n".join(logs)
    assert (out / "DONE").is_file()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["training"]["world_size"] == 2
    assert_matches(read_metrics(out), read_metrics(smoke_baseline), range(1, SMOKE_STEPS + 1))
