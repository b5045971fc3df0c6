#!/usr/bin/env python3
"""One-shot GPU check: everything trainpod claims about a CUDA machine, measured in one command, one table.

    python benchmarks/gpu_check.py                       # a single-GPU machine, no network needed
    python benchmarks/gpu_check.py --quick --json out.json
    python benchmarks/gpu_check.py --quick --device cpu  # the same code paths on CPU with tiny sizes (CI runs it)

Needs the trainer's Python dependencies (torch with CUDA, transformers, peft, pydantic...; install them from local
wheels on an offline box) and this checkout; nothing is downloaded: the models are random-weight Qwen2 shapes and
the smoke preset's shipped tiny model and sample data. Sections (each a row group of the table, each also in
``--json``):

1. smoke: the smoke preset on the device (bf16 on CUDA) through ``python -m trainpod_trainer`` (the entrypoint a
   pod runs): one uninterrupted run, then a run stopped by SIGTERM mid-way and resumed. Exit codes and losses,
   and the largest difference between the resumed and the uninterrupted loss curves.
2. throughput: real-token throughput and MFU for random-weight Qwen2-shaped models (0.5B and 1.5B by default;
   LoRA and full; seq 2048): trainpod's packed step (the trainer's own ``loss_sum``) vs a plain HF ``Trainer``
   (per-batch padding) vs TRL's ``SFTTrainer`` with packing (if TRL imports; else the row says so), on the same
   documents with the same batch size. MFU = tokens/s x F / peak, F = 6N (full) or 4N (LoRA), as in
   benchmarks/train_throughput.py; ``--peak-tflops`` overrides the detected peak.
3. memory: each throughput row's peak GPU memory against the hardware profile's ``available_memory_gb`` x
   ``gpu_percent``; then the memory guard: the smoke run with a threshold it must cross stops with exit 4 and
   leaves a complete checkpoint (on CPU the RAM guard is the one exercised).
4. torchrun: ``torchrun --nproc_per_node 1`` with NCCL (gloo on CPU): process group, an all_reduce, a barrier.

Budget on one GPU: under 8 minutes in full, about 2 in ``--quick``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "cli"), str(ROOT / "trainer"), str(ROOT / "benchmarks")]

from train_throughput import PEAK_TFLOPS, SHAPES  # noqa: E402  (benchmarks/ is not a package)

STOPPED, MEMORY = 3, 4  # trainpod_trainer.exitcodes


# ---------------------------------------------------------------------------- helpers
def _env(device: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINPOD_", "AWS_", "RUNPOD_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "cli"), str(ROOT / "trainer"), env.get("PYTHONPATH", "")])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["HF_HUB_OFFLINE"] = "1"  # nothing leaves the machine
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def smoke_spec(out: Path, run_id: str, hardware: str, device: str, hw_over: dict[str, Any] | None = None,
               **overrides: Any) -> Path:
    """The smoke preset moved onto ``hardware`` (bf16 where it supports it), as a spec file next to ``out``."""
    from trainpod.config.loader import load_catalog
    from trainpod.config.schema import TrainingConfig, resolve_precision
    from trainpod.spec import RunSpec, StorageURIs, utcnow_iso

    catalog = load_catalog(use_cwd=False)
    cfg = catalog.resolve("smoke", overrides)
    hw = catalog.get("hardware", hardware).model_copy(update=hw_over or {})
    data = cfg.model_dump()
    data.update(hardware_name=hardware, hardware=hw.model_dump(), precision=resolve_precision("auto", hw),
                batch_size=min(cfg.batch_size, hw.max_batch_size))
    cfg = TrainingConfig.model_validate(data)
    spec = RunSpec(run_id=run_id, created=utcnow_iso(), remote="local", config=cfg,
                   storage=StorageURIs(dataset=cfg.dataset.path, output=str(out)))
    return spec.write(out.parent / f"{run_id}.spec.json")


def _metrics(out: Path) -> dict[int, float]:
    losses: dict[int, float] = {}
    path = out / "logs" / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError):
                rec = json.loads(line)
                losses[rec["step"]] = rec["loss"]
    return losses


def _trainer(spec: Path, device: str, *, sigterm_at: int | None = None, out: Path | None = None,
             timeout: float = 600) -> tuple[int, float, str]:
    """Run the trainer's entrypoint; SIGTERM once ``sigterm_at`` steps are logged. (exit code, seconds, log tail)"""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "trainpod_trainer", "--spec", str(spec)], env=_env(device),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if sigterm_at is not None and out is not None:
        while proc.poll() is None and max(_metrics(out), default=0) < sigterm_at:
            if time.monotonic() - t0 > timeout:
                break
            time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        log, _ = proc.communicate()
    return proc.returncode, time.monotonic() - t0, log[-3000:]


