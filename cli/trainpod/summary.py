"""What a launch will do, for a person: the plan summary, the confirmation before spending, the machine plan.

:func:`build` is a pure function of a :class:`~trainpod.backends.base.LaunchPlan` and a few :class:`Facts`
(looked up by :func:`gather_facts`: is the image built, is it in the registry, how big is the dataset, what
did the last run of this preset take, which optional packages are missing). It returns rows and warnings;
:func:`render_text` prints them as plain lines (pipes, logs, CI: no control characters) and
:func:`print_summary` as a rich table on a terminal. Under 30 lines for every shipped preset.

:func:`machine_plan` is ``launch --dry-run --json``: the whole plan once, with the RunSpec only under
``spec`` (the places that carry it verbatim, such as ``env.TRAINPOD_RUN_SPEC`` or a provider request's
env and document, hold the marker :data:`SPEC_REF`). :func:`provider_request` is ``--show-request``: the
exact request the provider gets (secrets ``***``), RunSpec included.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trainpod.backends.base import LaunchPlan
from trainpod.contract import ENV_RUN_SPEC, ENV_YES

PAID_BACKENDS = ("runpod", "runpod-cluster")  # launches that rent something by the hour: confirmed before submit
PLAN_FORMAT = "trainpod.plan/1"
SPEC_REF = "<RunSpec: see .spec>"


@dataclass(frozen=True)
class Facts:
    """What the plan alone does not say; ``None`` means "not checked"."""

    image_local: bool | None = None  # the local engine has the image
    image_in_registry: bool | None = None  # its registry has it (asked through the engine)
    dataset_bytes: int | None = None  # a local dataset's size
    dataset_files: int | None = None
    dataset_missing: bool = False  # a local dataset path that does not exist
    missing_packages: tuple[str, ...] = ()  # "runpod (pip install 'trainpod[runpod]')"
    previous_run: str | None = None  # the newest finished run of this preset on this backend and hardware
    previous_seconds: float | None = None  # its training duration
    previous_steps: int | None = None
    previous_tokens_per_s: float | None = None


@dataclass(frozen=True)
class Summary:
    title: str
    rows: list[tuple[str, str]]
    warnings: list[str]
    paid: bool
    estimate_usd: float | None
    caps: str  # "max runtime 240 min, max cost $5.00"

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "rows": dict(self.rows), "warnings": self.warnings, "paid": self.paid,
                "estimated_cost_usd": self.estimate_usd, "caps": self.caps}


# ------------------------------------------------------------------------------------------ build
def _workload(plan: LaunchPlan) -> tuple[str, Any, Any]:
    """(hardware name, hardware table, training config or None) for a preset run or a custom job."""
    work = plan.spec.workload
    return work.hardware_name, work.hardware, work.config if work.kind == "trainer" else None


def _guards(plan: LaunchPlan) -> tuple[float | None, float | None, bool]:
    work = plan.spec.workload
    return work.max_runtime_minutes, work.max_cost_usd, bool(work.spot)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _has_registry(image: str) -> bool:
    """``host[:port]/repo:tag`` names a registry; a bare ``repo:tag`` exists only in a local engine."""
    first = image.split("/", 1)[0] if "/" in image else ""
    return bool(first) and ("." in first or ":" in first or first == "localhost")


def _image_row(plan: LaunchPlan, facts: Facts) -> str:
    if not plan.image:
        return "none: runs in this Python environment"
    state = []
    if facts.image_local is True:
        state.append("built")
    elif facts.image_local is False:
        state.append("not built yet: launch builds it")
    if plan.backend in PAID_BACKENDS:
        if facts.image_in_registry is True:
            state.append("in registry")
        elif facts.image_in_registry is False:
            state.append("not in the registry yet: launch pushes it")
    return f"{plan.image} ({'; '.join(state) if state else 'not checked'})"


def _hardware_row(plan: LaunchPlan, hw_name: str, hw: Any) -> str:
    req = plan.provider_request
    if plan.backend in PAID_BACKENDS:
        gpu = req.get("gpu_type_id") or hw.runpod_gpu_type_id or hw.name
        fallbacks = req.get("fallback_gpu_type_ids", list(hw.runpod_fallback_gpu_type_ids))
        if req.get("nodes"):  # an Instant Cluster: nodes x GPUs each
            return f"{hw_name}: {req['nodes']} nodes x {req.get('gpus_per_node', hw.gpu_count)}x {gpu}"
        text = f"{hw_name}: {max(1, hw.gpu_count)}x {gpu}"
        return text + (f", fallback {', '.join(fallbacks)}" if fallbacks else ", no fallback")
    return f"{hw_name} ({hw.device}): {hw.name}"


def _shape_row(plan: LaunchPlan, hw: Any) -> str:
    launch = plan.spec.launch
    n = launch.nproc_per_node
    unit = ("GPU" if n == 1 else "GPUs") if hw.device == "cuda" else ("process" if n == 1 else "processes")
    return f"{launch.nnodes} node{'s' if launch.nnodes > 1 else ''} x {n} {unit} ({launch.launcher})"


def _model_row(cfg: Any) -> str:
    tune = f"LoRA r={cfg.lora.r}" if cfg.finetune == "lora" and cfg.lora else cfg.finetune
    batch = f"batch {cfg.batch_size}x{cfg.gradient_accumulation}"
    if cfg.world_size > 1:
        batch += f"x{cfg.world_size}"
    return f"{cfg.expert.base_model}, {tune}, {cfg.precision}, seq {cfg.sequence_length}, {batch}"


def _steps(cfg: Any) -> str:
    hp = cfg.hyperparameters
    if hp.max_steps:
        return f"{hp.max_steps} steps"
    return f"{hp.num_epochs:g} epochs"


def _dataset_row(plan: LaunchPlan, cfg: Any, facts: Facts) -> str:
    name, path = (cfg.dataset_name if cfg is not None else "data"), plan.spec.storage.dataset
    if not path:
        return "none"
    if facts.dataset_missing:
        size = "missing"
    elif facts.dataset_bytes is not None:
        size = f"{human_bytes(facts.dataset_bytes)} in {facts.dataset_files} files"
    elif str(path).startswith("s3://"):
        size = "in S3"
    else:
        size = "size not checked"
    return f"{name}: {path} ({size})"


def _guards_row(plan: LaunchPlan) -> str:
    minutes, usd, spot = _guards(plan)
    parts = [f"max runtime {minutes:g} min" if minutes is not None else "no max runtime",
             f"max cost ${usd:.2f}" if usd is not None else "no max cost"]
    if plan.backend in PAID_BACKENDS:
        parts.append("spot (relaunched on preemption)" if spot else "on-demand")
    parts.append(f"stop grace {plan.spec.stop_grace_seconds:g} s")
    return ", ".join(parts)


def _caps(plan: LaunchPlan) -> str:
    minutes, usd, _ = _guards(plan)
    caps = []
    if minutes is not None:
        caps.append(f"max runtime {minutes:g} min")
    if usd is not None:
        caps.append(f"max cost ${usd:.2f}")
    return ", ".join(caps) or "no caps"


def _hours(plan: LaunchPlan) -> tuple[float | None, str]:
    """The backend's expected duration and why (its ``duration:`` note)."""
    hours = plan.provider_request.get("expected_hours")
    why = next((n.split(":", 1)[1].strip() for n in plan.notes if n.startswith("duration:")), "")
    return (float(hours) if hours is not None else None), why


