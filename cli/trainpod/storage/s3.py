"""The S3 client (one per settings, sized to the workers), the preflight check, and S3's errors turned into
messages that name the bucket and the setting to fix, with bounded retries. boto3 loads lazily."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from trainpod.errors import TrainpodError
from trainpod.storage.uri import DEFAULT_WORKERS, is_s3, log, parse_s3_uri

if TYPE_CHECKING:
    from trainpod.settings import Settings


MULTIPART_THRESHOLD = 32 * 1024 * 1024
MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
MULTIPART_CONCURRENCY = 16
FILE_ATTEMPTS = 4  # per-file retries on top of botocore's per-request retries


# ======================================================================================= S3 client
_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    from trainpod.settings import load_settings

    return load_settings()


def _retry_config() -> dict[str, Any]:
    mode = os.environ.get("AWS_RETRY_MODE") or "standard"
    try:
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 8)
    except ValueError:
        raise TrainpodError("AWS_MAX_ATTEMPTS must be an integer", "e.g. AWS_MAX_ATTEMPTS=8") from None
    return {"mode": mode, "max_attempts": max(1, attempts)}


def s3_client(settings: Settings | None = None, *, workers: int = DEFAULT_WORKERS, quick: bool = False) -> Any:
    """A boto3 S3 client from settings (endpoint, region, keys) or the standard credential chain.

    Clients are thread-safe and expensive to build (~50 ms), so one is cached per configuration.
    ``quick``: short timeouts and no retries, for :func:`preflight` only; transfers keep their retries.
    """
    s = _settings(settings)
    key_id = s.aws_access_key_id
    secret = s.aws_secret_access_key.get_secret_value() if s.aws_secret_access_key else None
    token = s.aws_session_token.get_secret_value() if s.aws_session_token else None
    retries = {"mode": "standard", "max_attempts": 1} if quick else _retry_config()
    cache_key = (s.s3_endpoint_url, s.aws_region, key_id, hashlib.sha256(f"{secret}|{token}".encode()).hexdigest(),
                 workers, tuple(sorted(retries.items())), quick)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is not None:
            return client
        from trainpod import deps

        deps.require("s3")
        import boto3
        from botocore.config import Config

        config = Config(
            retries=retries,  # type: ignore[arg-type]
            max_pool_connections=workers + MULTIPART_CONCURRENCY,
            connect_timeout=PREFLIGHT_TIMEOUT_S if quick else 10,
            read_timeout=PREFLIGHT_TIMEOUT_S if quick else 120,
            tcp_keepalive=True,
            parameter_validation=False,  # we build every request ourselves; saves client CPU per object
            # Request checksums stay botocore's default (CRC per request, checked by S3); an
            # S3-compatible store that rejects them takes botocore's own
            # AWS_REQUEST_CHECKSUM_CALCULATION=when_required. End-to-end integrity does not depend
            # on it: every download is checked against the manifest's sha256.
            # S3-compatible endpoints (MinIO, R2, RunPod volumes, moto) want path-style addressing
            s3={"addressing_style": "path"} if s.s3_endpoint_url else {},
        )
        session = boto3.session.Session(
            aws_access_key_id=key_id if secret else None,
            aws_secret_access_key=secret if key_id else None,
            aws_session_token=token if (key_id and secret) else None,
            region_name=s.aws_region or ("us-east-1" if s.s3_endpoint_url else None),
        )
        client = session.client("s3", endpoint_url=s.s3_endpoint_url or None, config=config)
        _clients[cache_key] = client
        return client


PREFLIGHT_TIMEOUT_S = 5


def preflight(uris: Iterable[str | None], settings: Settings | None = None) -> None:
    """One quick request per bucket a run will use (ListObjectsV2 of its prefix, the permission sync needs),
    so a wrong endpoint, rejected credentials or a missing bucket fail in seconds with one clear line, before
    images are built or pods rented. Short timeouts and no retries apply to this check only."""
    seen: set[str] = set()
    for uri in uris:
        if not uri or not is_s3(uri):
            continue
        loc = parse_s3_uri(uri)
        if loc.bucket in seen:
            continue
        seen.add(loc.bucket)
        client = s3_client(settings, workers=1, quick=True)
        with _s3_errors(loc.bucket, f"checking access to {loc}"):
            client.list_objects_v2(Bucket=loc.bucket, Prefix=loc.prefix, MaxKeys=1)


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD,
        multipart_chunksize=MULTIPART_CHUNKSIZE,
        max_concurrency=MULTIPART_CONCURRENCY,
        use_threads=True,
    )


class S3CredentialsError(TrainpodError):
    """S3 refused the credentials (expired, revoked, or outside their scope): retrying cannot help."""


_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
               "AuthorizationHeaderMalformed", "InvalidClientTokenId", "TokenRefreshRequired"}


def _translate(exc: BaseException, bucket: str, action: str) -> TrainpodError | None:
    """Map a botocore failure to a user-facing error naming the bucket and the setting to fix."""
    from botocore import exceptions as bex

    where = "" if "s3://" in action else f" s3://{bucket}"  # an action naming its URI needs no repeat
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return TrainpodError(
            f"{action}{where}: no AWS credentials found",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment",
        )
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectTimeoutError):
        url = urlsplit(str(getattr(exc, "kwargs", {}).get("endpoint_url") or ""))
        endpoint = f"{url.scheme}://{url.netloc}" if url.netloc else "(AWS)"  # not the request's path and query
        return TrainpodError(
            f"{action}{where}: cannot reach the S3 endpoint {endpoint} ({type(exc).__name__})",
            "check TRAINPOD_S3_ENDPOINT_URL / AWS_ENDPOINT_URL (unset it for AWS) and your network",
        )
    if isinstance(exc, bex.ReadTimeoutError):
        url = urlsplit(str(getattr(exc, "kwargs", {}).get("endpoint_url") or ""))
        return TrainpodError(
            f"{action}{where}: the S3 endpoint {url.scheme}://{url.netloc} did not answer (ReadTimeoutError)",
            "check TRAINPOD_S3_ENDPOINT_URL / AWS_ENDPOINT_URL (unset it for AWS) and your network",
        )
    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return TrainpodError(
                f"{action}{where}: bucket '{bucket}' does not exist at this endpoint",
                "create it, fix the URI, or check TRAINPOD_S3_ENDPOINT_URL / AWS_ENDPOINT_URL and AWS_REGION",
            )
        if code in _AUTH_CODES:
            return S3CredentialsError(
                f"{action}{where}: credentials rejected ({code})",
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN and that "
                "AWS_ENDPOINT_URL points at the service that issued them",
            )
        if code in {"AccessDenied", "AllAccessDisabled", "403"} or status == 403:
            return S3CredentialsError(
                f"{action}{where}: access denied",
                f"the credentials in AWS_ACCESS_KEY_ID need s3:ListBucket/GetObject/PutObject/DeleteObject on '{bucket}'",
            )
        if code in {"PermanentRedirect", "301", "AuthorizationHeaderMalformedRegion"}:
            return TrainpodError(
                f"{action}{where}: bucket is in another region", "set AWS_REGION to the bucket's region",
            )
        return TrainpodError(f"{action}{where}: S3 error {code or status}: {err.get('Message', '')}".rstrip(": "))
    if isinstance(exc, bex.BotoCoreError):
        return TrainpodError(f"{action}{where}: {type(exc).__name__}: {exc}")
    return None


@contextlib.contextmanager
def _s3_errors(bucket: str, action: str) -> Iterator[None]:
    try:
        yield
    except TrainpodError:
        raise
    except Exception as exc:
        translated = _translate(exc, bucket, action)
        if translated is None:
            raise
        raise translated from None


def _is_not_found(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code == "NoSuchBucket":
        return False
    return code in {"404", "NoSuchKey", "NotFound"}


def _transient(exc: BaseException) -> bool:
    """Errors worth another whole-file attempt after botocore gave up or the body broke mid-stream."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return int(status) >= 500 or exc.response.get("Error", {}).get("Code") in {"SlowDown", "RequestTimeout"}
    return isinstance(exc, bex.ConnectionError | bex.HTTPClientError | bex.ResponseStreamingError
                      | bex.IncompleteReadError | ConnectionError | TimeoutError | _IntegrityError)


class _IntegrityError(Exception):
    """Downloaded bytes did not match the manifest (size or sha256)."""


def _with_retries(fn: Callable[[], Any], what: str) -> Any:
    for attempt in range(1, FILE_ATTEMPTS + 1):
        try:
            return fn()
        except Exception as exc:
            # a hash mismatch is retried once (a body cut short mid-read); twice means the object is bad
            limit = 2 if isinstance(exc, _IntegrityError) else FILE_ATTEMPTS
            if attempt >= limit or not _transient(exc):
                raise
            log.warning("%s failed (%s); retrying (%d/%d)", what, type(exc).__name__, attempt, limit - 1)
            time.sleep(min(0.1 * 2 ** attempt, 5.0))
    raise AssertionError("unreachable")