# ---------------------------------------------------------------------------- 1. smoke + SIGTERM/resume
def check_smoke(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    steps = 8 if args.quick else 30
    hp = {"max_steps": steps, "save_steps": 1000, "eval_steps": 1000, "logging_steps": 1}
    rows = []
    base_out = work / "smoke" / "out"
    base_out.parent.mkdir(parents=True)
    code, secs, log = _trainer(smoke_spec(base_out, "gpu-check-smoke", args.hardware, args.device, **hp),
                               args.device)
    base = _metrics(base_out)
    rows.append({"check": "smoke", "case": f"uninterrupted, {args.precision}", "ok": code == 0 and len(base) == steps,
                 "exit": code, "seconds": round(secs, 1), "first_loss": base.get(1), "last_loss": base.get(steps),
                 "detail": "" if code == 0 else log[-800:]})

    out = work / "resume" / "out"
    out.parent.mkdir(parents=True)
    spec = smoke_spec(out, "gpu-check-resume", args.hardware, args.device, **hp)
    code1, secs1, log1 = _trainer(spec, args.device, sigterm_at=steps // 2, out=out)
    stopped_at = max(_metrics(out), default=0)
    from trainpod.spec import RunSpec

    again = RunSpec.load(spec).model_copy(update={"resume": True}).write(spec)
    code2, secs2, log2 = _trainer(again, args.device)
    resumed = _metrics(out)
    common = [s for s in base if s in resumed]
    drift = max((abs(base[s] - resumed[s]) for s in common), default=math.nan)
    ok = code1 == STOPPED and code2 == 0 and len(resumed) == steps
    rows.append({"check": "smoke", "case": f"SIGTERM at step {stopped_at}, then resume", "ok": ok,
                 "exit": f"{code1} then {code2}", "seconds": round(secs1 + secs2, 1), "first_loss": resumed.get(1),
                 "last_loss": resumed.get(steps),
                 "detail": f"max |loss - uninterrupted| {drift:.2e}" + ("" if ok else " " + (log1 + log2)[-800:])})
    return rows


# ---------------------------------------------------------------------------- 2. throughput + MFU
def _model(size: str, finetune: str, device: Any, seq: int, dtype: Any) -> tuple[Any, int, int]:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    conf = Qwen2Config(**SHAPES[size], max_position_embeddings=max(4096, seq), rope_theta=1e6, use_cache=False)
    conf._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(conf).to(dtype=dtype if finetune == "lora" else torch.float32).to(device)
    if finetune == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    n_total = sum(p.numel() for p in model.parameters())
    n = n_total - (0 if conf.tie_word_embeddings else conf.vocab_size * conf.hidden_size)
    return model, n_total, (6 if finetune == "full" else 4) * n


def _documents(size: str, seq: int, count: int) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(0)
    vocab = SHAPES[size]["vocab_size"]
    return [torch.randint(3, vocab, (int(n),), generator=g).tolist()
            for n in torch.randint(64, seq, (count,), generator=g)]


def _timed(fn, warmup: int, steps: int, device: Any) -> tuple[float, int]:
    """(seconds, real tokens) over ``steps`` calls of ``fn(i) -> real tokens`` after ``warmup`` untimed ones."""
    import torch

    for i in range(warmup):
        fn(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, tokens = time.monotonic(), 0
    for i in range(steps):
        tokens += fn(warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.monotonic() - t0, tokens


def run_trainpod_step(size: str, finetune: str, docs: list[list[int]], a: argparse.Namespace, device: Any) -> float:
    import torch

    from trainpod_trainer.data import Document, collate, pack
    from trainpod_trainer.run import loss_sum

    model, _, _ = _model(size, finetune, device, a.seq, torch.bfloat16 if device.type == "cuda" else torch.float32)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    rows = pack([Document(d, d[1:] + [-100]) for d in docs], a.seq)

    def amp():
        return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def step(i: int) -> int:
        batch = collate(rows[(i * a.batch) % len(rows):][: a.batch], 0)
        s, n_t = loss_sum(model, batch, device, amp)
        (s / max(n_t, 1)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return batch["real_tokens"]

    secs, tokens = _timed(step, a.warmup, a.steps, device)
    return tokens / secs


def _hf_args(a: argparse.Namespace, device: Any, out: Path, **extra: Any) -> dict[str, Any]:
    return dict(output_dir=str(out), per_device_train_batch_size=a.batch, max_steps=a.warmup + a.steps,
                learning_rate=1e-4, logging_steps=10_000, save_strategy="no", report_to=[], seed=0,
                bf16=device.type == "cuda", use_cpu=device.type == "cpu", dataloader_num_workers=0,
                disable_tqdm=True, remove_unused_columns=False, **extra)


class _Clock:
    """A TrainerCallback-shaped timer: starts after ``warmup`` optimizer steps, counts the real tokens it is fed."""

    def __init__(self, warmup: int, device: Any):
        self.warmup, self.device = warmup, device
        self.start: float | None = None
        self.tokens_total = 0
        self.tokens_at_start = 0

    def __getattr__(self, name: str) -> Any:  # every other callback event: nothing to do
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.warmup:
            import torch

            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.start, self.tokens_at_start = time.monotonic(), self.tokens_total

    def rate(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
        assert self.start is not None
        return (self.tokens_total - self.tokens_at_start) / (time.monotonic() - self.start)


def run_hf_trainer(size: str, finetune: str, docs: list[list[int]], a: argparse.Namespace, device: Any,
                   work: Path) -> float:
    import torch
    from transformers import Trainer, TrainingArguments

    model, _, _ = _model(size, finetune, device, a.seq, torch.bfloat16 if device.type == "cuda" else torch.float32)
    clock = _Clock(a.warmup, device)
    examples = [{"input_ids": d, "labels": d} for d in docs]

    def collate(batch: list[dict]) -> dict:
        width = max(len(b["input_ids"]) for b in batch)  # per-batch padding, the usual HF setup
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(b["input_ids"]), torch.tensor(b["labels"]), 1
        clock.tokens_total += int(mask.sum())
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    trainer = Trainer(model=model, args=TrainingArguments(**_hf_args(a, device, work / "hf")),
                      train_dataset=examples, data_collator=collate, callbacks=[clock])
    trainer.train()
    return clock.rate()


def run_trl(size: str, finetune: str, docs: list[list[int]], a: argparse.Namespace, device: Any,
            work: Path) -> float:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, _, _ = _model(size, finetune, device, a.seq, torch.bfloat16 if device.type == "cuda" else torch.float32)
    clock = _Clock(a.warmup, device)
    import pyarrow as pa
    from datasets.table import InMemoryTable

    # an explicit fingerprint: datasets' own (dill-pickling the table) is not needed and breaks on some versions
    dataset = Dataset(InMemoryTable(pa.table({"input_ids": docs})), fingerprint=f"gpu-check-{size}-{len(docs)}")
    from trainpod_trainer.model import load_tokenizer

    tokenizer = load_tokenizer("builtin:tiny-qwen2")  # data is pre-tokenized; TRL wants one for padding
    trainer = SFTTrainer(model=model, train_dataset=dataset, processing_class=tokenizer,
                         args=SFTConfig(**_hf_args(a, device, work / "trl"), packing=True, max_length=a.seq),
                         callbacks=[clock])
    inner = trainer.data_collator

    def counting(batch: list[dict]) -> dict:
        out = inner(batch)
        # padding-free packing (position_ids, no mask): every token is real
        clock.tokens_total += int(out["attention_mask"].sum() if "attention_mask" in out else out["input_ids"].numel())
        return out

    trainer.data_collator = counting
    trainer.train()
    return clock.rate()


def check_throughput(args: argparse.Namespace, work: Path, device: Any) -> list[dict[str, Any]]:
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    from trainpod.config.loader import load_catalog

    hw = load_catalog(use_cwd=False).get("hardware", args.hardware)
    budget_gib = hw.available_memory_gb * hw.gpu_percent / 100
    rows = []
    for size in args.sizes:
        docs = _documents(size, args.seq, args.batch * (args.warmup + args.steps) * 3)
        for finetune in args.finetune:
            _, n_total, flops = _model_shape(size, finetune, args.seq)
            for trainer in ("trainpod", "hf", "trl"):
                row: dict[str, Any] = {"check": "throughput", "case": f"{size} {finetune} {trainer}",
                                       "params_m": round(n_total / 1e6), "ok": False}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                try:
                    if trainer == "trainpod":
                        tps = run_trainpod_step(size, finetune, docs, args, device)
                    elif trainer == "hf":
                        tps = run_hf_trainer(size, finetune, docs, args, device, work)
                    else:
                        try:
                            import datasets  # noqa: F401
                            import trl  # noqa: F401
                        except ImportError as exc:
                            row.update(ok=None, detail=f"TRL not importable ({exc.name}): pip install trl datasets")
                            rows.append(row)
                            continue
                        tps = run_trl(size, finetune, docs, args, device, work)
                except Exception as exc:  # noqa: BLE001 - one row fails (OOM, an API change), the table goes on
                    oom = "out of memory" in str(exc).lower()
                    row["detail"] = ("OOM" if oom else f"{type(exc).__name__}: {exc}")[:300]
                    rows.append(row)
                    continue
                finally:
                    gc_collect(device)
                mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
                row.update(ok=True, tokens_per_s=round(tps, 1),
                           mfu=round(tps * flops / (peak * 1e12), 4) if peak else None,
                           peak_mem_gib=round(mem, 2) if mem is not None else None,
                           detail=(f"peak {mem:.1f} GiB vs {args.hardware} {budget_gib:.1f} GiB "
                                   f"({'fits' if mem <= budget_gib else 'over'})") if mem is not None else "")
                rows.append(row)
    for r in rows:  # side by side: trainpod / other on the same size and finetune
        case = r["case"].rsplit(" ", 1)[0]
        mine = next((x for x in rows if x["case"] == f"{case} trainpod"), None)
        if r.get("tokens_per_s") and mine and mine.get("tokens_per_s") and r is not mine:
            r["trainpod_ratio"] = round(mine["tokens_per_s"] / r["tokens_per_s"], 2)
    return rows


def _model_shape(size: str, finetune: str, seq: int) -> tuple[None, int, int]:
    """Parameter count and FLOPs/token of a shape without allocating it (meta device)."""
    import torch

    with torch.device("meta"):
        _, n_total, flops = _model(size, finetune, torch.device("meta"), seq, torch.float32)
    return None, n_total, flops


def gc_collect(device: Any) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- 3. memory guard
def check_memory_guard(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    out = work / "guard" / "out"
    out.parent.mkdir(parents=True)
    key = "gpu_percent" if args.device == "cuda" else "ram_percent"
    spec = smoke_spec(out, "gpu-check-guard", args.hardware, args.device, max_steps=12, save_steps=1000,
                      eval_steps=1000, logging_steps=1, hw_over={key: 0.1})
    code, secs, log = _trainer(spec, args.device)
    from trainpod.manifest import latest_complete

    latest = latest_complete(out / "checkpoints")
    ok = code == MEMORY and latest is not None and "memory guard" in log
    return [{"check": "memory guard", "case": f"{key} = 0.1 %", "ok": ok, "exit": code, "seconds": round(secs, 1),
             "detail": (f"stopped with checkpoint {latest.name}" if latest else "no checkpoint")
             + ("" if ok else " " + log[-800:])}]


# ---------------------------------------------------------------------------- 4. torchrun
PROBE = """
import os, time, torch, torch.distributed as dist
backend = os.environ["PROBE_BACKEND"]
dev = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if backend == "nccl" else torch.device("cpu")
if dev.type == "cuda":
    torch.cuda.set_device(dev)
t0 = time.monotonic()
dist.init_process_group(backend)
x = torch.ones(1 << 20, device=dev)
dist.all_reduce(x)
dist.barrier()
assert float(x[0]) == dist.get_world_size()
print(f"PROBE ok {backend} world {dist.get_world_size()} {time.monotonic() - t0:.2f}s")
dist.destroy_process_group()
"""


def check_torchrun(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    backend = "nccl" if args.device == "cuda" else "gloo"
    probe = work / "probe.py"
    probe.write_text(PROBE)
    env = _env(args.device) | {"PROBE_BACKEND": backend}
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
                          "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(probe)],
                         env=env, capture_output=True, text=True, timeout=300)
    ok = res.returncode == 0 and "PROBE ok" in res.stdout
    return [{"check": "torchrun", "case": f"1 process, {backend}", "ok": ok, "exit": res.returncode,
             "seconds": round(time.monotonic() - t0, 1),
             "detail": next((ln for ln in res.stdout.splitlines() if "PROBE" in ln), (res.stdout + res.stderr)[-600:])}]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- table
def print_table(rows: list[dict[str, Any]], header: dict[str, Any]) -> None:
    print(" ".join(f"{k}: {v}" for k, v in header.items()))
    cols = ("check", "case", "ok", "exit", "seconds", "first_loss", "last_loss", "tokens_per_s", "mfu",
            "trainpod_ratio", "peak_mem_gib", "detail")

    def cell(r: dict[str, Any], c: str) -> str:
        v = r.get(c)
        if v is None:
            return "n/a" if c == "ok" and "ok" in r else ""
        if c == "ok":
            return "ok" if v else "FAIL"
        if c == "mfu":
            return f"{v * 100:.1f}%"
        if isinstance(v, float):
            return f"{v:,.4g}" if c.endswith("loss") else f"{v:,.1f}"
        return str(v).replace("\n", " ")[:120 if c == "detail" else 40]

    table = [list(cols)] + [[cell(r, c) for c in cols] for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
    for i, t in enumerate(table):
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())
        if i == 0:
            print("-" * (sum(widths) + 2 * len(widths)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when torch sees a GPU, else cpu")
    ap.add_argument("--quick", action="store_true", help="fewer steps; on CPU also tiny model shapes")
    ap.add_argument("--sizes", nargs="+", choices=sorted(SHAPES), help="model shapes (default 0.5b 1.5b; "
                    "tiny with --quick on CPU)")
    ap.add_argument("--finetune", nargs="+", choices=("lora", "full"), default=["lora", "full"])
    ap.add_argument("--seq", type=int, help="sequence length (default 2048; 256 with --quick on CPU)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, help="timed steps per throughput row (default 10, 3 with --quick)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak for MFU (default: detected)")
    ap.add_argument("--hardware", help="hardware profile for the smoke runs and the memory figure "
                    "(default cloud-rtx-4090 on CUDA, cpu on CPU)")
    ap.add_argument("--skip", nargs="*", default=[], choices=("smoke", "throughput", "memory", "torchrun"))
    ap.add_argument("--json", dest="json_out", help="also write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"--device cuda: torch sees no GPU (torch.version.cuda = {torch.version.cuda})", file=sys.stderr)
        return 2
    cpu_quick = args.quick and args.device == "cpu"
    args.sizes = args.sizes or (["tiny"] if cpu_quick else ["0.5b", "1.5b"])
    args.seq = args.seq or (256 if cpu_quick else 2048)
    args.steps = args.steps or (3 if args.quick else 10)
    args.hardware = args.hardware or ("cloud-rtx-4090" if args.device == "cuda" else "cpu")
    args.precision = "bf16" if args.device == "cuda" else "fp32"
    device = torch.device(args.device)
    header = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "torch": torch.__version__, "cuda": torch.version.cuda, "hardware": args.hardware,
              "quick": args.quick, "seq": args.seq, "batch": args.batch}
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="trainpod-gpu-check-"))
    try:
        if "smoke" not in args.skip:
            rows += check_smoke(args, work)
        if "throughput" not in args.skip:
            rows += check_throughput(args, work, device)
        if "memory" not in args.skip:
            rows += check_memory_guard(args, work)
        if "torchrun" not in args.skip:
            rows += check_torchrun(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header["seconds"] = round(time.monotonic() - started, 1)
    print_table(rows, header)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