def _cost_row(plan: LaunchPlan) -> str:
    if plan.backend not in PAID_BACKENDS:
        return "$0 (runs on this machine)"
    req = plan.provider_request
    price, source = req.get("price_per_gpu_hour"), _price_source(plan)
    if plan.estimated_cost_usd is None or price is None:
        return f"unknown until submit (price: {source})"
    hours, _ = _hours(plan)
    gpus = max(1, plan.gpus)
    how = f"${price:g}/GPU-h x {gpus} GPU x {hours:.2f} h" if hours is not None else f"${price:g}/GPU-h"
    return f"about ${plan.estimated_cost_usd:.2f} ({how})"


def _price_source(plan: LaunchPlan) -> str:
    note = next((n.split(":", 1)[1].strip() for n in plan.notes if n.startswith("price:")), None)
    return str(plan.provider_request.get("price_source") or note or "unknown")


def _duration_row(plan: LaunchPlan, cfg: Any, facts: Facts) -> str | None:
    if facts.previous_seconds is not None and facts.previous_run:
        seconds, basis = facts.previous_seconds, f"run {facts.previous_run}"
        planned = cfg.hyperparameters.max_steps if cfg is not None else None
        if planned and facts.previous_steps and planned != facts.previous_steps:
            seconds *= planned / facts.previous_steps
            basis += f", scaled {facts.previous_steps} -> {planned} steps"
        if facts.previous_tokens_per_s:
            basis += f", {facts.previous_tokens_per_s:,.0f} tokens/s"
        return f"about {human_duration(seconds)} of training (from {basis})"
    hours, why = _hours(plan)
    if hours is None:
        return None
    if why.startswith("max_runtime_minutes"):
        return f"at most {human_duration(hours * 3600)} (max_runtime_minutes)"
    return f"about {human_duration(hours * 3600)} ({why})" if why else f"about {human_duration(hours * 3600)}"


