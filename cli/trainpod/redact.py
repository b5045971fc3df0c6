"""Secret redaction for anything that gets printed, logged, or written to disk.

Two mechanisms: structured data never holds secret values in the first place (plans carry the
*names* of secret variables), and free text (provider error messages, logs, exceptions) is passed
through :func:`redact_text`, which replaces every known secret value with ``***``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from trainpod.contract import SECRETS

REDACTED = "***"

# Environment names whose values are secrets (the contract's table, plus the aliases Settings reads them from).
# Anything matching these suffixes counts as well.
SECRET_ENV_NAMES = frozenset({*SECRETS.values(), "TRAINPOD_RUNPOD_API_KEY", "HUGGING_FACE_HUB_TOKEN"})
_SECRET_SUFFIXES = ("_API_KEY", "_SECRET_ACCESS_KEY", "_TOKEN", "_PASSWORD", "_SECRET")
_MIN_LEN = 4  # shorter values would redact ordinary words

_extra: set[str] = set()


def is_secret_name(name: str) -> bool:
    up = name.upper()
    return up in SECRET_ENV_NAMES or up.endswith(_SECRET_SUFFIXES)


def register_secret(*values: str | None) -> None:
    """Add secret values (e.g. a pod-scoped key made at run time) to the redaction set."""
    for v in values:
        if v and len(v) >= _MIN_LEN:
            _extra.add(v)


def secret_values(environ: Mapping[str, str] | None = None) -> set[str]:
    env = os.environ if environ is None else environ
    vals = {v for k, v in env.items() if is_secret_name(k) and v and len(v) >= _MIN_LEN}
    return vals | _extra


def redact_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """Replace every secret value (longest first) with ``***``."""
    if not text:
        return text
    vals = sorted(set(secrets) if secrets is not None else secret_values(), key=len, reverse=True)
    for v in vals:
        if v in text:
            text = text.replace(v, REDACTED)
    return text


def redact_mapping(env: Mapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in env.items()}


class RedactingFilter(logging.Filter):
    """Logging filter that redacts secret values from every record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = redact_text(msg)
        if red != msg:
            record.msg, record.args = red, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    target = logger or logging.getLogger()
    for h in target.handlers or []:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
