"""SIGKILL at a random step, then resume; SIGTERM with the default stop grace (local and s3:// output).

Each trial is a real ``python -m trainpod_trainer`` subprocess on the tiny model (12 steps, a
checkpoint every 3): kill -9 when the metrics log reaches a seeded random step, run the same spec
again, and check that the resumed run finishes all steps, recomputed at most one checkpoint
interval, and left an adapter that peft loads onto the base model. Trials run two at a time (the
2-core CI box spends most of a trial importing torch, one core each). One trial goes through the
docker backend when the engine is up: ``docker kill`` is the container-level kill -9.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.train import read_metrics, run_trainer, start_trainer, wait_for, write_spec
from trainpod.manifest import latest_complete, verify_dir

pytestmark = [pytest.mark.chaos, pytest.mark.train]

SEED = 20261121
MAX_STEPS, SAVE_STEPS = 12, 3
HP = {"max_steps": MAX_STEPS, "save_steps": SAVE_STEPS, "eval_steps": 6, "logging_steps": 1, "keep_checkpoints": 2}
LOCAL_KILL_TRIALS = 9  # + 1 through the docker backend = 10
SIGTERM_TRIALS = 3
STOPPED = 3  # trainpod_trainer.exitcodes.STOPPED


def _step(ckpt: Path | None) -> int:
    return int(ckpt.name.split("-")[1]) if ckpt is not None else 0


def _logged(out: Path) -> int:
    path = out / "logs" / "metrics.jsonl"
    return max(read_metrics(out), default=0) if path.is_file() else 0


def assert_adapter_loads(out: Path) -> None:
    """The final adapter loads with peft onto the shipped base model and changes its output."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainpod_trainer.model import resolve_base_model

    base = AutoModelForCausalLM.from_pretrained(resolve_base_model("builtin:tiny-qwen2"))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = base(ids).logits
        model = PeftModel.from_pretrained(base, str(out))
        after = model(ids).logits
    assert not torch.allclose(before, after), f"{out}: adapter loaded but is a no-op"


@dataclass
class KillTrial:
    seed: int
    kill_at: int
    killed_after: int
    resumed_from: int
    final_step: int
    recomputed: int
    ok: bool
    detail: str


def _kill_trial(tmp: Path, trial: int) -> KillTrial:
    rng = random.Random(SEED + trial)
    kill_at = rng.randint(1, MAX_STEPS - 1)
    out = tmp / f"kill-{trial}" / "out"
    out.parent.mkdir(parents=True)
    spec = write_spec(out, f"chaos-kill-{trial}", **HP)
    proc = start_trainer(spec, OMP_NUM_THREADS="1")
    try:
        wait_for(lambda: _logged(out) >= kill_at, timeout=120, proc=proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    killed_after = _logged(out)
    resumed_from = _step(latest_complete(out / "checkpoints"))
    res = run_trainer(spec, timeout=180, OMP_NUM_THREADS="1")
    status = json.loads((out / "status.json").read_text()) if (out / "status.json").is_file() else {}
    final = int(status.get("step", -1))
    recomputed = killed_after - resumed_from
    problems = []
    if res.returncode != 0:
        problems.append(f"resume exit {res.returncode}: {res.stderr[-800:]}")
    if resumed_from and f"step-{resumed_from:08d}" not in res.stderr:
        problems.append(f"resume did not start from step-{resumed_from:08d}")
    if final != MAX_STEPS or not (out / "DONE").is_file():
        problems.append(f"final step {final}, DONE={((out / 'DONE').is_file())}")
    if recomputed > SAVE_STEPS:
        problems.append(f"recomputed {recomputed} steps > checkpoint interval {SAVE_STEPS}")
    return KillTrial(SEED + trial, kill_at, killed_after, resumed_from, final, recomputed, not problems,
                     "; ".join(problems))


def test_sigkill_at_random_step_then_resume(tmp_path, chaos_record):
    with ThreadPoolExecutor(max_workers=2) as pool:
        trials = list(pool.map(lambda i: _kill_trial(tmp_path, i), range(LOCAL_KILL_TRIALS)))
    loaded = 0
    for i, t in enumerate(trials):
        if t.ok:
            assert_adapter_loads(tmp_path / f"kill-{i}" / "out")
            loaded += 1
    passed = sum(t.ok for t in trials)
    chaos_record("SIGKILL at random step -> resume (local)", len(trials), passed,
                 f"max recomputed {max(t.recomputed for t in trials)}/{SAVE_STEPS} steps; "
                 f"kill steps {sorted(t.killed_after for t in trials)}; adapters loaded {loaded}")
    assert passed == len(trials), [t for t in trials if not t.ok]


@pytest.mark.docker
def test_sigkill_container_at_random_step_then_resume(docker_env, cpu_image, image_tree, make_spec, tmp_path,
                                                      chaos_record):
    from trainpod.backends.docker import DockerBackend
    from trainpod.settings import load_settings

    kill_at = random.Random(SEED + 100).randint(SAVE_STEPS + 1, MAX_STEPS - 2)  # after the first checkpoint
    out = tmp_path / "out"
    run_id = f"chaos-docker-kill-{os.getpid()}-{int(time.time())}"
    spec = make_spec("smoke", run_id=run_id, dataset=str(image_tree / "profiles" / "data" / "sample"),
                     output=str(out), image=cpu_image.tag, overrides=HP)
    settings = load_settings()
    backend = DockerBackend()
    plan = backend.plan(spec, settings)
    client = docker_env.client()
    handle = backend.submit(plan, settings)
    try:
        wait_for(lambda: _logged(out) >= kill_at, timeout=240)
        client.containers.get(handle.provider_id).kill(signal="SIGKILL")
        killed_after = _logged(out)
        resumed_from = _step(latest_complete(out / "checkpoints"))
        client.containers.get(handle.provider_id).remove(force=True)
        handle = backend.submit(plan, settings)  # same spec, same output dir: the trainer resumes
        deadline = time.monotonic() + 240
        while backend.status(handle).state in ("pending", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
        st = backend.status(handle)
        logs = "\n".join(backend.logs(handle))
    finally:
        for c in client.containers.list(all=True, filters={"name": run_id}):
            c.remove(force=True)
    ok = (st.state == "succeeded" and st.step == MAX_STEPS and killed_after - resumed_from <= SAVE_STEPS
          and (resumed_from == 0 or f"step-{resumed_from:08d}" in logs))
    chaos_record("SIGKILL container at random step -> resume (docker)", 1, int(ok),
                 f"killed after step {killed_after}, resumed from {resumed_from}, final {st.step}")
    assert ok, (st, killed_after, resumed_from, logs[-2000:])
    assert_adapter_loads(out)


def _term_trial(tmp: Path, trial: int, grace: float) -> tuple[bool, str]:
    rng = random.Random(SEED + 1000 + trial)
    term_at = rng.randint(1, MAX_STEPS - 2)
    out = tmp / f"term-{trial}" / "out"
    out.parent.mkdir(parents=True)
    spec = write_spec(out, f"chaos-term-{trial}", **{**HP, "save_steps": 1000, "eval_steps": 1000})
    proc = start_trainer(spec, OMP_NUM_THREADS="1")
    wait_for(lambda: _logged(out) >= term_at, timeout=120, proc=proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=grace)
    except Exception:  # noqa: BLE001 - past the grace: what a backend does next is kill -9
        proc.kill()
        proc.communicate(timeout=30)
        return False, f"trial {trial}: still running {grace:g}s after SIGTERM"
    took = time.monotonic() - sent
    latest = latest_complete(out / "checkpoints")
    if proc.returncode != STOPPED or latest is None or verify_dir(latest):
        return False, f"trial {trial}: exit {proc.returncode}, checkpoint {latest}"
    if _step(latest) < term_at:
        return False, f"trial {trial}: checkpoint {latest.name} older than the step SIGTERM arrived at"
    return True, f"{took:.2f}s"


def test_sigterm_checkpoints_within_default_grace(tmp_path, chaos_record):
    from trainpod.spec import RunSpec

    grace = RunSpec.model_fields["stop_grace_seconds"].default
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda i: _term_trial(tmp_path, i, grace), range(SIGTERM_TRIALS)))
    passed = [detail for ok, detail in results if ok]
    chaos_record("SIGTERM -> complete checkpoint within grace (local output)", len(results),
                 len(passed), f"grace {grace:g}s; SIGTERM-to-exit {', '.join(passed) or '-'}")
    assert len(passed) == len(results), results