def _credential_rows(plan: LaunchPlan) -> list[tuple[str, str]]:
    """What a remote pod receives, one row per scope: names and scope, never values."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for cred in plan.credentials:
        if cred.get("kind") == "info":  # e.g. when the session ends: not a credential
            continue
        scope = str(cred.get("scope", "")).removeprefix("WARNING: ")
        grouped.setdefault((scope, str(cred.get("expires") or "")), []).append(str(cred["name"]))
    return [("pod receives", f"{', '.join(names)}: {scope}" + (f" (expires {expires})" if expires else ""))
            for (scope, expires), names in grouped.items()]


def _warnings(plan: LaunchPlan, facts: Facts) -> list[str]:
    out: list[str] = []
    paid = plan.backend in PAID_BACKENDS
    if paid and plan.image and not _has_registry(plan.image):
        out.append(f"image {plan.image} names no registry: a pod can never pull it. "
                   "Set TRAINPOD_REGISTRY (e.g. ghcr.io/you) so launch pushes it there")
    # the backend's own warnings (e.g. long-lived credentials going into a pod: trainpod.credentials)
    by_text: dict[str, list[str]] = {}  # "NAME: text" notes with the same text become one line
    for note in plan.notes:
        if note.startswith("WARNING: "):
            name, sep, text = note[len("WARNING: "):].replace("WARNING: ", "").partition(": ")
            by_text.setdefault(text if sep else name, []).append(name if sep else "")
    out += [f"{', '.join(n for n in names if n)}: {text}" if any(names) else text for text, names in by_text.items()]
    if facts.dataset_missing:
        out.append(f"dataset path {plan.spec.storage.dataset} does not exist")
    for pkg in facts.missing_packages:
        out.append(f"missing optional dependency: {pkg}")
    minutes, usd, _ = _guards(plan)
    if paid and usd is None:
        out.append("no max cost: only the max runtime bounds the bill (--max-cost USD)")
    if paid and minutes is None and usd is not None:
        out.append("no max runtime: the cost cap alone stops the pod (--max-runtime MINUTES)")
    return out


def build(plan: LaunchPlan, facts: Facts | None = None) -> Summary:
    """The rows and warnings of the plan summary. Pure: same plan and facts, same summary."""
    facts = facts or Facts()
    spec = plan.spec
    hw_name, hw, cfg = _workload(plan)
    req = plan.provider_request
    backend = plan.backend
    if backend in PAID_BACKENDS and req.get("api"):
        call = (req.get("mutation") or req.get("endpoint")
                or " ".join(str(req[k]) for k in ("method", "path") if req.get(k)))
        backend += f" ({req.get('api')}{' ' + call if call else ''})"
    rows: list[tuple[str, str]] = [("run", spec.run_id), ("backend", backend)]
    if cfg is not None:
        rows.append(("model", _model_row(cfg)))
        rows.append(("steps", _steps(cfg)))
    else:
        rows.append(("job", " ".join(spec.workload.command)))
    rows.append(("image", _image_row(plan, facts)))
    rows.append(("hardware", _hardware_row(plan, hw_name, hw)))
    if plan.backend in PAID_BACKENDS:
        cloud = req.get("cloud_type") or hw.runpod_cloud_type
        disk = f", disk {hw.container_disk_gb} GB" if getattr(hw, "container_disk_gb", None) else ""
        rows.append(("cloud", f"{cloud}{disk}"))
    if hw.cuda_version:
        hosts = req.get("allowed_cuda_versions")
        rows.append(("CUDA floor", f">= {hw.cuda_version}" + (f" (hosts with {', '.join(hosts)})" if hosts else "")))
    rows.append(("nodes x GPUs", _shape_row(plan, hw)))
    rows.append(("dataset", _dataset_row(plan, cfg, facts)))
    rows.append(("output", spec.storage.output))
    rows += _credential_rows(plan)
    rows.append(("money guards", _guards_row(plan)))
    rows.append(("cost", _cost_row(plan)))
    if plan.backend in PAID_BACKENDS and _price_source(plan) != "unknown":
        rows.append(("price", _price_source(plan)))
    duration = _duration_row(plan, cfg, facts)
    if duration:
        rows.append(("duration", duration))
    name = spec.workload.name
    return Summary(title=f"launch plan: {name} on {plan.backend}", rows=rows, warnings=_warnings(plan, facts),
                   paid=plan.backend in PAID_BACKENDS, estimate_usd=plan.estimated_cost_usd, caps=_caps(plan))


# ------------------------------------------------------------------------------------------ render
def render_text(summary: Summary) -> str:
    """Plain lines (no control characters): what logs, pipes and CI get."""
    width = max(len(k) for k, _ in summary.rows)
    lines = [summary.title]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in summary.rows]
    if summary.warnings:
        lines.append("warnings:")
        lines += [f"  ! {w}" for w in summary.warnings]
    return "\n".join(lines) + "\n"


def is_terminal(stream: IO[str] | None = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"


def print_summary(summary: Summary, *, err: bool = False) -> None:
    """A rich table on a terminal, plain lines otherwise."""
    stream = sys.stderr if err else sys.stdout
    if not is_terminal(stream):
        stream.write(render_text(summary))
        stream.flush()
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=summary.title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in summary.rows:
        table.add_row(key, escape(value))
    console = Console(file=stream)
    console.print(table)
    for w in summary.warnings:
        console.print(f"[yellow]! {escape(w)}[/]")


def combined(summaries: list[Summary], title: str) -> Summary:
    """One summary for several paid stages (a pipeline): the estimates added up, each stage's caps."""
    paid = [s for s in summaries if s.paid]
    estimates = [s.estimate_usd for s in paid]
    total = None if any(e is None for e in estimates) else round(sum(e for e in estimates if e is not None), 2)
    caps = "; ".join(f"{s.title.split(': ', 1)[-1]}: {s.caps}" for s in paid)
    return Summary(title=title, rows=[], warnings=[], paid=bool(paid), estimate_usd=total, caps=caps or "no caps")


