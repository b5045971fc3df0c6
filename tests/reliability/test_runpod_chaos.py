"""RunPod API chaos against the loopback fake: zero orphan pods, every run in a definite state.

Each trial launches one run through :class:`RunPodBackend` with a seeded fault on the wire (5xx,
dropped connection, a lost response after the pod was created, capacity errors, slow answers),
then ends it the seeded way: the run finishes (DONE in S3, then ``runs sweep --yes`` reaps the
pod, as the pod's own supervisor would), it is cancelled, its pod dies, the pod never starts, or
the launching process is killed -9 mid-submit (then the user's ``runs cancel`` / ``runs sweep``).
After every trial: no pod of that run is left billing, and ``status`` is one of the final states.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from trainpod import storage
from trainpod.backends.runpod import RunPodBackend, sweep
from trainpod.config.loader import load_catalog
from trainpod.errors import TrainpodError
from trainpod.runs import RunRegistry
from trainpod.settings import load_settings
from trainpod.spec import RunSpec, StorageURIs

pytestmark = [pytest.mark.chaos, pytest.mark.runpod, pytest.mark.s3]

SEED = 4242
TRIALS = 12
DEFINITE = {"succeeded", "failed", "cancelled", "preempted"}
FAULTS = [  # REST v2 operationIds (RunPod's OpenAPI document)
    ("http", "createPod", {"status": 502}),
    ("http", "getPod", {"status": 503}),
    ("drop", "createPod", {}),
    ("lose_response", "createPod", {}),  # the pod exists, the answer never came
    ("capacity", "createPod", {}),
    ("delay", "listGpuTypes", {"seconds": 0.3}),
    ("drop", "deletePod", {}),
    ("problem", "getPod", {"status": 500, "message": "Something went wrong. Please try again later"}),
    ("rate_limit", "listPods", {"seconds": 1}),
]
ENDINGS = ["finish", "cancel", "pod-dies", "never-starts", "cli-killed"]

_SUBMIT = """
import sys
from trainpod.backends.base import LaunchPlan
from trainpod.backends.runpod import RunPodBackend
from trainpod.settings import load_settings
b = RunPodBackend()
b.poll_s, b.start_timeout_s = 0.05, 30.0
plan = LaunchPlan.model_validate_json(open(sys.argv[1]).read())
b.submit(plan, load_settings(storage_uri=sys.argv[2]))
"""


def _plan(backend, s3, run_id):
    cfg = load_catalog(use_cwd=False).resolve("oracle-rauru-cloud")
    spec = RunSpec(run_id=run_id, created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   image="registry.local/trainpod:cuda-0123456789ab",
                   storage=StorageURIs(dataset=cfg.dataset.path, output=s3.uri(f"runs/{run_id}")))
    settings = load_settings(storage_uri=s3.uri())
    return backend.plan(spec, settings), settings


def _live(fake, run_id: str) -> list[str]:
    return [p.id for p in fake.live_pods() if run_id in p.name]


def _trial(i: int, rng: random.Random, fake, s3, tmp_path) -> tuple[str, str, str, list[str]]:
    fake.faults.clear()
    fake.never_start = False
    backend = RunPodBackend()
    backend.poll_s, backend.start_timeout_s = 0.05, 3.0
    run_id = f"chaos-rp-{i:02d}-20260101-000000-{rng.randrange(16**6):06x}"
    plan, settings = _plan(backend, s3, run_id)
    kind, op, kw = FAULTS[i % len(FAULTS)] if i < len(FAULTS) else rng.choice(FAULTS)
    fake.inject(kind, op=op, **kw)
    ending = ENDINGS[i % len(ENDINGS)]
    registry = RunRegistry(settings.state_path)
    if ending == "cli-killed":
        plan_file = tmp_path / f"{run_id}.plan.json"
        plan_file.write_text(plan.model_dump_json())
        fake.inject("delay", op="getPod", seconds=0.2, times=50)  # a slow start: the kill lands while waiting
        proc = subprocess.Popen([sys.executable, "-c", _SUBMIT, str(plan_file), s3.uri()], env=os.environ.copy(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not fake.pods and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.wait(10)
        fake.faults.clear()
        if run_id in registry.ids():  # `trainpod runs cancel RUN_ID`
            backend.cancel(registry.get(run_id))
        else:  # killed before the run was recorded: `trainpod runs sweep --yes --include-unknown`
            sweep(settings, terminate=True, include_unknown=True)
    else:
        if ending == "never-starts":
            fake.never_start = True
            backend.start_timeout_s = 0.3
        try:
            handle = backend.submit(plan, settings)
        except TrainpodError:
            handle = registry.get(run_id) if run_id in registry.ids() else None
        fake.never_start = False
        if handle is not None and handle.provider_id and ending in ("finish", "pod-dies", "cancel"):
            if ending == "finish":
                storage.write_bytes(handle.output + "/DONE", b"{}")
            elif ending == "pod-dies":
                fake.restart_on_exit = False
                fake.preempt(handle.provider_id)
                fake.restart_on_exit = True
            else:
                backend.cancel(handle)
        sweep(settings, terminate=True)  # what the pod's supervisor / a periodic `runs sweep --yes` does
        fake.faults.clear()
        sweep(settings, terminate=True)  # a sweep that met an injected fault is simply run again
    state = backend.status(registry.get(run_id)).state if run_id in registry.ids() else "never-recorded"
    return f"{kind}@{op}", ending, state, _live(fake, run_id)


def test_runpod_api_chaos_leaves_no_orphan_pods(s3, fake_runpod, tmp_path, chaos_record):
    rng = random.Random(SEED)
    results = [_trial(i, rng, fake_runpod, s3, tmp_path) for i in range(TRIALS)]
    orphans = sum(len(r[3]) for r in results)
    undefined = [r for r in results if r[2] not in DEFINITE | {"never-recorded"}]
    states = sorted({r[2] for r in results})
    passed = sum(1 for r in results if not r[3] and r[2] in DEFINITE | {"never-recorded"})
    chaos_record("RunPod API chaos (5xx/drop/lost reply/capacity/slow; pod dies; CLI killed)", TRIALS, passed,
                 f"{orphans} orphan pods; end states {states}; {len(fake_runpod.pods)} pods rented")
    assert orphans == 0, [r for r in results if r[3]]
    assert not undefined, undefined
    assert fake_runpod.live_pods() == []
