"""Settings: environment variables, env profile files, secrets — in one module.

Precedence (highest first): CLI flags > environment variables > env profile file
(``--profile NAME`` / ``TRAINPOD_PROFILE`` → ``profiles/NAME.env``) > training.toml > defaults.

``TRAINPOD_*`` names map to fields; standard names (``RUNPOD_API_KEY``, ``AWS_*``, ``HF_TOKEN``) are
honoured. Nested overrides of the resolved training config use ``__``:
``TRAINPOD_TRAINING__LEARNING_RATE=3e-4`` or ``TRAINPOD_TRAINING__LORA__R=8``.
Secrets are ``SecretStr``: they print as ``***`` and must never be written to a profile file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainpod.contract import ENV_PROFILE, RUNTIME_VARS, SECRETS
from trainpod.errors import ConfigError, available, did_you_mean

log = logging.getLogger(__name__)

PROFILE_DIRS = (Path("profiles"), Path(__file__).resolve().parent / "_defaults")

# Names a profile file may never hold: they are secrets and belong in the environment
# (or a secret store), not in files that get committed or copied into images (trainpod.contract.SECRETS).
SECRET_FIELDS = tuple(SECRETS)


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def _state_home() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "trainpod"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRAINPOD_",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
        populate_by_name=True,
    )

    profile: str | None = None
    config: str | None = Field(default=None, description="training.toml to overlay on the defaults")
    log_level: str = "INFO"
    # where runs write: a local directory for local/docker runs, an s3:// prefix for remote runs
    output_dir: str = "runs"
    storage_uri: str | None = Field(default=None, description="s3://bucket/prefix for datasets, checkpoints, logs")
    state_dir: str = Field(default_factory=lambda: str(_state_home()))
    # images
    registry: str | None = None
    image_repository: str = "trainpod"
    registry_username: str | None = None
    registry_password: SecretStr | None = None
    # what RunPod gets to pull a private image: a read-only token (README "Security model"), not the push login
    registry_pull_username: str | None = None
    registry_pull_password: SecretStr | None = None
    base_image: str | None = None
    # where image builds fetch packages; when any is set, pip's own configuration is not read (images.pip_sources)
    build_index_url: str | None = None
    build_extra_index_urls: str | None = Field(default=None, description="space-separated index URLs")
    build_find_links: str | None = Field(default=None, description="space-separated wheel dirs or URLs")
    build_ca_bundle: str | None = None
    build_wheelhouse: str | None = None
    # multi-node rendezvous (torchrun c10d): the address every node reaches node 0 at
    master_addr: str = "127.0.0.1"
    # S3
    s3_endpoint_url: str | None = Field(
        default=None, validation_alias=_alias("TRAINPOD_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    )
    aws_region: str | None = Field(default=None, validation_alias=_alias("AWS_REGION", "AWS_DEFAULT_REGION"))
    aws_access_key_id: str | None = Field(default=None, validation_alias=_alias("AWS_ACCESS_KEY_ID"))
    aws_secret_access_key: SecretStr | None = Field(default=None, validation_alias=_alias("AWS_SECRET_ACCESS_KEY"))
    aws_session_token: SecretStr | None = Field(default=None, validation_alias=_alias("AWS_SESSION_TOKEN"))
    # run-scoped S3 credentials for pods (trainpod.credentials): AssumeRole on this role, else GetFederationToken
    sts_role_arn: str | None = None
    sts_endpoint_url: str | None = Field(default=None, description="STS endpoint (default: the S3 endpoint)")
    sts_max_session_seconds: int | None = Field(default=None, ge=900, description="cap on the session length")
    allow_long_lived_credentials: bool = Field(
        default=False, description="send the pod your own AWS keys when no STS can scope them (opt-in)")
    # RunPod
    runpod_api_key: SecretStr | None = Field(
        default=None, validation_alias=_alias("TRAINPOD_RUNPOD_API_KEY", "RUNPOD_API_KEY")
    )
    runpod_api_base_url: str | None = Field(
        default=None, validation_alias=_alias("TRAINPOD_RUNPOD_API_BASE_URL", "RUNPOD_API_BASE_URL")
    )
    runpod_cloud_type: str | None = None
    # TEST ONLY: let a CPU hardware profile with a runpod_gpu_type_id run on RunPod, so CI (no GPU) can drive
    # the whole pod chain with the CPU image standing in for the CUDA one. Never set it for real runs.
    runpod_cpu_stand_in: bool = False
    # model hubs / trackers
    hf_token: SecretStr | None = Field(default=None, validation_alias=_alias("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"))
    wandb_api_key: SecretStr | None = Field(default=None, validation_alias=_alias("WANDB_API_KEY"))
    # nested overrides of the resolved training config
    training: dict[str, Any] = Field(default_factory=dict)

    # ---------------------------------------------------------------- helpers
    def secrets(self) -> dict[str, str]:
        """Secret values that are set, by field name (for redaction and for container env)."""
        out = {}
        for name in SECRET_FIELDS:
            val = getattr(self, name)
            if val is not None and val.get_secret_value():
                out[name] = val.get_secret_value()
        return out

    def redacted(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for name in SECRET_FIELDS:
            if data.get(name) is not None:
                data[name] = "***"
        return data

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser()


def _field_env_names() -> dict[str, str]:
    """Every environment name a setting answers to → field name."""
    names: dict[str, str] = {}
    for field_name, field in Settings.model_fields.items():
        names[f"TRAINPOD_{field_name.upper()}"] = field_name
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                names[str(choice).upper()] = field_name
    return names


def find_profile(name: str) -> Path:
    candidate = Path(name)
    if candidate.suffix == ".env" and candidate.is_file():
        return candidate
    for d in PROFILE_DIRS:
        p = d / f"{name}.env"
        if p.is_file():
            return p
    choices = sorted({p.stem for d in PROFILE_DIRS if d.is_dir() for p in d.glob("*.env")})
    raise ConfigError(
        f"env profile '{name}' not found (looked for profiles/{name}.env){did_you_mean(name, choices)}",
        f"available profiles: {available(choices)}",
    )


def read_profile(path: Path) -> dict[str, str]:
    """Parse a ``KEY=value`` profile file, refusing unknown keys and secrets with file:line errors."""
    known = _field_env_names()
    values: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        if "=" not in line:
            raise ConfigError(f"{path}:{lineno}: expected KEY=value", f"line reads: {raw.strip()!r}")
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        upper = key.upper()
        field = known.get(upper)
        if field is None and not upper.startswith("TRAINPOD_TRAINING__"):
            raise ConfigError(
                f"{path}:{lineno}: unknown setting '{key}'{did_you_mean(upper, known)}",
                "profile files hold TRAINPOD_* settings; see `trainpod show --settings`",
            )
        if field in SECRET_FIELDS:
            raise ConfigError(
                f"{path}:{lineno}: '{key}' is a secret and must not be stored in a profile file",
                f"export {key} in your shell or secret manager instead; profile files are committed and shipped",
            )
        values[upper] = value
    return values


def unknown_env_vars(environ: dict[str, str] | None = None) -> list[str]:
    """``TRAINPOD_*`` variables that match no setting (typos), with a suggestion each."""
    environ = dict(os.environ if environ is None else environ)
    known = _field_env_names()
    out = []
    for key in environ:
        up = key.upper()
        if not up.startswith("TRAINPOD_") or up in known or up in RUNTIME_VARS:
            continue
        if up.startswith(("TRAINPOD_TRAINING__", "TRAINPOD_ENGINE_")):  # ENGINE_*: scripts/docker-up.sh's
            continue
        out.append(f"{key}{did_you_mean(up, known)}")
    return out


_warned: set[str] = set()


def warn_unknown_env_vars() -> None:
    """Log each misspelt ``TRAINPOD_*`` variable once per process (every command that reads settings)."""
    for item in unknown_env_vars():
        if item not in _warned:
            _warned.add(item)
            log.warning("ignoring unknown environment variable %s", item)


def load_settings(profile: str | None = None, **cli: Any) -> Settings:
    """Build settings: CLI flags (``cli``, None = not given) > env > profile file > defaults."""
    warn_unknown_env_vars()
    profile = profile or os.environ.get(ENV_PROFILE)
    file_values: dict[str, Any] = {}
    if profile:
        path = find_profile(profile)
        known = _field_env_names()
        for key, value in read_profile(path).items():
            if key.startswith("TRAINPOD_TRAINING__"):
                _nest(file_values.setdefault("training", {}), key[len("TRAINPOD_TRAINING__"):], value)
            else:
                file_values[known[key]] = value
    overrides = {k: v for k, v in cli.items() if v is not None}
    try:
        env_settings = Settings()  # environment only (pydantic-settings reads os.environ)
    except ValidationError as exc:
        raise _settings_error(exc, "environment") from None
    env_set = env_settings.model_fields_set
    merged: dict[str, Any] = {}
    merged.update(file_values)
    for name in env_set:
        if name == "training":
            merged["training"] = _deep_merge(file_values.get("training", {}), env_settings.training)
        else:
            merged[name] = getattr(env_settings, name)
    merged.update(overrides)
    if profile:
        merged["profile"] = profile
    try:
        # merged already holds env values over profile values; as init kwargs they win over a
        # second read of the environment, which can only fill fields that nobody set.
        return Settings(**merged)
    except ValidationError as exc:
        raise _settings_error(exc, "settings") from None


def _nest(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = [p.lower() for p in dotted.split("__") if p]
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _settings_error(exc: ValidationError, where: str) -> ConfigError:
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"{where}: TRAINPOD_{loc.upper()}: {err['msg']}")  # values are never echoed
    return ConfigError("\n".join(lines))
