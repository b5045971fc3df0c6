"""The pod-side supervisor: ``python -m trainpod.pod.supervisor [--spec FILE] -- CMD...``.

It is PID 1 of a RunPod pod (the pod's command), so that the pod ends and stops billing whatever
happens on the laptop (PEERS.md complaints 1, 2 and 10):

1. **DONE marker.** RunPod restarts a container whose command exits. If the run's DONE marker is
   already in its output location, nothing is trained again; the pod terminates itself.
2. **Restart guard.** Before terminating, the supervisor records ``POD_EXIT`` (pod id, exit code,
   reason) next to DONE. A restarted container of the *same* pod finds it and terminates instead of
   training again (a failed run would otherwise loop and bill forever); a new pod (spot relaunch,
   ``--resume``) has another id and trains, resuming from the latest complete checkpoint.
3. **Watchdog.** ``max_runtime_minutes`` and ``max_cost_usd`` from the RunSpec's workload (a preset's config,
   or a custom job's command) (cost over the pod's
   ``costPerHr`` from the API, else the profile price) give a deadline; at the deadline the child
   gets SIGTERM (the trainer checkpoints and exits), then SIGKILL after ``stop_grace_seconds``.
4. **Signals.** SIGTERM/SIGINT to the supervisor are forwarded to the child.
5. **Self-terminate.** When the child exits (any code), the pod is terminated with ``RUNPOD_POD_ID`` and
   the pod-scoped ``RUNPOD_API_KEY`` RunPod injects: through REST v2 (``DELETE /v2/pods/{id}``); if that is
   refused (that a pod-scoped key may do so is unverified for v2), through the legacy GraphQL
   ``podTerminate``; if both fail, the pod is stopped (no GPU billing) and a ``POD_STUCK`` marker left in the
   output, which ``trainpod runs sweep`` acts on. Without them (a local or docker run) the supervisor just
   exits with the child's code.
6. **Cluster nodes** (RunPod Instant Clusters: ``NUM_NODES`` > 1 and ``NODE_RANK`` set). The command's
   ``$NODE_RANK``/``$PRIMARY_ADDR``/``$PRIMARY_PORT`` are filled in from the node's env; the watchdog's cost
   limit is for the whole cluster (``NUM_NODES`` x this pod's price); each node records its own exit marker
   (``POD_EXIT`` on node 0, ``POD_EXIT.node-N`` elsewhere, with the cluster id); and instead of its pod
   (member pods cannot be deleted alone) the node deletes the *cluster* through REST v2: node 0 when its
   trainer exits, another node at once when its trainer crashed, else after waiting for node 0 (bounded).

Only the standard library, our API clients (with their stdlib transports: the image has neither the runpod
SDK nor httpx) and :mod:`trainpod.storage` (exists/read/write for local paths and ``s3://``) are used."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from trainpod.backends.runpod_api import GraphQLClient, RunPodAPI, RunPodAPIError, urllib_transport
from trainpod.backends.runpod_v2 import UrllibTransport, V2Client
from trainpod.contract import (
    DONE,
    EXIT_OK,
    EXIT_STOPPED,
    node_exit_marker,
    shell_exit_code,
)
from trainpod.credentials import stop_before_expiry
from trainpod.errors import TrainpodError
from trainpod.pod.cluster import ClusterNode, NodeLog
from trainpod.pod.teardown import end_pod
from trainpod.pod.watchdog import (
    STOP_SIGNALS,
    STUCK_MARKER,
    Deadline,
    Storage,
    TrainpodStorage,
    deadline_for,
    log,
    output_uri,
)
from trainpod.redact import install_log_redaction
from trainpod.spec import RunSpec, utcnow_iso

# the supervisor's parts, where tests and the pod's entrypoint find them
__all__ = ["STUCK_MARKER", "ClusterNode", "Deadline", "Storage", "Supervisor", "TrainpodStorage", "deadline_for",
           "end_pod", "load_spec", "main", "output_uri"]


class Supervisor:
    def __init__(
        self,
        spec: RunSpec,
        command: Sequence[str],
        *,
        api: RunPodAPI | None,
        pod_id: str | None,
        storage: Storage,
        clock: Callable[[], float] = time.monotonic,
        node: ClusterNode | None = None,
        sleep: Callable[[float], None] = time.sleep,
        fallback_api: RunPodAPI | None = None,
    ):
        if not command:
            raise TrainpodError("podside: no command to supervise", "usage: python -m trainpod.pod.supervisor -- CMD...")
        self.spec = spec
        self.command = list(command)
        self.api = api
        self.fallback_api = fallback_api  # the legacy GraphQL client, when the v2 one is refused
        self.pod_id = pod_id
        self.storage = storage
        self.clock = clock
        self.child: subprocess.Popen[bytes] | None = None
        self.stop_reason: str | None = None
        self.node = node
        self.sleep = sleep
        self._cluster_id: str | None = None

    @property
    def exit_marker(self) -> str:
        return output_uri(self.spec) + "/" + node_exit_marker(self.node.rank if self.node else 0)

    @property
    def cluster_id(self) -> str | None:
        """This node's cluster (``Pod.cluster.id`` of its own pod, read with its pod-scoped key)."""
        if self._cluster_id is None and self.node is not None and self.api is not None and self.pod_id:
            try:
                membership = self.api.pod_cluster(self.pod_id)  # type: ignore[attr-defined]
            except RunPodAPIError as exc:
                log.error("cannot read this pod's cluster membership: %s", exc.message)
            else:
                self._cluster_id = membership.id if membership is not None else None
        return self._cluster_id

    @property
    def done_marker(self) -> str:
        return output_uri(self.spec) + "/" + DONE

    # ------------------------------------------------------------------ the story
    def run(self) -> int:
        if self.node is not None:
            log.info("cluster node %d of %d (cluster %s)", self.node.rank, self.node.count, self.cluster_id)
        if self.storage.exists(self.done_marker):
            log.info("run %s is already done (%s): not training again", self.spec.run_id, self.done_marker)
            self.terminate_pod("run already done")
            return 0
        previous = self._previous_exit()
        if previous is not None:
            code = int(previous.get("exit_code", 1))
            log.warning("this pod already ran run %s (exit %s, %s): the container was restarted; not training again",
                        self.spec.run_id, code, previous.get("reason"))
            self.terminate_pod("container restarted after the run ended")
            return code
        deadline = deadline_for(self.spec, self._cost_per_hr())
        expiry = stop_before_expiry(os.environ, self.spec.stop_grace_seconds, time.time())
        if expiry is not None and (deadline.seconds is None or expiry[0] < deadline.seconds):
            deadline = Deadline(*expiry)  # the CLI renews the session with a new pod that resumes
        log.info("starting %s (watchdog: %s)", self.command[0], deadline.reason if deadline.seconds else "off")
        code = self._supervise(deadline)
        reason = self.stop_reason or ("finished" if code == 0 else f"child exited with {code}")
        self._record_exit(code, reason)
        if self.node is not None and self.node.rank != 0 and code in (EXIT_OK, EXIT_STOPPED):
            self._wait_for_primary()
        self.terminate_pod(reason)
        return code

    node_wait_extra_s = 300.0  # beyond the stop grace: how long a finished node waits for node 0

    def _wait_for_primary(self) -> None:
        """A node other than 0 whose trainer finished (or stopped at the agreed step) waits for node 0, which is
        still writing outputs or the checkpoint, to delete the cluster (this container goes with it); exiting
        instead would make RunPod restart it. It deletes the cluster itself if node 0 never does."""
        wait = self.spec.stop_grace_seconds + self.node_wait_extra_s
        log.info("node %d finished: waiting up to %gs for node 0 to end the cluster", self.node.rank if self.node
                 else 0, wait)
        self.sleep(wait)
        log.warning("node 0 did not end the cluster within %gs", wait)

    def _supervise(self, deadline: Deadline) -> int:
        previous = {sig: signal.signal(sig, self._forward) for sig in STOP_SIGNALS}
        tee = None
        try:
            if self.node is not None:  # a cluster node: its output also goes to S3 (logs/node-N.log)
                self.child = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                tee = NodeLog(self, self.child)
            else:
                self.child = subprocess.Popen(self.command)
            if self.stop_reason is not None:  # a signal arrived while the child was being started
                self.child.send_signal(signal.SIGTERM)
            started = self.clock()
            while True:
                timeout = 1.0
                if deadline.seconds is not None:
                    left = deadline.seconds - (self.clock() - started)
                    if left <= 0:
                        self.stop_reason = f"watchdog: {deadline.reason} reached"
                        log.warning("%s: stopping the run (SIGTERM, checkpoint, exit)", self.stop_reason)
                        return self._stop_child()
                    timeout = min(timeout, left)
                try:
                    return _exit_code(self.child.wait(timeout=timeout))
                except subprocess.TimeoutExpired:
                    continue
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if tee is not None:
                tee.close()

    def _forward(self, signum: int, _frame: Any) -> None:
        if self.stop_reason is None:
            self.stop_reason = f"received {signal.Signals(signum).name}"
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def _stop_child(self) -> int:
        assert self.child is not None
        self.child.send_signal(signal.SIGTERM)
        try:
            return _exit_code(self.child.wait(timeout=self.spec.stop_grace_seconds))
        except subprocess.TimeoutExpired:
            log.error("the child did not stop within %gs: killing it", self.spec.stop_grace_seconds)
            self.child.kill()
            return _exit_code(self.child.wait())

    # ------------------------------------------------------------------ markers, price, teardown
    def _previous_exit(self) -> dict[str, Any] | None:
        if not self.pod_id:
            return None
        try:
            raw = self.storage.read_bytes(self.exit_marker)
        except TrainpodError as exc:
            log.warning("cannot read %s (%s): assuming a first start", self.exit_marker, exc.message)
            return None
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) and data.get("pod_id") == self.pod_id else None

    def _record_exit(self, code: int, reason: str) -> None:
        body = {"pod_id": self.pod_id, "run_id": self.spec.run_id, "exit_code": code, "reason": reason,
                "finished": utcnow_iso()}
        if self.node is not None:
            body.update(cluster_id=self.cluster_id, node_rank=self.node.rank, nodes=self.node.count)
        try:
            self.storage.write_bytes(self.exit_marker, json.dumps(body).encode())
        except TrainpodError as exc:  # teardown must go on: the pod bills until terminated
            log.error("cannot write %s: %s", self.exit_marker, exc.message)

    def _cost_per_hr(self) -> float | None:
        """What this pod costs: the API's costPerHr, else the profile price x GPUs; on a cluster node, times the
        number of nodes (max_cost_usd is for the whole cluster: every node stops at the same point)."""
        per_pod = self._pod_cost_per_hr()
        return per_pod * self.node.count if per_pod is not None and self.node is not None else per_pod

    def _pod_cost_per_hr(self) -> float | None:
        if self.api is not None and self.pod_id:
            try:
                pod = self.api.pod(self.pod_id)
            except RunPodAPIError as exc:
                log.warning("cannot read this pod's price from the API (%s); using the profile price", exc.message)
            else:
                if pod is not None and pod.cost_per_hr:
                    return pod.cost_per_hr
        hw = self.spec.workload.hardware
        return hw.price_per_gpu_hour * max(1, hw.gpu_count) if hw.price_per_gpu_hour else None

    def terminate_pod(self, reason: str) -> None:
        if not self.pod_id or self.api is None:
            log.info("not on RunPod (no RUNPOD_POD_ID / RUNPOD_API_KEY): %s; exiting", reason)
            return
        if self.node is not None:
            self.delete_cluster(reason)
            return
        log.info("terminating pod %s: %s", self.pod_id, reason)
        if end_pod(self.pod_id, [a for a in (self.api, self.fallback_api) if a is not None],
                   lambda body: self.storage.write_bytes(output_uri(self.spec) + "/" + STUCK_MARKER, body)):
            return
        log.error("pod %s could not terminate itself — `trainpod runs sweep --yes` will find it", self.pod_id)


    def delete_cluster(self, reason: str) -> None:
        """``DELETE /v2/clusters/{id}`` with this pod's key: every node goes (the CLI's follow loop and
        ``runs sweep`` are the backstop when the key may not)."""
        cluster = self.cluster_id
        if cluster is None:
            log.error("cannot end the cluster (%s): its id is unknown — `trainpod runs sweep` will find it", reason)
            return
        log.info("deleting cluster %s (node %d): %s", cluster, self.node.rank if self.node else 0, reason)
        try:
            self.api.delete_cluster(cluster)  # type: ignore[union-attr]
        except RunPodAPIError as exc:
            log.error("could not delete cluster %s: %s — `trainpod runs sweep` will find it", cluster, exc.message)


