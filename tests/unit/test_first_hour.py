"""Errors that point at the right thing (issue #12, section 3), through the real CLI in a subprocess.

S3 failures are produced at the HTTP boundary on loopback: a port nobody listens on, a socket that accepts
and never answers, and a small HTTP server that answers every request the way S3 answers a key it does
not know (403 InvalidAccessKeyId). Nothing of trainpod's is patched.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainpod import deps

ROOT = Path(__file__).resolve().parents[2]


def cli(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainpod", *argv], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=120)


def errors(out: subprocess.CompletedProcess) -> list[str]:
    return [line for line in out.stderr.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------------------------------------ --set
@pytest.mark.parametrize("value", ["learning_rate=abc", "batch_size=64"])
@pytest.mark.parametrize("command", [["show", "smoke"], ["validate", "smoke"],
                                     ["launch", "smoke", "--remote", "local", "--dry-run"]])
def test_a_bad_set_value_is_blamed_on_the_set_flag(tmp_path, command, value):
    out = cli(*command, "--set", value, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--set: presets.smoke" in out.stderr, out.stderr
    assert "training.toml" not in out.stderr and "Traceback" not in out.stderr
    assert ("learning_rate" in out.stderr) == value.startswith("learning_rate")
    assert not (tmp_path / "runs").exists()


def test_an_environment_override_is_blamed_on_the_environment_and_validate_takes_set(tmp_path):
    out = cli("validate", "smoke", cwd=tmp_path, env={"TRAINPOD_TRAINING__BATCH_SIZE": "64"})
    assert out.returncode == 2 and "TRAINPOD_TRAINING__" in out.stderr and "training.toml" not in out.stderr
    # --set wins over the environment, in validate as in show and launch
    out = cli("validate", "smoke", "--set", "batch_size=4", cwd=tmp_path, env={"TRAINPOD_TRAINING__BATCH_SIZE": "64"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok       smoke"


# ------------------------------------------------------------------------------ TRAINPOD_* typos, --profile
def test_a_misspelt_trainpod_variable_is_warned_about_by_every_command_that_reads_settings(tmp_path):
    env = {"TRAINPOD_OUTPT_DIR": str(tmp_path / "out"), "TRAINPOD_ENGINE_MIRROR": "http://mirror.invalid/debian"}
    (tmp_path / "data").mkdir()
    for argv in (["launch", "smoke", "--remote", "local", "--dry-run", "--json"], ["runs", "list"],
                 ["data", "ls", str(tmp_path / "data")], ["validate", "smoke"], ["show", "smoke"]):
        out = cli(*argv, cwd=tmp_path, env=env)
        assert out.returncode == 0, (argv, out.stderr)
        warned = [line for line in out.stderr.splitlines() if "TRAINPOD_OUTPT_DIR" in line]
        assert len(warned) == 1, (argv, out.stderr)
        assert "did you mean 'TRAINPOD_OUTPUT_DIR'" in warned[0]
        assert "TRAINPOD_ENGINE_MIRROR" not in out.stderr  # scripts/docker-up.sh's setting, not a typo
    # the warning goes to stderr: a --json plan on stdout stays machine-readable
    plan = cli("launch", "smoke", "--remote", "local", "--dry-run", "--json", cwd=tmp_path, env=env)
    assert json.loads(plan.stdout)["backend"] == "local"


@pytest.mark.parametrize("argv", [["list", "presets"], ["validate", "smoke"], ["runs", "list"],
                                  ["launch", "smoke", "--remote", "local", "--dry-run"], ["data", "ls", "."],
                                  ["list", "hardware", "--json"]])
def test_an_unknown_profile_is_an_error_on_every_command(tmp_path, argv):
    out = cli("--profile", "nope", *argv, cwd=tmp_path)
    assert out.returncode == 2, (argv, out.stdout, out.stderr)
    assert "env profile 'nope' not found" in out.stderr
    assert "available profiles: ci, docker-cpu, local, runpod" in out.stderr
    assert out.stdout == "" and "Traceback" not in out.stderr
    out = cli(*argv, cwd=tmp_path, env={"TRAINPOD_PROFILE": "locl"})
    assert out.returncode == 2 and "did you mean 'local'" in out.stderr


# ------------------------------------------------------------------------------------ RunPod key, S3 endpoint
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Forbidden(http.server.BaseHTTPRequestHandler):
    body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code>'
            b"<Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>")

    def _answer(self) -> None:
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.body)

    do_GET = do_PUT = do_POST = do_HEAD = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoints() -> Iterator[dict[str, str]]:
    """'refused': nobody listens; 'silent': accepts and never answers; 'forbidden': S3's 403 for a bad key."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"refused": f"http://127.0.0.1:{free_port()}",
           "silent": f"http://127.0.0.1:{silent.getsockname()[1]}",
           "forbidden": f"http://127.0.0.1:{server.server_address[1]}"}
    server.shutdown()
    server.server_close()
    silent.close()


