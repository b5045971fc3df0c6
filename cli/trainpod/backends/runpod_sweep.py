"""``trainpod runs sweep``: trainpod's pods that should not be billing, and registry credentials no pod uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainpod.backends.runpod_plan import (
    POD_NAME_PREFIX,
    _run_id_of,
    _stuck,
    read_markers,
    registry_credential_name,
)
from trainpod.contract import (
    DONE,
    POD_EXIT,
)
from trainpod.settings import Settings


# ---------------------------------------------------------------------------------------- sweep
@dataclass(frozen=True)
class SweepItem:
    pod_id: str
    pod_name: str
    run_id: str | None
    verdict: str  # done | unknown | over-limit | keep
    reason: str
    terminated: bool = False


def sweep(settings: Settings, terminate: bool = False, api: Any = None, *,
          include_unknown: bool = False) -> list[SweepItem]:
    """trainpod's pods that should not be billing: run done, run unknown here, or over its limits.

    Only pods named ``trainpod-…`` are considered; with ``terminate`` the flagged ones are terminated.
    A pod this machine has no record of may be a teammate's live run: its output is looked up under
    ``TRAINPOD_STORAGE_URI/runs/RUN_ID`` (done there = safe to terminate), and otherwise it is only
    terminated with ``include_unknown``.
    """
    from trainpod.backends.runpod_v2 import V2Client
    from trainpod.errors import TrainpodError
    from trainpod.runs import RunRegistry

    api = api or V2Client.from_settings(settings)
    registry = RunRegistry(settings.state_path)
    known = set(registry.ids())
    items = []
    for pod in api.pods(name_prefix=POD_NAME_PREFIX):
        if not pod.name.startswith(POD_NAME_PREFIX) or pod.desired_status == "TERMINATED":
            continue
        run_id = _run_id_of(pod.name)
        if run_id is None or run_id not in known:
            verdict, reason = "unknown", "no run of this name in the local run registry"
            if run_id and settings.storage_uri:
                try:
                    markers = read_markers(f"{settings.storage_uri.rstrip('/')}/runs/{run_id}", settings)
                except TrainpodError:
                    markers = {}
                if _stuck(markers, pod.id):
                    verdict, reason = "done", _stuck(markers, pod.id)
                elif DONE in markers or POD_EXIT in markers:
                    verdict, reason = "done", "the run has ended (DONE/POD_EXIT under TRAINPOD_STORAGE_URI)"
        else:
            handle = registry.get(run_id)
            try:
                markers = read_markers(handle.output, settings)
            except TrainpodError:
                markers = {}  # unreadable output: judge by the limits alone
            hours = (pod.uptime_seconds or 0) / 3600
            max_rt, max_cost = handle.extra.get("max_runtime_minutes"), handle.extra.get("max_cost_usd")
            if _stuck(markers, pod.id):
                verdict, reason = "done", _stuck(markers, pod.id)
            elif DONE in markers or POD_EXIT in markers:
                verdict, reason = "done", "the run has ended (DONE/POD_EXIT in its output)"
            elif max_rt is not None and hours * 60 > float(max_rt):
                verdict, reason = "over-limit", f"up {hours * 60:.0f} min > max_runtime_minutes {max_rt:g}"
            elif max_cost is not None and pod.cost_per_hr and pod.cost_per_hr * hours > float(max_cost):
                verdict, reason = "over-limit", f"cost ${pod.cost_per_hr * hours:.2f} > max_cost_usd {max_cost:g}"
            elif pod.desired_status in ("EXITED", "ERROR"):
                verdict, reason = "done", f"the pod has {'exited' if pod.desired_status == 'EXITED' else 'failed (ERROR)'}"
            else:
                verdict, reason = "keep", "running within its limits"
        done = False
        if terminate and (verdict in ("done", "over-limit") or (verdict == "unknown" and include_unknown)):
            api.terminate(pod.id)
            done = True
        items.append(SweepItem(pod.id, pod.name, run_id, verdict, reason, done))
    return items


def prune_registry_credentials(settings: Settings, delete: bool = False, api: Any = None) -> list[tuple[str, str]]:
    """trainpod's registry credentials at RunPod (``trainpod-…``) that no pod uses and that are not the current
    registry + user's: [(name, what happened)]. With ``delete`` they are deleted (RunPod refuses while a pod
    pulls with one: it is kept)."""
    from trainpod.backends.runpod_v2 import V2Client

    api = api or V2Client.from_settings(settings)
    in_use = {p.registry_id for p in api.pods() if p.registry_id}
    current = registry_credential_name(settings)
    out = []
    for reg in api.registries():
        if not reg.name.startswith(POD_NAME_PREFIX) or reg.name == current or reg.id in in_use:
            continue
        if not delete:
            out.append((reg.name, "unused"))
        else:
            out.append((reg.name, "deleted" if api.delete_registry(reg.id) else "kept: a pod still uses it"))
    return out
