"""The docker engine side: build (a no-op when the tag exists), push (skipped when the registry has it), prune,
the project layer's build, and `trainpod build/push`. The docker SDK is imported lazily."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from trainpod.config.schema import Hardware
from trainpod.errors import ConfigError, TrainpodError
from trainpod.images.context import write_context
from trainpod.images.plan import CONTENT_LABEL, ImagePlan, image_plan
from trainpod.images.project import PROJECT_CONTENT_LABEL, ProjectImagePlan, write_project_context
from trainpod.settings import Settings


# --------------------------------------------------------------------------------------------- engine
def docker_client() -> Any:
    """A docker SDK client from the environment (``DOCKER_HOST``), with a clear error when there is no engine."""
    from trainpod import deps

    deps.require("docker")
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # the SDK raises several unrelated types for "no engine"
        raise TrainpodError(f"cannot reach the Docker engine: {exc}",
                            "start it (sudo bash scripts/docker-up.sh) or set DOCKER_HOST") from None
    return client


def image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def build(plan: ImagePlan, *, client: Any = None, on_line: Callable[[str], None] | None = None,
          force: bool = False, no_cache: bool = False) -> bool:
    """Build ``plan.tag`` unless it exists. Returns True when an engine build ran.

    Uses the classic builder with host networking (no bridge networks here); engine errors are raised
    verbatim. ``on_line`` receives every line of build output (the CLI feeds a rich progress display).
    ``force`` builds even when the tag exists; ``no_cache`` also ignores the layer cache (a cold build).
    """
    client = client or docker_client()
    if not force and image_exists(client, plan.tag):
        return False
    if not force:
        # the same content under another name (e.g. built before TRAINPOD_REGISTRY was set): just tag it
        same = [i for i in client.images.list(filters={"label": f"{CONTENT_LABEL}={plan.content_hash}"})
                if PROJECT_CONTENT_LABEL not in (i.labels or {})]  # project layers inherit the base's labels
        if same:
            same[0].tag(plan.repository, plan.tag_name)
            return False
    with tempfile.TemporaryFile() as ctx:
        write_context(plan, ctx)
        ctx.seek(0)
        stream = client.api.build(
            fileobj=ctx, custom_context=True, tag=plan.tag, buildargs=plan.build_args, network_mode="host",
            rm=True, forcerm=True, pull=False, decode=True, dockerfile="Dockerfile", nocache=no_cache,
        )
        _follow_build(stream, "docker build", on_line)
    _check_built(client, plan.tag)
    return True



HARDWARE_LABEL = "dev.trainpod.hardware"


def prune(plan: ImagePlan, *, client: Any = None) -> dict[str, list[str]]:
    """Remove this hardware profile's older images from the local engine: ``<repository>:<flavor>-…`` tags whose
    image carries the profile's label and another content hash than ``plan``'s (project layers are left).

    Every code change makes a new content-addressed tag, so without this a dev box keeps them all. The current
    tag is never touched; an image a container (running or stopped) still uses is kept, and reported as kept;
    layers shared with the current image stay (the engine only frees what nothing references). Registry tags
    are left alone: a teammate's pod may still pull them. Returns ``{"removed": [...], "kept": [...]}``.
    """
    import docker.errors

    client = client or docker_client()
    removed: list[str] = []
    kept: list[str] = []
    for image in client.images.list(filters={"label": f"{HARDWARE_LABEL}={plan.hardware_name}"}):
        labels = image.labels or {}
        if labels.get(CONTENT_LABEL) in (None, plan.content_hash):
            continue
        for tag in sorted(image.tags):
            repo, _, name = tag.rpartition(":")
            if repo != plan.repository or not name.startswith(f"{plan.flavor}-"):
                continue  # another repository, or a project layer (``project-…``, built on a pinned base)
            try:
                client.images.remove(tag)  # untags; the engine deletes layers nothing else references
            except docker.errors.ImageNotFound:
                continue
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: a container uses it
                    raise
                kept.append(f"{tag} (used by a container)")
                continue
            removed.append(tag)
    return {"removed": removed, "kept": kept}


_TAIL_LINES = 15


def _follow_build(stream: Any, what: str, on_line: Callable[[str], None] | None) -> None:
    """Consume an engine build stream: lines to ``on_line``, the engine's error verbatim with the last output."""
    tail: list[str] = []
    for event in stream:
        if "error" in event:
            detail = event.get("errorDetail", {}).get("message") or event["error"]
            raise TrainpodError(f"{what} failed: {detail.strip()}",
                                "last output:\n" + "".join(tail[-_TAIL_LINES:]) if tail else None)
        text = event.get("stream")
        if text:
            tail.append(text)
            del tail[:-_TAIL_LINES]
            if on_line:
                for line in text.splitlines():
                    if line.strip():
                        on_line(line)


def _check_built(client: Any, tag: str) -> None:
    if not image_exists(client, tag):
        raise TrainpodError(f"docker build finished but {tag} does not exist", "the engine's log may say why")