def confirm_spend(summary: Summary, *, yes: bool = False) -> None:
    """Before renting: ask on a terminal (estimate and caps shown); refuse (exit 2) without one.

    Local and docker launches never ask. ``yes`` (``--yes``, ``TRAINPOD_YES=1``) skips the question.
    """
    if not summary.paid or yes:
        return
    from trainpod.errors import TrainpodError

    estimate = f"about ${summary.estimate_usd:.2f}" if summary.estimate_usd is not None else "an unknown amount"
    if not (sys.stdin.isatty() and is_terminal(sys.stderr)):
        raise TrainpodError(
            f"this launch rents paid hardware ({estimate}; {summary.caps}) and there is no terminal to confirm on; "
            "nothing was rented",
            f"pass --yes (or set {ENV_YES}=1) to launch without asking",
        )
    import click

    if not click.confirm(f"Rent it? {estimate}, stopped at {summary.caps}", default=False, err=True):
        raise TrainpodError("not launched: nothing was rented", "launch again and answer y, or pass --yes")


# ------------------------------------------------------------------------------------------ facts
def _dataset_facts(path: str) -> tuple[int | None, int | None, bool]:
    if path.startswith("s3://"):
        return None, None, False
    p = Path(path).expanduser()
    if not p.exists():
        return None, None, True
    if p.is_file():
        return p.stat().st_size, 1, False
    files = [f for f in p.rglob("*") if f.is_file()]
    if len(files) > 10_000:  # not cheap any more: do not walk a huge tree for a summary line
        return None, None, False
    return sum(f.stat().st_size for f in files), len(files), False


