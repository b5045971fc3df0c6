"""The local Docker engine backend.

``plan()`` is pure: it turns a RunSpec into the exact container request (the docker SDK's
``containers.run`` arguments) plus the equivalent ``docker run`` line, without touching an engine. The
RunSpec travels inside the container as ``$TRAINPOD_RUN_SPEC`` with its storage rewritten to the mount
targets, so the trainer sees ``/data`` and ``/output`` whatever the host paths are.

Why these choices:
- host networking: no bridge networks are created on our hosts (and the trainer needs only loopback/S3);
- ``--ipc=host`` for CUDA (NCCL needs shared memory across processes), a 2 GiB ``/dev/shm`` for CPU;
- the container runs as the invoking user so the output stays owned (and readable) by them; when that user is
  root the image's own non-root user runs it and the output dir is handed to that uid (root reads anything);
- secrets are injected from settings only in ``submit()``; plans and displays carry their names only.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainpod.backends.base import REDACTED, BackendBase, LaunchPlan, Mount, RunHandle, RunStatus
from trainpod.contract import (
    CACHE_TARGET,
    DATA_TARGET,
    DONE,
    ENV_OUTPUT_DIR,
    ENV_RUN_SPEC,
    ENV_STOP_GRACE,
    IMAGE_UID,
    OUTPUT_TARGET,
    POD_OUTPUT,
    PREVIOUS_TARGET,
    PROJECT_TARGET,
    STATUS_JSON,
    WORKSPACE,
    exit_detail,
    s3_env,
    secret_env_names,
    secret_env_values,
    state_after_exit,
)
from trainpod.errors import TrainpodError, UnsupportedError
from trainpod.launchcmd import job_argv, workload_command
from trainpod.runs import RunRegistry
from trainpod.settings import Settings
from trainpod.spec import CommandWorkload, RunSpec, StorageURIs, TrainerWorkload, utcnow_iso

LABEL_PREFIX = "dev.trainpod"


class DockerBackend(BackendBase):
    name = "docker"

    def __init__(self, settings: Settings | None = None, *, uid: int | None = None, gid: int | None = None,
                 cpus: int | None = None):
        super().__init__(settings)
        # who launches (decides --user, see module docstring) and how many cores the engine's host has (threads
        # per rank); injectable so dry-run snapshots do not depend on the machine that prints them
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.cpus = cpus or os.cpu_count() or 1

    # ------------------------------------------------------------------------------------------ planning
    def unsupported(self, spec: RunSpec) -> list[str]:
        hw = spec.workload.hardware
        reasons = []
        if hw.image == "none":
            reasons.append(
                f"hardware '{spec.workload.hardware_name}' ({hw.name}) has no container image: "
                f"{hw.device} is not reachable from Docker; use --remote local"
            )
        if spec.launch.nnodes > 1 and not spec.storage.output.startswith("s3://"):
            reasons.append(f"{spec.launch.nnodes} nodes need an output every node reaches: set TRAINPOD_STORAGE_URI=s3://…")
        return reasons

    def plan(self, spec: RunSpec, settings: Settings | None = None) -> LaunchPlan:
        """The exact container request for ``spec``. Pure: no engine call, no file written."""
        settings = self._use(settings)
        reasons = self.unsupported(spec)
        if reasons:
            raise UnsupportedError("docker backend cannot run this: " + "; ".join(reasons),
                                   "pick another hardware profile or --remote")
        work = spec.workload
        hw = work.hardware
        image = spec.image or _planned_tag(spec, settings)

        mounts: list[Mount] = []
        dataset = spec.storage.dataset
        if dataset and not dataset.startswith("s3://"):
            mounts.append(Mount(source=str(Path(dataset).expanduser().resolve()), target=DATA_TARGET, read_only=True))
            dataset = DATA_TARGET
        output = spec.storage.output
        if not output.startswith("s3://"):
            mounts.append(Mount(source=str(Path(output).expanduser().resolve()), target=OUTPUT_TARGET))
            output = OUTPUT_TARGET
        if isinstance(work, TrainerWorkload):  # the model hub's cache outlives the container
            mounts.append(Mount(source=str(settings.state_path / "hf-cache"), target=CACHE_TARGET))
        init_from = spec.init_from  # a pipeline stage's previous output: read-only, where jobs see it too
        if init_from and not init_from.startswith("s3://"):
            mounts.append(Mount(source=str(Path(init_from).expanduser().resolve()), target=PREVIOUS_TARGET,
                                read_only=True))
            init_from = PREVIOUS_TARGET
        update: dict[str, Any] = {"storage": StorageURIs(dataset=dataset, output=output), "image": image,
                                  "init_from": init_from}
        workdir = WORKSPACE
        if isinstance(work, CommandWorkload):  # the project layer holds the job's code
            workdir = PROJECT_TARGET
            update["workload"] = work.model_copy(update={"project_dir": PROJECT_TARGET})
        inner = spec.model_copy(update=update)

        master = settings.master_addr
        command, launch_env = workload_command(inner, cpu_count=self.cpus, master_addr=master)
        env = {
            ENV_RUN_SPEC: inner.to_json(),
            ENV_OUTPUT_DIR: output if output == OUTPUT_TARGET else POD_OUTPUT,
            ENV_STOP_GRACE: f"{spec.stop_grace_seconds:g}",
            "HF_HOME": CACHE_TARGET,
            "PYTHONUNBUFFERED": "1",
            **launch_env,
            **s3_env(settings),
        }
        if hw.device == "cuda" and hw.cuda_arch_list:
            env["TORCH_CUDA_ARCH_LIST"] = hw.cuda_arch_list
        secret_env = secret_env_names(settings.secrets())

        user = None if self.uid == 0 else f"{self.uid}:{self.gid}"
        if user:
            env["HOME"] = WORKSPACE  # the invoking uid has no passwd entry (or home) inside the image
        labels = {
            f"{LABEL_PREFIX}.run-id": spec.run_id,
            f"{LABEL_PREFIX}.preset": work.name,
            f"{LABEL_PREFIX}.hardware": work.hardware_name,
            f"{LABEL_PREFIX}.backend": self.name,
            # the SDK's run() has no stop timeout; `trainpod runs cancel` reads the grace period from here
            f"{LABEL_PREFIX}.stop-grace-seconds": f"{spec.stop_grace_seconds:g}",
        }
        request: dict[str, Any] = {
            "image": image,
            "name": spec.run_id,
            "command": command,
            "working_dir": workdir,
            "network_mode": "host",
            "labels": labels,
            "stop_signal": "SIGTERM",
        }
        if user:
            request["user"] = user
        if hw.device == "cuda":
            request["ipc_mode"] = "host"
            request["device_requests"] = [{"count": hw.gpu_count, "capabilities": [["gpu"]]}]
        else:
            request["shm_size"] = "2g"
        host_output = next((m.source for m in mounts if m.target == OUTPUT_TARGET), spec.storage.output)
        notes = [f"output on the host: {host_output}"]
        if isinstance(work, CommandWorkload):
            notes.insert(0, f"runs {job_argv(inner)} in {PROJECT_TARGET}")
        if self.uid == 0:
            notes.append(f"launched as root: the container runs as uid {IMAGE_UID} and the output dir is chowned to it")
        plan = LaunchPlan(
            backend=self.name, run_id=spec.run_id, image=image, command=request["command"], env=env,
            secret_env=secret_env, mounts=mounts, workdir=workdir, gpus=hw.gpu_count if hw.device == "cuda" else 0,
            provider_request={"container": request}, notes=notes, spec=spec,
        )
        provider: dict[str, Any] = {"container": request, "docker_run": docker_run_line(plan, request)}
        if spec.launch.nnodes > 1:
            # one engine is one node: print the container each node's engine runs (same image, env and
            # mounts; only the node rank differs). `submit` starts node 0 here; run the others on their hosts.
            nodes = []
            for rank in range(spec.launch.nnodes):
                argv, _ = workload_command(inner, cpu_count=self.cpus, node_rank=rank, master_addr=master)
                node_req = {**request, "name": f"{spec.run_id}-node{rank}", "command": argv}
                nodes.append({"node_rank": rank, "container": node_req, "docker_run": docker_run_line(plan, node_req)})
            provider["nodes"] = nodes
            notes.append(f"{spec.launch.nnodes} nodes rendezvous at {master}:{spec.launch.master_port} "
                         "(TRAINPOD_MASTER_ADDR); run each node's container on its own host")
            plan = plan.model_copy(update={"notes": notes})
        return plan.model_copy(update={"provider_request": provider})

    # ------------------------------------------------------------------------------------------ engine
    def submit(self, plan: LaunchPlan, settings: Settings | None = None) -> RunHandle:
        """Start the container detached (named after the run id) and record the run. The launcher built the
        image (and a job's project layer) before; this only checks that it is there."""
        settings = self._use(settings)
        import docker.errors
        from docker.types import DeviceRequest

        from trainpod.images import docker_client, image_exists

        if plan.spec.launch.nnodes > 1:
            raise UnsupportedError(
                f"--remote docker starts containers on one engine, and this run needs {plan.spec.launch.nnodes} nodes",
                "run `trainpod launch … --remote docker --dry-run` and start each node's printed container on its host",
            )
        client = docker_client()
        assert plan.image is not None
        if not image_exists(client, plan.image):
            raise TrainpodError(f"image {plan.image} is not on this engine",
                                f"build it first: trainpod build --hardware {plan.spec.workload.hardware_name}")
        for m in plan.mounts:
            if m.read_only:
                if not Path(m.source).is_dir():
                    if m.target == PREVIOUS_TARGET:
                        raise TrainpodError(f"init_from directory {m.source} (the previous stage's output) does "
                                            "not exist", "run the pipeline's earlier stage first")
                    raise TrainpodError(f"dataset directory {m.source} does not exist",
                                        "check the dataset path in training.toml")
                continue
            Path(m.source).mkdir(parents=True, exist_ok=True)
            if self.uid == 0:
                os.chown(m.source, IMAGE_UID, IMAGE_UID)
        request = dict(plan.provider_request["container"])
        secrets = settings.secrets()
        env = {**plan.env, **secret_env_values(plan.secret_env, secrets)}
        if "device_requests" in request:
            request["device_requests"] = [DeviceRequest(**d) for d in request["device_requests"]]
        volumes = {m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in plan.mounts}
        try:
            container = client.containers.run(detach=True, environment=env, volumes=volumes, **request)
        except docker.errors.APIError as exc:
            raise TrainpodError(f"docker could not start the container: {_scrub(str(exc), secrets)}",
                                "see `docker info`; is a container with this run id left over?") from None
        handle = RunHandle(
            run_id=plan.run_id, backend=self.name, preset=plan.spec.workload.name, provider_id=container.id,
            output=plan.spec.storage.output, created=utcnow_iso(),
            extra={"image": plan.image, "container": plan.run_id, "stop_grace_seconds": plan.spec.stop_grace_seconds,
                   "host_output": next((m.source for m in plan.mounts if m.target == OUTPUT_TARGET), None),
                   **plan.spec.registry_extra()},
        )
        RunRegistry(settings.state_dir).save(handle)
        return handle

    def _container(self, handle: RunHandle) -> Any | None:
        import docker.errors

        from trainpod.images import docker_client

        try:
            return docker_client().containers.get(handle.provider_id or handle.run_id)
        except docker.errors.NotFound:
            return None

    def status(self, handle: RunHandle) -> RunStatus:
        out = _host_output(handle)
        progress = _read_status_json(out)
        done = out is not None and (out / DONE).exists()
        container = self._container(handle)
        if container is None:
            if done:
                return RunStatus(state="succeeded", detail="container removed; DONE marker present", **progress)
            if handle.extra.get("cancelled"):
                return RunStatus(state="cancelled", detail="cancelled; container removed", **progress)
            return RunStatus(state="unknown", detail="container not found on this engine", **progress)
        state = container.attrs.get("State", {})
        if state.get("Running"):
            health = state.get("Health", {}).get("Status")
            return RunStatus(state="running", detail=f"health: {health}" if health else "", **progress)
        if state.get("Status") == "created":
            return RunStatus(state="pending", **progress)
        code = state.get("ExitCode")
        run_state = state_after_exit(code, done=done, cancelled=bool(handle.extra.get("cancelled")))
        if run_state == "succeeded":
            return RunStatus(state=run_state, exit_code=0, **progress)
        return RunStatus(state=run_state, exit_code=code, detail=state.get("Error") or exit_detail(code), **progress)

    def logs(self, handle: RunHandle, follow: bool = False) -> Iterator[str]:
        """The container's output; once the container is gone, the log files the trainer wrote."""
        container = self._container(handle)
        if container is not None:
            buf = b""
            for chunk in container.logs(stream=True, follow=follow, stdout=True, stderr=True):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
            if buf:
                yield buf.decode("utf-8", "replace")
            return
        out = _host_output(handle)
        files = sorted((out / "logs").glob("*.log")) if out and (out / "logs").is_dir() else []
        if not files:
            raise TrainpodError(f"no logs for run {handle.run_id}: the container is gone and no log file was written",
                                f"look in {handle.output}")
        for f in files:
            yield from f.read_text(encoding="utf-8", errors="replace").splitlines()

    def cancel(self, handle: RunHandle) -> None:
        """SIGTERM, wait up to the grace period for the trainer's checkpoint, then remove. Idempotent.

        Marks ``handle.extra["cancelled"]`` and records it in the run registry, so a later ``status`` says
        cancelled. The container is removed; its log stays in the output's ``logs/train.log``.
        """
        import docker.errors

        container = self._container(handle)
        if container is None or not container.attrs.get("State", {}).get("Running"):
            return  # gone or already finished: nothing to stop, and a finished run stays finished
        handle.extra["cancelled"] = True
        self._record_cancel(handle, cancelled_at=utcnow_iso())
        grace = float(handle.extra.get("stop_grace_seconds") or _grace_from_container(container))
        try:
            container.stop(timeout=int(grace))
            container.wait(timeout=grace + 30)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass  # removed concurrently: the goal is reached
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise TrainpodError(f"docker could not stop {handle.run_id}: {exc}") from None


# ---------------------------------------------------------------------------------------------- helpers
def _planned_tag(spec: RunSpec, settings: Settings) -> str:
    from trainpod.images import image_plan

    return image_plan(spec.workload.hardware_name, spec.workload.hardware, settings).tag


def _host_output(handle: RunHandle) -> Path | None:
    out = handle.extra.get("host_output") or handle.output
    return None if not out or str(out).startswith("s3://") else Path(out)


def _read_status_json(out: Path | None) -> dict[str, Any]:
    """step/loss from the trainer's status.json, tolerating a missing or half-written file."""
    if out is None:
        return {}
    try:
        data = json.loads((out / STATUS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    result = {}
    for key, kind in (("step", int), ("loss", float), ("elapsed_s", float)):
        if isinstance(data.get(key), (int, float)):
            result[key] = kind(data[key])
    return result


def _grace_from_container(container: Any) -> float:
    labels = container.attrs.get("Config", {}).get("Labels") or {}
    return float(labels.get(f"{LABEL_PREFIX}.stop-grace-seconds") or 60)


def _scrub(text: str, secrets: dict[str, str]) -> str:
    for value in secrets.values():
        text = text.replace(value, REDACTED)
    return text


def docker_run_line(plan: LaunchPlan, request: dict[str, Any] | None = None) -> str:
    """The ``docker run`` command equivalent to the plan; secrets appear as ``-e NAME`` (value from your env)."""
    req = request or plan.provider_request["container"]
    args = ["docker", "run", "--detach", "--name", req["name"], "--network", req["network_mode"]]
    if req.get("user"):
        args += ["--user", req["user"]]
    if req.get("ipc_mode"):
        args += ["--ipc", req["ipc_mode"]]
    if req.get("shm_size"):
        args += ["--shm-size", req["shm_size"]]
    for d in req.get("device_requests", []):
        args += ["--gpus", str(d["count"])]
    args += ["--stop-signal", req["stop_signal"]]
    for key, value in sorted(req["labels"].items()):
        args += ["--label", f"{key}={value}"]
    for m in plan.mounts:
        args += ["--mount", f"type=bind,source={m.source},target={m.target}" + (",readonly" if m.read_only else "")]
    args += ["--workdir", req["working_dir"]]
    for key, value in plan.env.items():
        args += ["-e", f"{key}={value}"]
    for key in plan.secret_env:
        args += ["-e", key]
    args += [req["image"], *req["command"]]
    return " ".join(shlex.quote(a) for a in args)
