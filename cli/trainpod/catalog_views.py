"""Library functions behind ``list``, ``show`` and ``validate`` (the commands only print)."""

from __future__ import annotations

from typing import Any

from trainpod.config import Catalog, load_catalog
from trainpod.config.schema import TrainingConfig
from trainpod.errors import ConfigError, TrainpodError


def list_rows(kind: str, config: str | None = None) -> tuple[list[str], list[list[Any]]]:
    cat = load_catalog(config)
    table = cat.table(kind)
    if kind == "presets":
        cols = ["name", "expert", "hardware", "dataset", "remote", "description"]
        rows = [[n, p.expert, p.hardware, p.dataset, p.remote, p.description] for n, p in table.items()]
    elif kind == "experts":
        cols = ["name", "display_name", "base_model", "context_window", "role"]
        rows = [[n, e.display_name, e.base_model, e.context_window, e.role] for n, e in table.items()]
    elif kind == "hardware":
        cols = ["name", "device", "gpus", "memory_gb", "image", "supported", "description"]
        rows = [
            [n, h.device, h.gpu_count * h.nnodes, h.available_memory_gb, h.image,
             "yes" if h.supported else f"no: {h.unsupported_reason}", h.name]
            for n, h in table.items()
        ]
    elif kind == "datasets":
        cols = ["name", "path", "format", "domains"]
        rows = [[n, d.path, d.format, ", ".join(d.domains)] for n, d in table.items()]
    elif kind == "lora":
        cols = ["name", "r", "lora_alpha", "dropout", "target_modules"]
        rows = [[n, lo.r, lo.lora_alpha, lo.dropout, ", ".join(lo.target_modules)] for n, lo in table.items()]
    elif kind == "hyperparameters":
        cols = ["name", "num_epochs", "max_steps", "learning_rate", "lr_scheduler", "warmup_steps", "seed"]
        rows = [[n, h.num_epochs, h.max_steps, h.learning_rate, h.lr_scheduler, h.warmup_steps, h.seed]
                for n, h in table.items()]
    elif kind == "jobs":
        cols = ["name", "hardware", "launcher", "command", "remote", "description"]
        rows = [[n, j.hardware, j.launcher, " ".join(j.command), j.remote, j.description] for n, j in table.items()]
    elif kind == "pipelines":
        cols = ["name", "stages", "remote", "description"]
        rows = [[n, " -> ".join(p.stages), p.remote or "", p.description] for n, p in table.items()]
    else:  # pragma: no cover - click restricts the choice
        raise ConfigError(f"unknown table kind '{kind}'")
    return cols, rows


def parse_sets(sets: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``("learning_rate=3e-4", "lora.r=8")`` → ``{"learning_rate": 3e-4, "lora": {"r": 8}}``.

    Values are read as TOML scalars/arrays when they parse (numbers, booleans, lists), else as strings.
    """
    import tomllib

    out: dict[str, Any] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE", "e.g. --set learning_rate=3e-4 --set lora.r=8")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        target = out
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is both a value and a section")
        target[parts[-1]] = value
    return out


def merge_overrides(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in layer.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merge_overrides(out[k], v)
            else:
                out[k] = v
    return out


ENV_OVERRIDES = "TRAINPOD_TRAINING__* (environment or env profile)"


def resolve_preset(catalog: Catalog, preset: str, settings_training: dict[str, Any],
                   sets: tuple[str, ...] | list[str] = (), flags: dict[str, Any] | None = None) -> TrainingConfig:
    """Preset tables < TRAINPOD_TRAINING__* (env/profile) < --set and other flags.

    An error names the layer at fault: the environment's overrides are checked on their own first, so a
    bad value given with ``--set`` is blamed on ``--set``, not on training.toml or the environment.
    """
    cli = merge_overrides(parse_sets(sets), flags or {})
    if not cli:
        return catalog.resolve(preset, settings_training, overrides_source=ENV_OVERRIDES)
    source = "--set" if sets else "--max-runtime/--max-cost/--spot"
    try:
        return catalog.resolve(preset, merge_overrides(settings_training, cli), overrides_source=source)
    except TrainpodError:
        if settings_training:  # raises, naming the environment, when its overrides are bad on their own
            catalog.resolve(preset, settings_training, overrides_source=ENV_OVERRIDES)
        raise


def show_preset(preset: str, *, config: str | None = None, profile: str | None = None,
                sets: tuple[str, ...] = ()) -> dict[str, Any]:
    from trainpod.settings import load_settings, unknown_env_vars

    settings = load_settings(profile, config=config)
    catalog = load_catalog(settings.config)
    cfg = resolve_preset(catalog, preset, settings.training, sets)
    return {
        "preset": preset,
        "source": catalog.source("presets", preset),
        "training": cfg.model_dump(mode="json"),
        "derived": {
            "world_size": cfg.world_size,
            "effective_batch_size": cfg.effective_batch_size,
            "precision": cfg.precision,
            "tokens_per_optimizer_step": cfg.effective_batch_size * cfg.sequence_length,
        },
        "settings": settings.redacted(),
        "warnings": [f"unknown environment variable {v}" for v in unknown_env_vars()],
    }


def validate_presets(names: tuple[str, ...], *, all_: bool, config: str | None = None, profile: str | None = None,
                     sets: tuple[str, ...] = (), remote: str | None = None) -> list[tuple[str, str | None]]:
    """Each preset resolved as ``launch`` would (settings, --set) and checked for ``remote`` (default: the
    preset's own) on this machine: hardware the backend cannot run here, packages that are not installed."""
    from trainpod import deps
    from trainpod.settings import load_settings

    settings = load_settings(profile, config=config)
    catalog = load_catalog(settings.config)
    if all_ or not names:
        names = tuple(catalog.presets)
    results: list[tuple[str, str | None]] = []
    for name in names:
        try:
            cfg = resolve_preset(catalog, name, settings.training, sets)
            target = remote or catalog.get("presets", name).remote
            deps.check_preset(name, target, device=cfg.hardware.device, hardware_name=cfg.hardware_name,
                              deepspeed=bool(cfg.deepspeed), uris=(cfg.dataset.path, settings.storage_uri))
            results.append((name, None))
        except TrainpodError as exc:
            results.append((name, exc.message + (f" (hint: {exc.hint})" if exc.hint else "")))
    return results