def _missing_packages(plan: LaunchPlan) -> tuple[str, ...]:
    import importlib.util

    need: list[tuple[str, str]] = []
    if plan.backend in ("docker", *PAID_BACKENDS):
        need.append(("docker", "docker"))
    if plan.backend in PAID_BACKENDS:
        need.append(("runpod", "runpod"))
    uris = [plan.spec.storage.dataset or "", plan.spec.storage.output]
    if any(u.startswith("s3://") for u in uris):
        need.append(("boto3", "s3"))
    if plan.backend == "local" and plan.spec.workload.kind == "trainer":
        need.append(("torch", "train"))
        if plan.spec.config.deepspeed:
            need.append(("deepspeed", "deepspeed"))
    out = []
    for module, extra in need:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(f"{module} (pip install 'trainpod[{extra}]')")
    return tuple(out)


def _image_facts(plan: LaunchPlan, settings: Any) -> tuple[bool | None, bool | None]:
    """Ask the local engine (a short timeout) whether it has the image, and for a paid backend the registry."""
    if not plan.image or plan.backend not in ("docker", *PAID_BACKENDS):
        return None, None
    try:
        import docker
        import docker.errors
    except ImportError:
        return None, None
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception:  # no engine: not knowable cheaply
        return None, None
    try:
        try:
            client.images.get(plan.image)
            local: bool | None = True
        except docker.errors.ImageNotFound:
            local = False
        remote: bool | None = None
        if plan.backend in PAID_BACKENDS and _has_registry(plan.image):
            from trainpod.images.engine import _auth

            try:
                client.images.get_registry_data(plan.image, auth_config=_auth(settings))
                remote = True
            except docker.errors.NotFound:
                remote = False
            except Exception:  # unreachable registry, auth: unknown, not "absent"
                remote = None
        return local, remote
    except Exception:
        return None, None
    finally:
        client.close()


def _previous_run(plan: LaunchPlan, settings: Any) -> tuple[str | None, float | None, int | None, float | None]:
    """The newest run of the same preset, backend and hardware that left a metadata.json (local or downloaded)."""
    from trainpod.runs import RunRegistry

    spec = plan.spec
    if spec.workload.kind != "trainer":
        return None, None, None, None
    for handle in reversed(RunRegistry(settings.state_path).all()):
        if handle.preset != spec.config.preset or handle.backend != plan.backend or handle.run_id == spec.run_id:
            continue
        local = handle.extra.get("downloaded") or handle.output
        meta_path = Path(local) / "metadata.json"
        if str(local).startswith("s3://") or not meta_path.is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            training, hardware = meta.get("training", {}), meta.get("hardware", {})
            if hardware.get("name") not in (None, spec.config.hardware.name):
                continue
            return (handle.run_id, float(training["duration_seconds"]), int(training.get("steps") or 0) or None,
                    training.get("tokens_per_second"))
        except (ValueError, KeyError, TypeError, OSError):
            continue
    return None, None, None, None


