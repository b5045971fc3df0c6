"""Ending a pod from inside it: REST v2, then GraphQL; stopped (no GPU billing) with a POD_STUCK marker if both
fail."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from trainpod.backends.runpod_api import RunPodAPI, RunPodAPIError
from trainpod.errors import TrainpodError
from trainpod.pod.watchdog import STUCK_MARKER, log
from trainpod.spec import utcnow_iso


def end_pod(pod_id: str, apis: Sequence[RunPodAPI], write_marker: Callable[[bytes], None] | None = None) -> bool:
    """Terminate the pod through the first client that can (REST v2, then GraphQL); True when done. If none can,
    stop it (no GPU billing; its disk stays) and write the POD_STUCK marker for ``runs sweep``."""
    errors = []
    for api in apis:
        name = getattr(api, "api", "graphql")
        try:
            api.terminate(pod_id)
            after = api.pod(pod_id)
        except RunPodAPIError as exc:
            errors.append(f"{name}: {exc.message}")
            log.warning("terminating pod %s through %s failed: %s", pod_id, name, exc.message)
            continue
        if after is None or after.desired_status == "TERMINATED":
            return True
        errors.append(f"{name}: the pod is still {after.desired_status} after terminate")
    stopped = False
    for api in apis:
        try:
            api.stop(pod_id)
            stopped = True
            log.warning("pod %s stopped (no GPU billing) through %s instead", pod_id, getattr(api, "api", "graphql"))
            break
        except RunPodAPIError as exc:
            errors.append(f"stop via {getattr(api, 'api', 'graphql')}: {exc.message}")
    if write_marker is not None:
        body = {"pod_id": pod_id, "stopped": stopped, "errors": "; ".join(errors), "time": utcnow_iso()}
        try:
            write_marker(json.dumps(body).encode())
        except TrainpodError as exc:
            log.error("cannot write the %s marker: %s", STUCK_MARKER, exc.message)
    return False