S3_SIGTERM_TRIALS = 2


@pytest.mark.s3
def test_sigterm_checkpoint_reaches_s3_within_default_grace(s3, tmp_path, chaos_record):
    """The S3 variant: the trainer's output is s3:// (the sink uploads checkpoints, manifest last); after
    SIGTERM the stop checkpoint must be complete *in S3* before the process exits."""
    from tests.integration.test_train_s3 import pod_env, s3_spec
    from trainpod import storage
    from trainpod.spec import RunSpec

    grace = RunSpec.model_fields["stop_grace_seconds"].default
    made_it, details = 0, []
    for trial in range(S3_SIGTERM_TRIALS):
        term_at = random.Random(SEED + 2000 + trial).randint(1, MAX_STEPS - 2)
        run_id = f"chaos-s3-term-{trial}"
        spec = s3_spec(tmp_path / f"s{trial}", s3, run_id, **{**HP, "save_steps": 1000, "eval_steps": 1000})
        work = tmp_path / f"pod{trial}"
        proc = start_trainer(spec, **pod_env(s3, work), OMP_NUM_THREADS="1")
        wait_for(lambda w=work, n=term_at: _logged(w / "output") >= n, timeout=120, proc=proc)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            log, _ = proc.communicate(timeout=grace)
        except Exception:  # noqa: BLE001 - past the grace: a backend would kill -9 now
            proc.kill()
            log, _ = proc.communicate(timeout=30)
        took = time.monotonic() - sent
        latest = storage.latest_complete_checkpoint(s3.uri(f"runs/{run_id}/checkpoints"))
        step = int(latest.rsplit("-", 1)[1]) if latest else 0
        ok = proc.returncode == STOPPED and latest is not None and step >= term_at
        if ok:
            storage.download_checkpoint(latest, tmp_path / f"dl{trial}")  # every sha256 verified
            made_it += 1
        details.append(f"{took:.2f}s" if ok else f"exit {proc.returncode}, latest {latest}: {log[-500:]}")
    chaos_record("SIGTERM -> complete checkpoint in S3 within grace", S3_SIGTERM_TRIALS, made_it,
                 f"grace {grace:g}s; SIGTERM-to-exit {', '.join(details)}")
    assert made_it == S3_SIGTERM_TRIALS, details