def gather_facts(plan: LaunchPlan, settings: Any, *, probe_images: bool = True) -> Facts:
    """Cheap look-ups for the summary: the local engine and registry (short timeouts), the dataset's size
    when local, the previous run of this preset, optional packages the launch needs."""
    dataset = plan.spec.storage.dataset
    size, files, missing = _dataset_facts(dataset) if dataset else (None, None, False)
    local, remote = _image_facts(plan, settings) if probe_images else (None, None)
    prev, seconds, steps, tps = _previous_run(plan, settings)
    return Facts(image_local=local, image_in_registry=remote, dataset_bytes=size, dataset_files=files,
                 dataset_missing=missing, missing_packages=_missing_packages(plan), previous_run=prev,
                 previous_seconds=seconds, previous_steps=steps, previous_tokens_per_s=tps)


# ------------------------------------------------------------------------------------------ machine plan
def _dedupe_spec(value: Any, forms: tuple[str, ...]) -> Any:
    """``value`` with every verbatim or string-escaped copy of the RunSpec JSON replaced by :data:`SPEC_REF`."""
    if isinstance(value, dict):
        return {k: _dedupe_spec(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [_dedupe_spec(v, forms) for v in value]
    if isinstance(value, str):
        if value == forms[0]:
            return SPEC_REF
        for form in forms:
            if form in value:
                value = value.replace(form, SPEC_REF)
    return value


def _forms(spec_json: str) -> tuple[str, ...]:
    """The spec JSON as sent: verbatim, and escaped inside a JSON/GraphQL string (ASCII-escaped or UTF-8)."""
    return (spec_json, json.dumps(spec_json)[1:-1], json.dumps(spec_json, ensure_ascii=False)[1:-1])


def machine_plan(plan: LaunchPlan, summary: Summary | None = None) -> dict[str, Any]:
    """``--dry-run --json``: the plan (secrets ``***``) with the RunSpec once, under ``spec``.

    Wherever the backend sends the RunSpec verbatim (the ``TRAINPOD_RUN_SPEC`` env value, a provider request's
    env list or document) the value is :data:`SPEC_REF`; ``--show-request`` prints the request unabridged. When
    the container gets its own view of the spec (docker: mounted paths), ``spec_in_container`` holds the
    top-level keys that differ.
    """
    data = plan.display()
    spec = data.pop("spec")
    spec_json = plan.spec.to_json()
    inner = data.get("env", {}).get(ENV_RUN_SPEC)  # a container's view of the spec (docker: /data paths)
    data = _dedupe_spec(data, _forms(spec_json))
    if inner and inner != spec_json:
        data = _dedupe_spec(data, _forms(inner))
        container = json.loads(inner)  # only where it differs (paths inside the container), not a second copy
        data["spec_in_container"] = {k: v for k, v in container.items() if spec.get(k) != v}
    out: dict[str, Any] = {"format": PLAN_FORMAT, **data, "spec": spec}
    if summary is not None:
        out["summary"] = summary.as_dict()
    return out


def provider_request(plan: LaunchPlan) -> dict[str, Any]:
    """``--show-request``: exactly what the provider receives (secrets ``***``). Local runs: the process."""
    shown = plan.display()
    if shown.get("provider_request"):
        return {"backend": plan.backend, "request": shown["provider_request"]}
    return {"backend": plan.backend, "request": {"command": shown["command"], "env": shown["env"],
                                                 "cwd": shown.get("workdir")}}
