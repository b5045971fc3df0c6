"""Load ``training.toml`` files into a validated :class:`Catalog` and resolve presets.

The packaged defaults are always loaded first. A user file (``--config FILE``, or
``./profiles/training.toml`` in the working directory) overlays them entry by entry: a user's
``[presets.mine]`` is added, a user's ``[hardware.cpu]`` replaces the packaged one. Every error names
the file, the table and the key.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainpod.config.schema import (
    TABLE_MODELS,
    Dataset,
    Expert,
    Hardware,
    Hyperparameters,
    Job,
    Lora,
    Pipeline,
    Preset,
    TrainingConfig,
    resolve_precision,
)
from trainpod.errors import ConfigError, TrainpodError, available, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULTS_DIR = Path(__file__).resolve().parent.parent / "_defaults"
DEFAULT_TOML = DEFAULTS_DIR / "training.toml"
USER_TOML = Path("profiles") / "training.toml"
# table kinds later issues add ([jobs.*], [pipelines.*]) are accepted by name only once implemented
KNOWN_TABLES = tuple(TABLE_MODELS)

_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; syntax errors become ``file:line:col: message``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{_display(path)}: file not found", "check the --config path") from None
    except OSError as exc:
        raise ConfigError(f"{_display(path)}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{_display(path)}:{line}: not valid UTF-8", "save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS.search(msg)
        if m:
            line, col = m.groups()
            msg = _TOML_POS.sub("", msg).strip()
            src = text.splitlines()[int(line) - 1] if int(line) - 1 < len(text.splitlines()) else ""
            raise ConfigError(
                f"{_display(path)}:{line}:{col}: TOML syntax error: {msg}",
                f"line {line} reads: {src.strip()!r}" if src.strip() else None,
            ) from None
        raise ConfigError(f"{_display(path)}: TOML syntax error: {msg}") from None


def format_validation_error(exc: ValidationError, where: str, model: type) -> ConfigError:
    """Turn a pydantic error into one message naming ``file: table.entry.key``."""
    lines = []
    fields = list(getattr(model, "model_fields", {}))
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{where}.{loc}" if loc else where
        if err["type"] == "extra_forbidden":
            bad = str(err["loc"][-1])
            lines.append(f"{key}: unknown key '{bad}'{did_you_mean(bad, fields)}")
        elif err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
            lines.append(f"{key}: {msg}{shown}")
    return ConfigError("\n".join(lines))


@dataclass
class Catalog:
    """Every table of the merged configuration, validated, with the file each entry came from."""

    hardware: dict[str, Hardware] = field(default_factory=dict)
    experts: dict[str, Expert] = field(default_factory=dict)
    lora: dict[str, Lora] = field(default_factory=dict)
    hyperparameters: dict[str, Hyperparameters] = field(default_factory=dict)
    datasets: dict[str, Dataset] = field(default_factory=dict)
    presets: dict[str, Preset] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    sources: dict[tuple[str, str], Path] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def table(self, kind: str) -> dict[str, Any]:
        return getattr(self, kind)

    def source(self, kind: str, name: str) -> str:
        path = self.sources.get((kind, name))
        return _display(path) if path else "<settings>"

    def get(self, kind: str, name: str, *, referenced_by: str | None = None) -> Any:
        entries = self.table(kind)
        if name in entries:
            return entries[name]
        who = f"{referenced_by}: " if referenced_by else ""
        raise ConfigError(
            f"{who}unknown {kind} entry '{name}'{did_you_mean(name, entries)}",
            f"available {kind}: {available(entries)}",
        )

    # ------------------------------------------------------------------ resolution
    def resolve(self, preset_name: str, overrides: dict[str, Any] | None = None, *,
                overrides_source: str = "--set / TRAINPOD_TRAINING__*") -> TrainingConfig:
        """Resolve a preset into a cross-checked :class:`TrainingConfig`.

        ``overrides`` are flat or nested keys from settings (``TRAINPOD_TRAINING__LEARNING_RATE``) or
        CLI flags; they win over the preset's own ``overrides`` table, which wins over the tables.
        """
        preset = self.get("presets", preset_name)
        where = f"{self.source('presets', preset_name)}: presets.{preset_name}"
        refs = {}
        for kind, attr in (
            ("experts", "expert"),
            ("hardware", "hardware"),
            ("datasets", "dataset"),
            ("hyperparameters", "hyperparameters"),
            ("lora", "lora"),
        ):
            refs[attr] = self.get(kind, getattr(preset, attr), referenced_by=f"{where}.{attr}")
        hw: Hardware = refs["hardware"]
        base: dict[str, Any] = {
            "preset": preset_name,
            "expert_name": preset.expert,
            "expert": refs["expert"].model_dump(),
            "hardware_name": preset.hardware,
            "hardware": hw.model_dump(),
            "dataset_name": preset.dataset,
            "dataset": refs["dataset"].model_dump(),
            "hyperparameters": refs["hyperparameters"].model_dump(),
            "lora_name": preset.lora,
            "lora": refs["lora"].model_dump(),
            "finetune": preset.finetune,
            "sequence_length": preset.sequence_length,
            "batch_size": preset.batch_size,
            "gradient_accumulation": preset.gradient_accumulation or hw.recommended_gradient_accumulation,
            "precision": preset.precision,
            "gradient_checkpointing": preset.gradient_checkpointing,
            "packing": preset.packing,
            "deepspeed": preset.deepspeed,
            "max_runtime_minutes": preset.max_runtime_minutes,
            "max_cost_usd": preset.max_cost_usd,
            "spot": preset.spot,
        }
        apply_overrides(base, preset.overrides, f"{where}.overrides")
        apply_overrides(base, overrides or {}, overrides_source)
        try:
            base["precision"] = resolve_precision(base["precision"], Hardware.model_validate(base["hardware"]))
            return TrainingConfig.model_validate(base)
        except ValidationError as exc:
            if overrides and self._valid_alone(preset_name):  # the preset is fine: the overrides broke it
                where = f"{overrides_source}: presets.{preset_name}"
            raise format_validation_error(exc, where, TrainingConfig) from None

    def _valid_alone(self, preset_name: str) -> bool:
        try:
            self.resolve(preset_name)
        except TrainpodError:
            return False
        return True


_OVERRIDABLE_SECTIONS = ("hyperparameters", "lora", "hardware", "expert", "dataset")


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    """Apply ``{"learning_rate": 3e-4, "lora": {"r": 8}}``-style overrides in place.

    A flat key is looked up first at the top level of the training config, then in the
    hyperparameters and lora sections; unknown keys are errors with a hint.
    """
    for key, value in overrides.items():
        norm = key.lower().replace("-", "_")
        if norm in _OVERRIDABLE_SECTIONS and isinstance(value, dict):
            section = base[norm]
            for sub, subval in value.items():
                sub = sub.lower().replace("-", "_")
                if sub not in section:
                    raise ConfigError(f"{where}.{norm}: unknown key '{sub}'{did_you_mean(sub, section)}")
                section[sub] = subval
            continue
        if norm in base and norm not in _OVERRIDABLE_SECTIONS and not norm.endswith("_name") and norm != "preset":
            base[norm] = value
            continue
        for section in ("hyperparameters", "lora"):
            if norm in base[section]:
                base[section][norm] = value
                break
        else:
            choices = [k for k in base if k not in _OVERRIDABLE_SECTIONS] + list(base["hyperparameters"])
            raise ConfigError(
                f"{where}: unknown override '{key}'{did_you_mean(norm, choices)}",
                "overrides take training keys (batch_size, learning_rate, ...) or sections "
                "(lora.r, hyperparameters.seed)",
            )


def _merge_file(catalog: Catalog, path: Path, data: dict[str, Any]) -> None:
    shown = _display(path)
    for table, entries in data.items():
        if table not in TABLE_MODELS:
            raise ConfigError(
                f"{shown}: unknown table [{table}]{did_you_mean(table, KNOWN_TABLES)}",
                f"known tables: {', '.join(KNOWN_TABLES)}",
            )
        if not isinstance(entries, dict) or any(not isinstance(v, dict) for v in entries.values()):
            raise ConfigError(
                f"{shown}: [{table}] must contain named sub-tables like [{table}.NAME]",
                f"write [{table}.my-name] and put the keys under it",
            )
        model = TABLE_MODELS[table]
        for name, raw in entries.items():
            where = f"{shown}: {table}.{name}"
            raw = dict(raw)
            if table == "datasets" and "path" in raw and isinstance(raw["path"], str):
                raw["path"] = _resolve_local(raw["path"], path.parent)
            if table == "jobs":  # project and data directories are relative to the file that names them
                for key in ("project_dir", "data"):
                    if isinstance(raw.get(key), str):
                        raw[key] = _resolve_local(raw[key], path.parent)
            try:
                entry = model.model_validate(raw)
            except ValidationError as exc:
                raise format_validation_error(exc, where, model) from None
            catalog.table(table)[name] = entry
            catalog.sources[(table, name)] = path
    catalog.files.append(path)


def _resolve_local(p: str, base: Path) -> str:
    if p.startswith("s3://") or "://" in p:
        return p
    path = Path(os.path.expanduser(p))
    return str(path if path.is_absolute() else (base / path).resolve())


def load_catalog(config: str | os.PathLike[str] | None = None, *, use_cwd: bool = True) -> Catalog:
    """Load packaged defaults, then overlay ``config`` (or ``./profiles/training.toml``)."""
    catalog = Catalog()
    _merge_file(catalog, DEFAULT_TOML, read_toml(DEFAULT_TOML))
    user: Path | None = None
    if config is not None:
        user = Path(config)
    elif use_cwd and USER_TOML.is_file() and USER_TOML.resolve() != DEFAULT_TOML.resolve():
        user = USER_TOML
    if user is not None:
        _merge_file(catalog, user, read_toml(user))
    for name, preset in catalog.presets.items():
        if preset.deepspeed and not (DEFAULTS_DIR / "deepspeed" / f"{preset.deepspeed}.json").is_file():
            where = f"{catalog.source('presets', name)}: presets.{name}.deepspeed"
            choices = [p.stem for p in (DEFAULTS_DIR / "deepspeed").glob("*.json")]
            raise ConfigError(
                f"{where}: unknown DeepSpeed config '{preset.deepspeed}'{did_you_mean(preset.deepspeed, choices)}",
                f"available: {available(choices)} (profiles/deepspeed/*.json)",
            )
    return catalog
