"""Bad input through the real CLIs: exit code 2, a clear message naming the file/key/line, no
traceback, no partial write — or the value is carried byte-exact.

Config cases go through ``python -m trainpod --config FILE validate|launch``; dataset cases through
``python -m trainpod_trainer --spec`` (the container's entrypoint: that is where data is read),
plus one through ``trainpod launch --remote local`` end to end. Property tests for the GraphQL
escaping already live in tests/integration/test_runpod_api.py (``gql_literal`` round trip through
a real GraphQL parser, env dicts with arbitrary text), and for the config loader in
tests/unit/test_config_properties.py; they are not duplicated here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fixtures.train import trainer_env, write_spec

pytestmark = pytest.mark.chaos

PRESET = """
[presets.bad]
description = "chaos corpus"
expert = "tiny"
hardware = {hardware}
dataset = {dataset}
hyperparameters = "smoke"
lora = "minimal"
sequence_length = 256
batch_size = {batch}
gradient_accumulation = 1
remote = "local"
{extra}
"""
CPU_TABLE = """
[hardware.{name}]
name = "chaos"
device = "cpu"
available_memory_gb = 16
max_batch_size = 16
max_sequence_length = 2048
supports_gradient_checkpointing = true
max_lora_rank = 64
recommended_gradient_accumulation = 1
image = "cpu"
{extra}
"""


def preset(hardware: str = '"cpu"', dataset: str = '"sample"', batch: str = "8", extra: str = "") -> str:
    return PRESET.format(hardware=hardware, dataset=dataset, batch=batch, extra=extra)


# name -> (file bytes, fragments the message must contain)
CONFIG_CASES: dict[str, tuple[bytes, list[str]]] = {
    "malformed toml": (b'[presets.bad\nexpert = "tiny"\n', ["bad.toml", "line"]),
    "unknown key": (preset(extra="batchsize = 4").encode(), ["batchsize", "presets.bad"]),
    "wrong type": (preset(batch='"eight"').encode(), ["batch_size", "presets.bad"]),
    "preset names a missing table": (preset(hardware='"h900"').encode(), ["h900", "hardware"]),
    "batch over the hardware limit": (preset(batch="64").encode(), ["batch_size", "max_batch_size"]),
    "cpu hardware with a gpu": (CPU_TABLE.format(name="cpu-gpu", extra="gpu_count = 1").encode()
                                + preset(hardware='"cpu-gpu"').encode(), ["gpu_count", "hardware.cpu-gpu"]),
    "env key not a variable name": (CPU_TABLE.format(name="cpu-env", extra='env = { "1BAD" = "x" }').encode()
                                    + preset(hardware='"cpu-env"').encode(), ["1BAD"]),
    "latin-1 file": ("# caf\u00e9\n".encode("latin-1") + preset().encode(), ["bad.toml", "UTF-8"]),
    "UTF-16 file": (preset().encode("utf-16"), ["bad.toml"]),
    "s3 URI without bucket": (b'[datasets.nob]\npath = "s3:///prefix/v1"\ntrain = "train.jsonl"\n'
                              b'format = "instruction"\n' + preset(dataset='"nob"').encode(), ["s3:///prefix/v1", "bucket"]),
}

DATA_OK = {"instruction": "Say hi", "input": "", "output": "hi"}


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


GOOD = _jsonl([DATA_OK] * 20)
DATA_CASES: dict[str, tuple[bytes, list[str]]] = {
    "broken json line": (GOOD + b'{"instruction": "x", "output": \n' + GOOD, ["train.jsonl", "21"]),
    "missing field": (GOOD + _jsonl([{"instruction": "no output"}]), ["train.jsonl", "output"]),
    "latin-1 encoding": (GOOD + '{"instruction": "caf\u00e9", "input": "", "output": "x"}\n'.encode("latin-1"),
                         ["train.jsonl:21", "UTF-8"]),
    "UTF-16 encoding": (GOOD.decode().encode("utf-16"), ["train.jsonl:1", "UTF-8"]),
    "empty dataset": (b"", ["train.jsonl"]),
    "UTF-8 with BOM (accepted)": (b"\xef\xbb\xbf" + GOOD, []),
}


def _trainpod(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "trainpod", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _config_case(tmp: Path, name: str) -> tuple[str, str | None]:
    data, fragments = CONFIG_CASES[name]
    work = tmp / name.replace(" ", "-")
    work.mkdir()
    cfg = work / "bad.toml"
    cfg.write_bytes(data)
    before = _snapshot(work)
    problems = []
    for args in (("validate", "bad"), ("launch", "bad", "--remote", "local", "--output-dir", str(work / "runs"))):
        res = _trainpod("--config", str(cfg), *args, cwd=work)
        text = res.stdout + res.stderr
        if res.returncode != 2:
            problems.append(f"{args[0]}: exit {res.returncode}")
        if "Traceback" in text:
            problems.append(f"{args[0]}: traceback")
        missing = [f for f in fragments if f.lower() not in text.lower()]
        if missing:
            problems.append(f"{args[0]}: message lacks {missing}: {text.strip()[-300:]!r}")
        if _snapshot(work) != before:
            problems.append(f"{args[0]}: wrote {sorted(_snapshot(work) - before)}")
    return name, "; ".join(problems) or None


def test_config_corpus_through_the_cli(tmp_path, chaos_record):
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda n: _config_case(tmp_path, n), CONFIG_CASES))
    failed = [r for r in results if r[1]]
    chaos_record("bad config corpus via `trainpod validate/launch`", len(results), len(results) - len(failed),
                 "exit 2, message names file/key, no traceback, nothing written" if not failed
                 else f"failed: {[n for n, _ in failed]}")
    assert not failed, failed


def _data_case(tmp: Path, name: str) -> tuple[str, str | None]:
    data, fragments = DATA_CASES[name]
    ds = tmp / name.replace(" ", "-") / "ds"
    ds.mkdir(parents=True)
    (ds / "train.jsonl").write_bytes(data)
    (ds / "val.jsonl").write_bytes(GOOD)
    (ds / "test.jsonl").write_bytes(GOOD)
    out = ds.parent / "out"
    spec = write_spec(out, "chaos-data", max_steps=1, dataset={"path": str(ds)})
    res = subprocess.run([sys.executable, "-m", "trainpod_trainer", "--spec", str(spec)], capture_output=True,
                         text=True, timeout=120, env=trainer_env(OMP_NUM_THREADS="1"))
    text = res.stdout + res.stderr
    problems = []
    if not fragments:  # a valid file: it must train
        return name, None if res.returncode == 0 and (out / "DONE").is_file() else f"exit {res.returncode}: {text[-300:]}"
    if res.returncode != 2:
        problems.append(f"exit {res.returncode}")
    if "Traceback" in text:
        problems.append("traceback")
    missing = [f for f in fragments if f.lower() not in text.lower()]
    if missing:
        problems.append(f"message lacks {missing}: {text.strip()[-300:]!r}")
    written = [p.name for p in out.rglob("*") if p.name in ("DONE", "adapter_model.safetensors", "metadata.json")
               or p.name.startswith("step-")]
    if written:
        problems.append(f"partial outputs {written}")
    return name, "; ".join(problems) or None


def test_dataset_corpus_through_the_trainer(tmp_path, chaos_record):
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda n: _data_case(tmp_path, n), DATA_CASES))
    failed = [r for r in results if r[1]]
    chaos_record("bad dataset corpus via `python -m trainpod_trainer`", len(results), len(results) - len(failed),
                 "exit 2, message names file (+line), no traceback, no outputs" if not failed
                 else f"failed: {[n for n, _ in failed]}")
    assert not failed, failed


NASTY_ENV = {
    "CHAOS_QUOTES": "a \"double\" and 'single' quote",
    "CHAOS_NEWLINE": "line one\nline two\n",
    "CHAOS_SUBSHELL": "$(touch /tmp/trainpod-chaos-pwned)",
    "CHAOS_BACKTICKS": "`touch /tmp/trainpod-chaos-pwned`",
    "CHAOS_UNICODE": "caf\u00e9 \u2713 \U0001f680 \u202e",
    "CHAOS_BACKSLASH": "C:\\path\\n\\t",
}


def test_env_values_are_carried_byte_exact(tmp_path, chaos_record, monkeypatch):
    """Hardware env values with quotes, newlines, ``$()``, backticks and unicode reach every plan
    unchanged (the backends pass env as data, never through a shell)."""
    env_table = ", ".join(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in NASTY_ENV.items())
    cfg = tmp_path / "env.toml"
    cfg.write_text(CPU_TABLE.format(name="cpu-env", extra=f"env = {{ {env_table} }}") + preset(hardware='"cpu-env"'),
                   encoding="utf-8")
    pwned = Path("/tmp/trainpod-chaos-pwned")
    pwned.unlink(missing_ok=True)
    carried, checked = 0, 0
    for backend, extra in (("local", {}), ("docker", {}), ("runpod", {"TRAINPOD_STORAGE_URI": "s3://chaos/x",
                                                                     "RUNPOD_API_KEY": "rpa_x"})):
        res = _trainpod("--config", str(cfg), "launch", "bad", "--remote", backend, "--dry-run", "--json",
                        cwd=tmp_path, env=extra)
        if backend == "runpod" and res.returncode == 2:
            continue  # a CPU preset on RunPod may be refused by the backend; the others carry the env
        assert res.returncode == 0, (backend, res.stderr)
        plan = json.loads(res.stdout)
        env = plan["env"]
        checked += 1
        carried += all(env.get(k) == v for k, v in NASTY_ENV.items())
        assert {k: env.get(k) for k in NASTY_ENV} == NASTY_ENV, backend
    chaos_record("env values (quotes, newline, $(), backticks, unicode) carried byte-exact", checked, carried,
                 f"{len(NASTY_ENV)} values x {checked} backend plans; nothing executed: {not pwned.exists()}")
    assert checked >= 2 and not pwned.exists()