def load_spec(path: str | None) -> RunSpec:
    """The pod's RunSpec (``--spec FILE`` or ``$TRAINPOD_RUN_SPEC``), whatever its workload. Missing or invalid
    specs fail in ``load``."""
    return RunSpec.load(path)


_exit_code = shell_exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    spec_path = None
    if "--" not in args:
        print("usage: python -m trainpod.pod.supervisor [--spec FILE] -- CMD...", file=sys.stderr)
        return 2
    split = args.index("--")
    head, command = args[:split], args[split + 1:]
    if head[:1] == ["--spec"] and len(head) == 2:
        spec_path = head[1]
    elif head:
        print(f"podside: unexpected arguments {head}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [podside] %(levelname)s %(message)s")
    install_log_redaction()
    pod_id = os.environ.get("RUNPOD_POD_ID") or None
    key = os.environ.get("RUNPOD_API_KEY")
    node = ClusterNode.from_env(os.environ)
    api: Any = None
    legacy: Any = None
    if pod_id and key:
        api = V2Client(key, transport=UrllibTransport(), retries=6, backoff_s=2.0)
        if node is None:  # cluster membership and deletion exist only in REST v2
            legacy = GraphQLClient(key, transport=urllib_transport, retries=3, backoff_s=2.0)
    supervisor = None
    try:
        if node is not None:
            from trainpod.launchcmd import expand_cluster_vars

            try:
                command = expand_cluster_vars(command, dict(os.environ))
            except KeyError as missing:
                raise TrainpodError(f"podside: this cluster node has no ${missing.args[0]} in its environment",
                                    "RunPod sets it on Instant Cluster nodes; is this a cluster pod?") from None
        spec = load_spec(spec_path)
        supervisor = Supervisor(spec, command, api=api, pod_id=pod_id, storage=TrainpodStorage(), node=node,
                                fallback_api=legacy)
        return supervisor.run()
    except TrainpodError as exc:
        # A bad spec or unreachable storage fails the same way on every restart: end the pod now
        # rather than let RunPod restart the container in a loop that bills.
        log.error("%s", exc)
        if supervisor is not None and node is not None:
            supervisor.delete_cluster("the supervisor cannot run")
        elif node is not None and api is not None and pod_id:
            membership = None
            try:
                membership = api.pod_cluster(pod_id)
                if membership is not None:
                    log.info("deleting cluster %s: the supervisor cannot run", membership.id)
                    api.delete_cluster(membership.id)
            except RunPodAPIError as del_exc:
                log.error("could not delete this node's cluster: %s", del_exc.message)
        elif api is not None and pod_id:
            log.info("terminating pod %s: the supervisor cannot run", pod_id)
            if not end_pod(pod_id, [a for a in (api, legacy) if a is not None]):
                log.error("could not terminate pod %s", pod_id)
        return 2

if __name__ == "__main__":
    sys.exit(main())