def runpod_env(endpoint: str, **extra: str) -> dict[str, str]:
    return {"TRAINPOD_STORAGE_URI": "s3://trainpod-out/team", "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "AKIAFIRSTHOUR", "AWS_SECRET_ACCESS_KEY": "first-hour-secret", **extra}


LAUNCH = ["launch", "oracle-rauru-cloud", "--remote", "runpod", "--max-runtime", "10"]


def test_runpod_without_an_api_key_says_so_before_any_s3_check(tmp_path, endpoints):
    began = time.monotonic()
    out = cli(*LAUNCH, cwd=tmp_path, env=runpod_env(endpoints["refused"]))
    assert out.returncode == 2, out.stderr
    assert errors(out) == ["error: --remote runpod needs a RunPod API key, and RUNPOD_API_KEY is not set"]
    assert "S3" not in out.stderr and "s3://" not in out.stderr
    assert time.monotonic() - began < 10


@pytest.mark.parametrize(("endpoint", "says"), [
    ("refused", "cannot reach the S3 endpoint {url} (EndpointConnectionError)"),
    ("silent", "the S3 endpoint {url} did not answer (ReadTimeoutError)"),
    ("forbidden", "credentials rejected (InvalidAccessKeyId)"),
])
def test_an_unusable_s3_endpoint_fails_in_seconds_with_one_clear_line(tmp_path, endpoints, endpoint, says):
    url = endpoints[endpoint]
    began = time.monotonic()
    out = cli(*LAUNCH, cwd=tmp_path, env=runpod_env(url, RUNPOD_API_KEY="rp-first-hour"))
    took = time.monotonic() - began
    assert out.returncode == 2, out.stderr
    assert took < 15, f"{took:.1f} s"  # the transfer client would retry for minutes (8 attempts, 120 s reads)
    lines = errors(out)
    assert len(lines) == 1, out.stderr
    assert says.format(url=url) in lines[0], lines[0]
    assert len(re.findall(r"s3://", lines[0])) == 1, lines[0]  # names the location once
    assert "retrying" not in out.stderr and "Traceback" not in out.stderr
    assert "first-hour-secret" not in out.stderr


# ------------------------------------------------------------------------------ hardware vs backend, README
needs_no_gpu = pytest.mark.skipif(deps.cuda_visible(), reason="this machine has an NVIDIA GPU: CUDA runs locally")


@needs_no_gpu
def test_a_cuda_preset_on_local_is_refused_at_validate_and_launch_naming_runpod(tmp_path):
    for argv in (["validate", "oracle-rauru-a100", "--remote", "local"],
                 ["launch", "oracle-rauru-a100", "--remote", "local"]):
        out = cli(*argv, cwd=tmp_path)
        assert out.returncode == 2, (argv, out.stderr)
        assert "'cloud-a100-80gb' is a CUDA profile" in out.stderr and "--remote runpod" in out.stderr
    assert not (tmp_path / "runs").exists()


def readme_preset() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    return next(b for b in blocks if "[presets.mine]" in b)


@needs_no_gpu
def test_the_readme_custom_preset_states_its_remote_and_validates(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "training.toml").write_text(readme_preset(), encoding="utf-8")
    out = cli("validate", "mine", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = cli("validate", "mine", "--remote", "local", cwd=tmp_path)
    assert out.returncode == 2 and "--remote runpod" in out.stderr