def _auth(settings: Settings) -> dict[str, str] | None:
    if settings.registry_username and settings.registry_password:
        return {"username": settings.registry_username, "password": settings.registry_password.get_secret_value()}
    return None


def registry_has(client: Any, tag: str, settings: Settings) -> bool:
    """Whether the registry already holds ``tag`` (asks the registry through the engine)."""
    import docker.errors

    try:
        client.images.get_registry_data(tag, auth_config=_auth(settings))
    except (docker.errors.NotFound, docker.errors.APIError):
        return False
    return True


def push(plan: ImagePlan | ProjectImagePlan, settings: Settings, *, client: Any = None,
         on_line: Callable[[str], None] | None = None) -> bool:
    """Push ``plan.tag`` (a hardware image, or a job's project image); skipped (returns False) when the
    registry already has it."""
    if not settings.registry:
        raise ConfigError("no registry configured", "set TRAINPOD_REGISTRY (e.g. ghcr.io/you or 127.0.0.1:5000)")
    client = client or docker_client()
    if not image_exists(client, plan.tag):
        hint = (f"run: trainpod build --hardware {plan.hardware_name}" if isinstance(plan, ImagePlan)
                else "launch the job again: it builds the project image first")
        raise TrainpodError(f"image {plan.tag} is not built", hint)
    if registry_has(client, plan.tag, settings):
        return False
    secret = settings.registry_password.get_secret_value() if settings.registry_password else None
    for event in client.api.push(plan.repository, tag=plan.tag_name, stream=True, decode=True,
                                 auth_config=_auth(settings)):
        if "error" in event:
            detail = event.get("errorDetail", {}).get("message") or event["error"]
            if secret:
                detail = detail.replace(secret, "***")
            raise TrainpodError(f"docker push failed: {detail.strip()}",
                                "check TRAINPOD_REGISTRY_USERNAME / TRAINPOD_REGISTRY_PASSWORD")
        if on_line and event.get("status"):
            on_line(f"{event.get('id', '')} {event['status']}".strip())
    return True


def resolve_hardware(target: str | None, hardware: str | None, config: str | None = None) -> tuple[str, Hardware]:
    """``--hardware NAME`` or a preset's hardware (``trainpod build PRESET``); default: the ``cpu`` profile."""
    from trainpod.config.loader import load_catalog

    catalog = load_catalog(config)
    if hardware and target:
        raise ConfigError(f"give either a preset ({target!r}) or --hardware ({hardware!r}), not both")
    if target and target not in catalog.table("hardware"):
        name = catalog.get("presets", target).hardware
    else:
        name = hardware or target or "cpu"
    return name, catalog.get("hardware", name)


def build_and_push(target: str | None, *, hardware: str | None = None, settings: Settings, config: str | None = None,
                   base_image: str | None = None, ca_bundle: str | None = None, wheelhouse: str | None = None,
                   do_build: bool = True, do_push: bool = False, dry_run: bool = False, do_prune: bool = False,
                   on_line: Callable[[str], None] | None = None) -> dict[str, Any]:
    """What ``trainpod build`` / ``trainpod push`` do: plan, then (unless dry-run) build and/or push.

    Returns the plan's display plus what happened (``built``/``pushed``: True, False = already there).
    """
    name, hw = resolve_hardware(target, hardware, config)
    plan = image_plan(name, hw, settings, base_image=base_image, ca_bundle=ca_bundle, wheelhouse=wheelhouse)
    result: dict[str, Any] = {"plan": plan.display()}
    if dry_run:
        return result
    client = docker_client()
    if do_build:
        result["built"] = build(plan, client=client, on_line=on_line)
    if do_push:
        result["pushed"] = push(plan, settings, client=client, on_line=on_line)
    if do_prune:
        result["pruned"] = prune(plan, client=client)
    return result


def build_project(plan: ProjectImagePlan, *, client: Any = None, on_line: Callable[[str], None] | None = None) -> bool:
    """Build the project layer unless its tag exists (True when an engine build ran). The base must exist."""
    client = client or docker_client()
    if image_exists(client, plan.tag):
        return False
    if not image_exists(client, plan.base_image):
        raise TrainpodError(f"base image {plan.base_image} is not on this engine",
                            "build the hardware image first: trainpod build --hardware NAME")
    with tempfile.TemporaryFile() as ctx:
        write_project_context(plan, ctx)
        ctx.seek(0)
        stream = client.api.build(fileobj=ctx, custom_context=True, tag=plan.tag, network_mode="host", rm=True,
                                  forcerm=True, pull=False, decode=True, dockerfile="Dockerfile",
                                  buildargs={**plan.fetch_args, "BASE_IMAGE": plan.base_image,
                                             "CONTENT_HASH": plan.content_hash})
        _follow_build(stream, "project image build", on_line)
    _check_built(client, plan.tag)
    return True
