"""What a remote pod may touch: short-lived S3 credentials scoped to one run, and the other secrets it gets.

A RunPod pod runs on someone else's host (COMMUNITY cloud), and pod env values can be read back through
RunPod's API. So the pod never receives the user's long-lived AWS keys. At submit (never in the pure plan)
:func:`mint` asks STS for a session whose *session policy* allows exactly:

* ``s3:GetObject`` under the run's dataset prefix (and a pipeline stage's previous output),
* ``s3:GetObject``/``PutObject``/``DeleteObject`` (+ multipart) under the run's output prefix,
* ``s3:ListBucket`` on those buckets only for keys under those prefixes (``s3:prefix`` condition),

and nothing else. STS intersects it with the caller's own rights (the role's for ``AssumeRole``, the IAM
user's for ``GetFederationToken``), so the session can never do more than the session policy says.
Its duration is the run's max runtime + stop grace + a start-up allowance, capped by what STS allows.

The pod stops itself (with a complete checkpoint, through the pod supervisor's watchdog) shortly before
the session expires; the CLI that follows the run then rents a new pod with freshly minted credentials
(``RunPodBackend.relaunch``), which resumes from that checkpoint. See README "Security model".

boto3 is imported only inside :func:`mint`; everything else is pure and used by ``plan()``/``--dry-run``.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from trainpod.contract import SECRETS
from trainpod.errors import TrainpodError
from trainpod.settings import Settings
from trainpod.spec import TrainerWorkload

# STS limits (AWS documentation): AssumeRole up to the role's MaxSessionDuration (1 h by default, at most
# 12 h); GetFederationToken up to 36 h; both at least 15 min. A session policy is at most 2048 packed bytes.
STS_MIN_SECONDS = 900
ASSUME_ROLE_MAX_SECONDS = 12 * 3600
ASSUME_ROLE_DEFAULT_MAX_SECONDS = 3600
FEDERATION_MAX_SECONDS = 36 * 3600
STARTUP_ALLOWANCE_SECONDS = 600  # image pull + dataset sync before the pod's runtime clock starts
# the pod stops this long (plus its stop grace) before its credentials expire, so the last checkpoint
# is uploaded while they still work
EXPIRY_MARGIN_SECONDS = 120
EXPIRES_ENV = "TRAINPOD_CREDENTIALS_EXPIRE_AT"  # unix time the pod's S3 session ends (not a secret)
EXPIRY_REASON = "S3 session expiring"  # in the pod's stop reason (POD_EXIT): the CLI renews with a new pod

READ_ACTIONS = ("s3:GetObject",)
WRITE_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                 "s3:ListMultipartUploadParts")
S3_ENV = ("AWS_ACCESS_KEY_ID", SECRETS["aws_secret_access_key"], SECRETS["aws_session_token"])


@dataclass(frozen=True)
class Scope:
    """The S3 prefixes (``s3://bucket/key/prefix``) a run reads and writes."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]


def run_scope(spec: Any) -> Scope:
    """What a RunSpec reads (its data, a pipeline stage's input) and writes (its output that outlives the pod: a
    custom job's S3 mirror) on S3."""
    reads, writes = [spec.storage.dataset, spec.init_from], [spec.output_uri]
    s3 = [u for u in reads if u and u.startswith("s3://")]
    return Scope(tuple(dict.fromkeys(_norm(u) for u in s3)),
                 tuple(dict.fromkeys(_norm(u) for u in writes if u and u.startswith("s3://"))))


def _norm(uri: str) -> str:
    return uri.rstrip("/")


def _split(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b/``); a bucket root -> (``bucket``, ``""``)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    key = key.strip("/")
    return bucket, (key + "/") if key else ""


def session_policy(scope: Scope) -> dict[str, Any]:
    """The session policy document: exactly the run's prefixes, nothing else (see the module docstring).

    Object ARNs end in ``prefix/*`` (never ``prefix*``: ``runs/r1*`` would also match ``runs/r10/``), and the
    list condition names ``prefix``, ``prefix/`` and ``prefix/*`` only, so listing the bucket root or another prefix
    is denied.
    """
    statements: list[dict[str, Any]] = []
    if scope.reads:
        statements.append({"Sid": "ReadDataset", "Effect": "Allow", "Action": list(READ_ACTIONS),
                           "Resource": [_object_arn(u) for u in scope.reads]})
    if scope.writes:
        statements.append({"Sid": "ReadWriteRunOutput", "Effect": "Allow", "Action": list(WRITE_ACTIONS),
                           "Resource": [_object_arn(u) for u in scope.writes]})
    by_bucket: dict[str, list[str]] = {}
    for uri in (*scope.reads, *scope.writes):
        bucket, key = _split(uri)
        # trainpod lists a prefix as ``prefix`` (no slash: it also finds one object of that name), ``prefix/`` and
        # ``prefix/sub``; the bare form also returns keys of siblings that share the string (names, not contents)
        by_bucket.setdefault(bucket, []).extend([key.rstrip("/"), key, key + "*"] if key else ["*"])
    for i, (bucket, prefixes) in enumerate(sorted(by_bucket.items())):
        statements.append({"Sid": f"ListRunPrefixes{i}", "Effect": "Allow", "Action": ["s3:ListBucket"],
                           "Resource": [f"arn:aws:s3:::{bucket}"],
                           "Condition": {"StringLike": {"s3:prefix": list(dict.fromkeys(prefixes))}}})
    return {"Version": "2012-10-17", "Statement": statements}


def _object_arn(uri: str) -> str:
    bucket, key = _split(uri)
    return f"arn:aws:s3:::{bucket}/{key}*"


def _runtime_seconds(spec: Any) -> float | None:
    limits = spec.workload
    return None if limits.max_runtime_minutes is None else limits.max_runtime_minutes * 60


def api_of(settings: Settings) -> str:
    return "AssumeRole" if settings.sts_role_arn else "GetFederationToken"


def max_session_seconds(settings: Settings) -> int:
    """What STS allows for the configured API (``TRAINPOD_STS_MAX_SESSION_SECONDS`` lowers it)."""
    cap = ASSUME_ROLE_MAX_SECONDS if settings.sts_role_arn else FEDERATION_MAX_SECONDS
    if settings.sts_max_session_seconds is not None:
        cap = min(cap, settings.sts_max_session_seconds)
    return max(STS_MIN_SECONDS, cap)


def session_seconds(spec: Any, settings: Settings) -> int:
    """max runtime + stop grace + start-up allowance, within STS's bounds (no max runtime: the cap)."""
    cap = max_session_seconds(settings)
    runtime = _runtime_seconds(spec)
    if runtime is None:
        return cap
    wanted = math.ceil(runtime + spec.stop_grace_seconds + STARTUP_ALLOWANCE_SECONDS)
    return max(STS_MIN_SECONDS, min(wanted, cap))


def long_lived_allowed(settings: Settings) -> bool:
    return bool(settings.allow_long_lived_credentials)


def hf_token_needed(spec: Any) -> bool:
    """The pod needs HF_TOKEN only for a base model marked gated/private (``gated = true`` on the expert)."""
    return isinstance(spec.workload, TrainerWorkload) and spec.config.expert.gated


def describe(spec: Any, settings: Settings) -> list[dict[str, Any]]:
    """What the pod will receive, by name and scope, never values: plain data for the plan (``credentials``)."""
    scope = run_scope(spec)
    where = ", ".join([*(f"read {u}/" for u in scope.reads), *(f"read/write/delete {u}/" for u in scope.writes)])
    out: list[dict[str, Any]] = []
    if long_lived_allowed(settings):
        names = [n for n, f in zip(S3_ENV, ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"),
                                   strict=True) if getattr(settings, f) is not None]
        for name in names:
            out.append({"name": name, "kind": "long-lived",
                        "scope": "WARNING: your own long-lived AWS credentials (everything they can reach)",
                        "expires": None})
    else:
        seconds = session_seconds(spec, settings)
        via = (f"STS AssumeRole {settings.sts_role_arn}" if settings.sts_role_arn else "STS GetFederationToken")
        for name in S3_ENV:
            out.append({"name": name, "kind": "sts-session", "scope": f"{via}, session policy: {where}; "
                        "list only those prefixes", "expires": f"{seconds} s after it is minted at submit"})
        out.append({"name": EXPIRES_ENV, "kind": "info", "scope": "when the S3 session ends (not a secret)",
                    "expires": None})
    if settings.hf_token is not None and hf_token_needed(spec):
        base = spec.config.expert.base_model
        out.append({"name": "HF_TOKEN", "kind": "long-lived", "scope": f"Hugging Face token: the base model "
                    f"{base} is gated/private (expert gated = true)", "expires": None})
    if settings.wandb_api_key is not None:
        out.append({"name": "WANDB_API_KEY", "kind": "long-lived", "scope": "Weights & Biases API key",
                    "expires": None})
    user, pull = registry_auth(settings)
    if user is not None:
        out.append({"name": "registry auth (stored at RunPod)", "kind": "registry",
                    "scope": (f"pull-only token of {user} (TRAINPOD_REGISTRY_PULL_USERNAME)" if pull else
                              f"WARNING: the push credentials of {user}; set TRAINPOD_REGISTRY_PULL_USERNAME/"
                              "TRAINPOD_REGISTRY_PULL_PASSWORD to a read-only token (see README)"),
                    "expires": None})
    return out


def pod_secret_names(spec: Any, settings: Settings) -> list[str]:
    """Env names the pod gets whose values are filled in at submit (shown as ``***`` in the plan)."""
    return [c["name"] for c in describe(spec, settings) if c["kind"] in ("sts-session", "long-lived", "info")]


def warnings(spec: Any, settings: Settings) -> list[str]:
    return [f"{c['name']}: {c['scope']}" for c in describe(spec, settings) if c["scope"].startswith("WARNING")]


def registry_auth(settings: Settings) -> tuple[str | None, bool]:
    """(user whose credentials RunPod gets for pulling the image, whether they are the pull-only ones)."""
    if settings.registry_pull_username and settings.registry_pull_password:
        return settings.registry_pull_username, True
    if settings.registry_username and settings.registry_password:
        return settings.registry_username, False
    return None, False


def registry_secret(settings: Settings) -> tuple[str, SecretStr] | None:
    """(username, password) to store at RunPod: the pull-only token when configured."""
    user, pull = registry_auth(settings)
    if user is None:
        return None
    secret = settings.registry_pull_password if pull else settings.registry_password
    assert secret is not None
    return user, secret


# ------------------------------------------------------------------------------------------- minting
@dataclass(frozen=True)
class Session:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: float  # unix time
    api: str
    seconds: int

    def __repr__(self) -> str:  # never show the values
        return f"Session(api={self.api!r}, seconds={self.seconds}, expiration={self.expiration:.0f})"

    def env(self) -> dict[str, str]:
        key_id, secret, token = S3_ENV
        return {key_id: self.access_key_id, secret: self.secret_access_key, token: self.session_token,
                EXPIRES_ENV: f"{self.expiration:.0f}"}


def sts_endpoint(settings: Settings) -> str | None:
    """``TRAINPOD_STS_ENDPOINT_URL``, else an S3-compatible endpoint (MinIO and moto serve STS there), else AWS's
    (also when the S3 endpoint is an AWS one, e.g. ``https://s3.eu-west-1.amazonaws.com``)."""
    if settings.sts_endpoint_url:
        return settings.sts_endpoint_url
    s3 = settings.s3_endpoint_url
    host = urlsplit(s3).hostname or "" if s3 else ""
    return None if not s3 or host.endswith((".amazonaws.com", ".amazonaws.com.cn")) else s3


def session_name(run_id: str) -> str:
    """A valid RoleSessionName/Name (2–32 chars of ``[\\w+=,.@-]``) that names the run."""
    name = re.sub(r"[^\w+=,.@-]", "-", run_id)
    return "tp-" + name[-29:]  # the run id's end is its unique part (timestamp + random suffix)


def mint(spec: Any, settings: Settings) -> Session:
    """Ask STS for the run's session (AssumeRole with ``TRAINPOD_STS_ROLE_ARN``, else GetFederationToken).

    Raises a :class:`TrainpodError` naming the endpoint and the way out when the endpoint has no STS or
    refuses; the caller decides about ``--allow-long-lived-credentials`` *before* calling this."""
    import boto3
    from botocore import exceptions as bex
    from botocore.config import Config

    from trainpod.redact import redact_text, register_secret

    scope = run_scope(spec)
    if not scope.writes:
        raise TrainpodError(f"run {spec.run_id}: its output is not on s3://, so there is nothing to scope "
                            "S3 credentials to", "set TRAINPOD_STORAGE_URI=s3://BUCKET/prefix")
    policy = json.dumps(session_policy(scope), separators=(",", ":"))
    seconds = session_seconds(spec, settings)
    endpoint = sts_endpoint(settings)
    secret = settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
    token = settings.aws_session_token.get_secret_value() if settings.aws_session_token else None
    key_id = settings.aws_access_key_id
    client = boto3.session.Session(
        aws_access_key_id=key_id if secret else None, aws_secret_access_key=secret if key_id else None,
        aws_session_token=token if (key_id and secret) else None,
        region_name=settings.aws_region or "us-east-1",
    ).client("sts", endpoint_url=endpoint or None,
             config=Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=10, read_timeout=30))
    api = api_of(settings)
    where = endpoint or "AWS STS"

    def call(duration: int) -> dict[str, Any]:
        if settings.sts_role_arn:
            return client.assume_role(RoleArn=settings.sts_role_arn, RoleSessionName=session_name(spec.run_id),
                                      Policy=policy, DurationSeconds=duration)
        return client.get_federation_token(Name=session_name(spec.run_id), Policy=policy,
                                           DurationSeconds=duration)

    hint = ("set TRAINPOD_STS_ENDPOINT_URL to an STS that issues credentials for this S3 endpoint (and "
            "TRAINPOD_STS_ROLE_ARN for AssumeRole), or pass --allow-long-lived-credentials to send the pod your own "
            "keys (whole-bucket access, no expiry; the plan warns)")
    try:
        try:
            reply = call(seconds)
        except bex.ClientError as exc:
            msg = str(exc.response.get("Error", {}).get("Message", ""))
            # a role's MaxSessionDuration (default 1 h), or role chaining's 1 h limit, is below what the run needs:
            # take the hour every role allows (the pod stops before it expires and the CLI renews the session)
            if settings.sts_role_arn and "DurationSeconds exceeds" in msg and seconds > ASSUME_ROLE_DEFAULT_MAX_SECONDS:
                seconds = ASSUME_ROLE_DEFAULT_MAX_SECONDS
                reply = call(seconds)
            else:
                raise
    except bex.ClientError as exc:
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = err.get("Code") or status
        if status in (404, 405, 501) or code in ("NotImplemented", "InvalidAction", "UnknownOperation"):
            raise TrainpodError(f"{where} has no STS ({api} answered {code}): trainpod cannot give the pod "
                                "short-lived, run-scoped S3 credentials", hint) from None
        temporary = ("GetFederationToken needs long-term IAM user keys: with temporary credentials (SSO, a role "
                     "session) set TRAINPOD_STS_ROLE_ARN to a role that can reach the bucket; "
                     if token and not settings.sts_role_arn else "")
        raise TrainpodError(f"{where}: STS {api} refused to mint the run's credentials ({code}: "
                            f"{redact_text(str(err.get('Message', '')))})",
                            temporary + "the calling credentials need sts:AssumeRole on TRAINPOD_STS_ROLE_ARN (or "
                            "sts:GetFederationToken) plus the S3 rights the session policy names; " + hint) from None
    except (bex.EndpointConnectionError, bex.ConnectTimeoutError) as exc:
        raise TrainpodError(f"cannot reach STS at {where} ({type(exc).__name__})", hint) from None
    except (bex.NoCredentialsError, bex.PartialCredentialsError):
        raise TrainpodError("no AWS credentials to mint the pod's S3 session with",
                            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
    except bex.BotoCoreError as exc:
        raise TrainpodError(f"STS {api} at {where} failed: {type(exc).__name__}", hint) from None
    creds = reply.get("Credentials") or {}
    try:
        expiration = creds["Expiration"]
        exp = (expiration if isinstance(expiration, datetime)
               else datetime.fromisoformat(str(expiration).replace("Z", "+00:00")))
        if exp.tzinfo is None:
            exp = exp.replace(tzinfo=timezone.utc)
        session = Session(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"], exp.timestamp(),
                          api, seconds)
    except (KeyError, TypeError, ValueError):
        raise TrainpodError(f"{where}: STS {api} answered without usable credentials", hint) from None
    register_secret(session.secret_access_key, session.session_token)
    if session.expiration < time.time() + STS_MIN_SECONDS / 2:
        raise TrainpodError(f"{where}: STS {api} returned credentials that expire at {exp.isoformat()}, too soon "
                            "to run anything", "check the clock of this machine and of the STS endpoint")
    return session


def pod_s3_env(spec: Any, settings: Settings) -> dict[str, str]:
    """The S3 credentials the pod gets: a freshly minted run session, or (opt-in) the user's own keys."""
    if long_lived_allowed(settings):
        out = {}
        for name, field in zip(S3_ENV, ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"),
                               strict=True):
            val = getattr(settings, field)
            if val is not None:
                out[name] = val if isinstance(val, str) else val.get_secret_value()
        return out
    return mint(spec, settings).env()


def stop_before_expiry(environ: Any, stop_grace_seconds: float, now: float) -> tuple[float, str] | None:
    """(seconds from ``now``, reason) at which a pod stops so its last checkpoint is uploaded while its S3
    session still works: expiry − stop grace − margin. None without ``TRAINPOD_CREDENTIALS_EXPIRE_AT``."""
    at = expires_at(environ)
    if at is None:
        return None
    when = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return max(0.0, at - now - stop_grace_seconds - EXPIRY_MARGIN_SECONDS), f"{EXPIRY_REASON} at {when}"


def expires_at(environ: Any) -> float | None:
    """The pod's ``TRAINPOD_CREDENTIALS_EXPIRE_AT`` as unix time (None when unset or unreadable)."""
    raw = environ.get(EXPIRES_ENV)
    try:
        return float(raw) if raw else None
    except ValueError:
        return None
