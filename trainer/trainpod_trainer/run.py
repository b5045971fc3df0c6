"""The trainer's one linear story: spec → data → model → resume → train → eval → outputs → DONE.

Why a hand-written loop rather than ``transformers.Trainer``: the loop below is ~200 lines and does
exactly four things the HF Trainer makes awkward: (1) packed rows with per-document position ids
and per-document shifted targets (HF's collators pad per batch or need its own packing flags that
differ between versions); (2) a checkpoint whose manifest is written last and which restores the
*data position* exactly, so step k+1 after a resume equals the uninterrupted run's step k+1; (3)
SIGTERM and memory-guard stops that always leave a complete checkpoint and exit with a named code
(:mod:`trainpod_trainer.exitcodes`); (4) status.json / metadata.json / DONE in trainpod's layout.
Throughput: packing removes the padding work that dominates on CPU; ``benchmarks/train_throughput.py``
measures it against HF Trainer with per-batch padding.

Distributed: under torchrun (``WORLD_SIZE`` > 1) it uses gloo on CPU and nccl on CUDA, shards the
packed rows so that R ranks x batch b train on exactly the rows of one rank x batch R*b, normalises
the loss by the targets of all ranks (so the curve is the one-rank curve), and wraps the model in DDP
or, when the preset names a DeepSpeed config, in a DeepSpeed engine (:mod:`trainpod_trainer.ds`).
Only rank 0 writes files; decisions read from the output (DONE, which checkpoint to resume) are made
by rank 0 and broadcast; stop requests (SIGTERM, memory guard, max runtime) are agreed by all-reduce,
so every rank stops at the same step and exactly one checkpoint is written.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainpod.contract import DONE, ENV_DATA_DIR, ENV_OUTPUT_DIR
from trainpod.errors import TrainpodError
from trainpod.manifest import atomic_write_bytes, checkpoint_name, list_checkpoints
from trainpod.redact import RedactingFilter, redact_text
from trainpod.spec import RunSpec, utcnow_iso
from trainpod_trainer import checkpoint as ckpt
from trainpod_trainer import ds, exitcodes
from trainpod_trainer.data import Batches, DataError, Position, load_split, pack, unpacked
from trainpod_trainer.sink import Sink, sink_for, work_dir

log = logging.getLogger("trainpod_trainer")

STATUS_FILE = "status.json"
DONE_FILE = DONE
METADATA_FILE = "metadata.json"
METADATA_SCHEMA_VERSION = 1  # metadata.json's layout; bump when a key changes meaning or moves
SPEC_FILE = "run_spec.json"
METRICS_FILE = "metrics.jsonl"  # under logs/: one line per optimizer step (a resumed run appends)
# RunPod preempts a spot pod with SIGTERM, then SIGKILL about 5 s later (whatever stop_grace_seconds says).
SPOT_GRACE_SECONDS = 5.0
# A stop checkpoint is written only when (this x the last save's duration) fits in what is left of the grace;
# else the last complete checkpoint stands (a half-written one is never picked: manifests go last).
SAVE_SAFETY = 2.0


class Stop(Exception):
    """Training must stop after a checkpoint; ``code`` is the exit code, ``reason`` what to tell the user."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


# ---------------------------------------------------------------------------- environment


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)))


def pick_device(requested: str, dist: Dist) -> Any:
    import torch

    if requested == "cuda":
        if not torch.cuda.is_available():
            raise TrainpodError("hardware.device = 'cuda' but torch sees no CUDA device",
                                "use a cpu hardware profile, or check the driver / image CUDA version")
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    if requested == "mps":
        if not torch.backends.mps.is_available():
            raise TrainpodError("hardware.device = 'mps' but MPS is not available", "use a cpu hardware profile")
        return torch.device("mps")
    return torch.device("cpu")


def local_path(uri: str, env_name: str, what: str, run_id: str) -> Path:
    """A local directory for a storage URI: the runtime override, the URI itself if it is local, or
    for s3:// a directory under the run's scratch (the sink stages and ships it)."""
    override = os.environ.get(env_name)
    if override:
        return Path(override)
    if uri.startswith("s3://"):
        return work_dir(run_id) / what.rpartition(".")[2]
    return Path(uri)


def setup_logging(output: Path | None) -> None:
    """Plain lines to stderr (and logs/train.log on rank 0); every handler redacts secrets."""
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if output is not None:
        (output / "logs").mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(output / "logs" / "train.log", encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(RedactingFilter())
        log.addHandler(h)
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation noise in run logs
    for noisy in ("transformers", "peft", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def write_status(output: Path, **fields: Any) -> None:
    """Atomically replace status.json: any backend reads progress from it (``elapsed_s``: seconds of training
    so far, over every attempt of the run; a finished run's stays what it ran)."""
    data = {"updated": utcnow_iso(), **fields}
    atomic_write_bytes(output / STATUS_FILE, json.dumps(data, indent=1).encode())


# ---------------------------------------------------------------------------- the run


class Run:
    """Holds the pieces the story needs; one instance per process."""

    def __init__(self, spec: RunSpec, dist: Dist):
        self.spec, self.cfg, self.dist = spec, spec.config, dist
        self.hp = spec.config.hyperparameters
        self.output = local_path(spec.storage.output, ENV_OUTPUT_DIR, "storage.output", spec.run_id)
        self.data_dir = local_path(spec.storage.dataset, ENV_DATA_DIR, "storage.dataset", spec.run_id)
        self.checkpoints = self.output / "checkpoints"
        self.sink: Sink = sink_for(spec)
        self.stop_signal: str | None = None
        self.stop_deadline: float | None = None  # monotonic time the stop grace after a signal runs out
        self.grace = stop_grace(spec)
        self.started = time.monotonic()
        self.peak_mem_mb = 0.0
        self.tb: Any = None
        self.previous_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ signals
    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            if self.stop_signal is None:
                self.stop_deadline = time.monotonic() + self.grace
            self.stop_signal = signal.Signals(signum).name
            log.warning("%s received: finishing the current step, then checkpointing if it fits in the %gs grace",
                        self.stop_signal, self.grace)

        self.previous_handlers = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore_signal_handlers(self) -> None:
        """train() is also a library call (benchmarks, the S3 wiring): leave the process as it was."""
        for sig, previous in self.previous_handlers.items():
            signal.signal(sig, previous)
        self.previous_handlers = {}

    # ------------------------------------------------------------------ pieces
    def prepare_data(self, tokenizer: Any) -> tuple[Batches, list, Any]:
        ds, seq = self.cfg.dataset, self.cfg.sequence_length
        tpl = self.cfg.expert.prompt_template
        train = load_split(self.data_dir / ds.train, ds.format, ds.on_bad_line, tpl, tokenizer, seq)
        val = load_split(self.data_dir / ds.val, ds.format, ds.on_bad_line, tpl, tokenizer, seq) if ds.val else None
        for split in (train, val):
            if split and split.stats.skipped_bad_lines:
                log.warning("%s: skipped %d bad line(s) (on_bad_line = skip)", split.stats.path,
                            split.stats.skipped_bad_lines)
        rows = pack(train.docs, seq) if self.cfg.packing else unpacked(train.docs)
        st = train.stats
        real = sum(len(r.ids) for r in rows)
        log.info("data: %d train records -> %d docs -> %d rows of <= %d tokens (fill %.0f%%, %d truncated)",
                 st.records, len(train.docs), len(rows), seq, 100 * real / (len(rows) * seq), st.truncated)
        batches = Batches(rows, self.cfg.batch_size, self.hp.seed, tokenizer.pad_token_id,
                          self.dist.rank, self.dist.world)
        val_rows = pack(val.docs, seq) if val else []
        return batches, val_rows, train.stats

    def total_steps(self, batches: Batches) -> int:
        if self.hp.max_steps:
            return self.hp.max_steps
        per_epoch = math.ceil(batches.batches_per_epoch / self.cfg.gradient_accumulation)
        return max(1, math.ceil(self.hp.num_epochs * per_epoch))

    def memory_check(self, device: Any) -> None:
        """Raise :class:`Stop` when RAM % or GPU memory % is over the hardware profile's threshold."""
        import psutil
        import torch

        hw = self.cfg.hardware
        ram = ram_percent()
        rss_mb = psutil.Process().memory_info().rss / 2**20
        gpu = None
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            gpu = 100.0 * (total - free) / total
            self.peak_mem_mb = max(self.peak_mem_mb, torch.cuda.max_memory_allocated(device) / 2**20)
        else:
            self.peak_mem_mb = max(self.peak_mem_mb, rss_mb)
        if ram > hw.ram_percent:
            raise Stop(exitcodes.MEMORY, f"memory guard: RAM use {ram:.1f}% is above hardware "
                       f"'{self.cfg.hardware_name}' ram_percent = {hw.ram_percent:g}%. {self._smaller_hint()}")
        if gpu is not None and gpu > hw.gpu_percent:
            raise Stop(exitcodes.MEMORY, f"memory guard: GPU memory use {gpu:.1f}% is above hardware "
                       f"'{self.cfg.hardware_name}' gpu_percent = {hw.gpu_percent:g}%. {self._smaller_hint()}")

    def _smaller_hint(self) -> str:
        return ("Use a smaller profile: lower batch_size (raise gradient_accumulation to keep the effective "
                "batch), lower sequence_length, enable gradient_checkpointing, or pick a *-resource-efficient "
                "hardware profile.")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model: Any, rows: list, device: Any, amp: Any) -> float | None:
        import torch

        if not rows:
            return None
        from trainpod_trainer.data import collate

        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(rows), self.cfg.batch_size):
                b = collate(rows[i : i + self.cfg.batch_size], 0)
                s, n = loss_sum(model, b, device, amp)
                total, count = total + s.item(), count + n
        model.train()
        return total / max(count, 1)

    def stage_previous(self) -> Path:
        """The previous stage's output as a local directory (``spec.init_from``).

        An s3:// output is fetched into the run's scratch: only the root artefacts that starting from it
        needs (adapter or full weights, metadata), not its checkpoints, which can be many times larger.
        """
        from trainpod_trainer.model import PREVIOUS_FILES

        uri = self.spec.init_from
        assert uri is not None
        if not uri.startswith("s3://"):
            return Path(uri)
        from trainpod import storage

        local = work_dir(self.spec.run_id) / "previous"
        local.mkdir(parents=True, exist_ok=True)
        store = storage.open_store(uri)
        fetched = []
        for name in PREVIOUS_FILES:
            data = store.read_bytes(name)
            if data is not None:
                atomic_write_bytes(local / name, data)
                fetched.append(name)
        if not fetched:
            raise TrainpodError(f"init_from {uri}: nothing to start from there (no adapter, weights or metadata.json)",
                                "init_from must be the output of a finished run; did the previous stage succeed?")
        log.info("init_from %s: fetched into %s", uri, local)
        return local

    # ------------------------------------------------------------------ outputs
    def metadata(self, state: ckpt.TrainerState, stats: Any, tokens_per_s: float) -> dict[str, Any]:
        """metadata.json in the format the tools that index trained experts read (``metadata-format.md``:
        ``expert``, ``model``, ``training``, ``hardware``, ``metadata``), plus trainpod's own keys."""
        cfg, spec = self.cfg, self.spec
        dur = state.elapsed_s
        return {
            "schema_version": METADATA_SCHEMA_VERSION,
            "run_id": spec.run_id,
            "preset": cfg.preset,
            "image": spec.image,
            "trainpod_version": spec.trainpod_version,
            "expert": {
                "name": cfg.expert.display_name,
                "role": cfg.expert.role,
                "group": cfg.expert.group,
                "specialization": cfg.expert.specialization,
                "id": cfg.expert_name,  # the [experts.NAME] table
            },
            "model": {
                "base": cfg.expert.base_model,
                "finetune": cfg.finetune,
                "lora_rank": cfg.lora.r if cfg.finetune == "lora" else None,
                "lora_alpha": cfg.lora.lora_alpha if cfg.finetune == "lora" else None,
            },
            "training": {
                "dataset": spec.storage.dataset,  # path or URI
                "dataset_name": cfg.dataset_name,
                "num_samples": stats.records,
                "num_epochs": cfg.hyperparameters.num_epochs,
                "steps": state.step,
                "batch_size": cfg.batch_size,
                "gradient_accumulation": cfg.gradient_accumulation,
                "world_size": self.dist.world,
                "effective_batch_size": cfg.batch_size * cfg.gradient_accumulation * self.dist.world,
                "deepspeed": cfg.deepspeed,
                "learning_rate": cfg.hyperparameters.learning_rate,
                "sequence_length": cfg.sequence_length,
                "duration_seconds": round(dur, 3),
                "duration_minutes": round(dur / 60, 3),
            },
            "hardware": {
                "name": cfg.hardware.name,  # display name
                "profile": cfg.hardware_name,  # the [hardware.NAME] table
                "device": cfg.hardware.device,
                "fp16": cfg.precision == "fp16",
                "bf16": cfg.precision == "bf16",
            },
            "metadata": {"created": utcnow_iso(), "git_commit": spec.git_commit},
            "final_train_loss": state.last_loss,
            "final_val_loss": state.last_val_loss,
            "best_val_loss": state.best_val_loss,
            "best_step": state.best_step,
            "tokens_per_second": round(tokens_per_s, 1),
            "peak_memory_mb": round(self.peak_mem_mb, 1),
            "dataset_manifest_sha256": spec.dataset_manifest_sha256,
            "init_from": spec.init_from,
        }


def ram_percent() -> float:
    """Memory use in % of what this process may use: the cgroup limit inside a container with a
    memory limit (where the OOM killer acts long before the host is full), else the machine's RAM."""
    import psutil

    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max":
            break
        limit = int(limit_text)
        if 0 < limit < psutil.virtual_memory().total:
            return 100.0 * usage / limit
        break
    return psutil.virtual_memory().percent


def loss_sum(model: Any, batch: dict[str, Any], device: Any, amp: Any) -> tuple[Any, int]:
    """Sum of per-token cross-entropy over the batch's targets, and the number of targets.

    Targets are already shifted per document (see :mod:`trainpod_trainer.data`), so the logits at
    position i are compared with ``targets[i]`` directly; the loss is computed in fp32.
    """
    import torch

    ids = batch["input_ids"].to(device, non_blocking=True)
    pos = batch["position_ids"].to(device, non_blocking=True)
    targets = batch["targets"].to(device, non_blocking=True)
    with amp():
        logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
    n = int((targets != -100).sum())
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                             ignore_index=-100, reduction="sum")
    return loss, n


def make_scheduler(optimizer: Any, kind: str, warmup: int, total: int) -> Any:
    from transformers import get_scheduler

    return get_scheduler(kind, optimizer, num_warmup_steps=min(warmup, total), num_training_steps=total)


def _is_oom(exc: BaseException) -> bool:
    import torch

    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def train(spec: RunSpec, sink: Sink | None = None) -> int:
    """Run the whole story for ``spec``; returns an exit code from :mod:`exitcodes`.

    ``sink`` receives complete checkpoints and the finished output (default: from storage.output).
    """
    dist = Dist.from_env()
    run = Run(spec, dist)
    if sink is not None:
        run.sink = sink
    out = run.output
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
    already_done = dist.main and run.sink.start(out)  # before logging: a resumed run appends to its old log
    setup_logging(out if dist.main else None)
    if not dist.main:  # rank 0 tells the story; the other ranks only speak up when something is wrong
        for handler in log.handlers:
            handler.setLevel(logging.WARNING)
    try:
        if dist.world > 1:
            init_process_group(spec.config.hardware.device, dist)
        # rank 0 reads the shared output location; every rank on every node follows its answer
        if from_rank0(dist.main and (already_done or (out / DONE_FILE).exists()), dist):
            log.info("%s exists: run %s already finished, nothing to do",
                     spec.storage.done_marker if already_done else out / DONE_FILE, spec.run_id)
            return exitcodes.OK
        run.install_signal_handlers()
        return _train(run, dist)
    finally:
        _close(run)


def _train(run: Run, dist: Dist) -> int:
    """The story after setup; ``train`` owns setup and teardown."""
    import numpy as np
    import torch

    from trainpod_trainer.model import load_model, load_tokenizer, save_weights

    spec, out = run.spec, run.output
    cfg, hp = run.cfg, run.hp
    if dist.main:
        spec.write(out / SPEC_FILE)  # makes the output self-describing (for `trainpod evaluate`)

    device = pick_device(cfg.hardware.device, dist)
    if dist.main:  # remote dataset + newest complete remote checkpoint into the local directories
        run.sink.stage(run.data_dir, run.checkpoints, spec.resume)
    elif dist.local_rank == 0:  # another node (its own disk): the same, without writing anything back
        run.sink.fetch(run.data_dir, run.checkpoints, spec.resume)
    barrier(dist)
    import random

    random.seed(hp.seed)
    np.random.seed(hp.seed)
    torch.manual_seed(hp.seed)

    log.info("run %s: preset %s, expert %s (%s), hardware %s (%s, %s), %s, world size %d",
             spec.run_id, cfg.preset, cfg.expert_name, cfg.expert.base_model, cfg.hardware_name,
             device, cfg.precision, cfg.finetune, dist.world)
    tokenizer = load_tokenizer(cfg.expert.base_model)
    batches, val_rows, stats = run.prepare_data(tokenizer)
    picked = None  # rank 0 picks from the shared output location; every rank loads that one
    if dist.main and spec.resume:
        found = ckpt.find_resume(run.checkpoints)
        picked = found.name if found else None
    picked = from_rank0(picked, dist)
    init_from = None
    if spec.init_from and picked is None:  # a resumed run continues its own checkpoint instead
        init_from = run.stage_previous() if dist.main else None
        init_from = Path(from_rank0(str(init_from) if init_from else None, dist))
        log.info("init_from %s: starting from its %s", spec.init_from,
                 "adapter" if cfg.finetune == "lora" else "weights")
    model = load_model(cfg, device, init_from)
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters())
    log.info("model: %s parameters, %s trainable (%.2f%%)", f"{n_total:,}", f"{n_train:,}", 100 * n_train / n_total)
    total = run.total_steps(batches)
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    scheduler = make_scheduler(optimizer, hp.lr_scheduler, hp.warmup_steps, total)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    engine = None
    frozen_base = cfg.finetune == "lora"
    if cfg.deepspeed:
        ds_config = ds.build_config(cfg, dist.world, model.config.hidden_size)
        engine = ds.initialize(model, optimizer, scheduler, ds_config)
        amp_dtype, scaler = None, None  # DeepSpeed runs bf16/fp16 itself (the config's sections)
        log.info("deepspeed: ZeRO stage %d (%s), micro batch %d, accumulation %d, train batch %d",
                 engine.zero_optimization_stage(), cfg.deepspeed, ds_config["train_micro_batch_size_per_gpu"],
                 ds_config["gradient_accumulation_steps"], ds_config["train_batch_size"])

    def amp() -> Any:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    # ---------------------------------------------------------------- resume
    state = ckpt.TrainerState()
    resume_from = run.checkpoints / picked if picked else None
    if resume_from is not None and _any_rank(not (resume_from / "manifest.json").is_file(), dist):
        raise TrainpodError(f"checkpoint {picked} (picked by rank 0) is not visible to every rank under "
                            f"{run.checkpoints}", "multi-node runs need storage.output on storage every node sees")
    if resume_from is not None:
        if engine is not None:
            ds.load(engine, resume_from, frozen_base)
            state = ckpt.load_state(resume_from)
        else:
            state = ckpt.load(resume_from, model, optimizer, scheduler, scaler)
        log.info("resumed from %s (step %d, epoch %d, batch %d)", resume_from, state.step, state.epoch, state.batch)
    elif dist.main and list_checkpoints(run.checkpoints):
        log.warning("%s has no complete checkpoint (manifests missing or invalid): starting from step 0",
                    run.checkpoints)

    train_model = model if engine is None else engine
    if engine is None and dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    if dist.main:
        from trainpod_trainer.tracking import Trackers

        run.tb = Trackers(out, spec, state.step)

    # ---------------------------------------------------------------- train
    stream = batches.iterate(Position(state.epoch, state.batch))
    ga = cfg.gradient_accumulation
    is_tty = sys.stderr.isatty() and dist.main
    window_tokens, window_start = 0, time.monotonic()
    tokens_per_s = 0.0
    session_tokens, session_start = 0, time.monotonic()
    elapsed_base = state.elapsed_s
    code, reason = exitcodes.OK, "finished"
    rng_before = ckpt.rng_state()
    pos_before = Position(state.epoch, state.batch)
    rolled_back = False  # an OOM mid-step: the state to save is the one before that step

    last_saved = state.step if resume_from is not None else -1  # same value on every rank

    last_saved_at = time.monotonic()  # the clock of checkpoint_every_minutes
    save_seconds: float | None = None  # how long the last checkpoint took (local write; the upload is async)

    def save_checkpoint(st: ckpt.TrainerState, rng: dict[str, Any]) -> None:
        nonlocal last_saved, last_saved_at, save_seconds
        t0 = time.monotonic()
        path = run.checkpoints / checkpoint_name(st.step)
        if engine is not None:
            if dist.main:
                ckpt.fresh_dir(path)
            barrier(dist)
            ds.save(engine, run.checkpoints, path.name, frozen_base)  # every rank writes its ZeRO shard
            barrier(dist)  # all shards on disk before rank 0 writes the manifest
            if dist.main:
                ckpt.finish(path, st, rng)
        elif dist.main:
            ckpt.save(path, model, optimizer, scheduler, st, rng, scaler)
        last_saved, last_saved_at, save_seconds = st.step, time.monotonic(), time.monotonic() - t0
        if dist.main:
            removed = run.sink.prune(run.checkpoints, hp.keep_checkpoints)
            log.info("checkpoint %s written%s", path.name,
                     f" (removed {', '.join(p.name for p in removed)})" if removed else "")
            run.sink.on_checkpoint(path)
        barrier(dist)

    if dist.main:
        write_status(out, state="running", step=state.step, max_steps=total, loss=None, run_id=spec.run_id,
                     elapsed_s=round(state.elapsed_s, 1))
    log.info("training: %d steps, effective batch %d (batch %d x accumulation %d x world %d), lr %g %s, warmup %d",
             total, cfg.batch_size * ga * dist.world, cfg.batch_size, ga, dist.world, hp.learning_rate,
             hp.lr_scheduler, hp.warmup_steps)
    train_model.train()
    try:
        while state.step < total:
            rng_before, pos_before = ckpt.rng_state(), Position(state.epoch, state.batch)
            micro = []
            for _ in range(ga):
                pos, b = next(stream)
                micro.append(b)
            # Normalise by the targets of the whole optimizer step on *all* ranks; DDP and DeepSpeed
            # average gradients over ranks, so x world makes the update (and the logged loss, summed
            # over ranks) exactly those of one rank training on the union of the ranks' rows.
            n_targets, real = (int(v) for v in all_sum(dist, sum(int((b["targets"] != -100).sum()) for b in micro),
                                                       sum(b["real_tokens"] for b in micro)))
            scale = dist.world / max(n_targets, 1)
            step_loss = 0.0
            try:
                for i, b in enumerate(micro):
                    last = engine is not None or dist.world == 1 or i == ga - 1
                    with contextlib.nullcontext() if last else train_model.no_sync():
                        s, _ = loss_sum(train_model, b, device, amp)
                        if engine is not None:  # DeepSpeed steps (and clips) at the accumulation boundary
                            engine.backward(s * scale, scale_wrt_gas=False)
                            engine.step()
                        else:
                            (scaler.scale(s * scale) if scaler else s * scale).backward()
                    step_loss += s.item() / max(n_targets, 1)
                if engine is not None:
                    grad_norm = float(engine.get_global_grad_norm() or 0.0)
                else:
                    if scaler:
                        scaler.unscale_(optimizer)
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm))
                    if scaler:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                step_loss = all_sum(dist, step_loss)[0]
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                optimizer.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                state.epoch, state.batch = pos_before.epoch, pos_before.batch
                rolled_back = True
                raise Stop(exitcodes.MEMORY, f"out of memory on {device} at step {state.step + 1}. "
                           f"{run._smaller_hint()}") from None
            state.step += 1
            state.epoch, state.batch = pos.epoch, pos.batch
            state.tokens_seen += real
            window_tokens += real
            session_tokens += real
            state.last_loss = step_loss
            state.elapsed_s = elapsed_base + time.monotonic() - session_start
            lr = scheduler.get_last_lr()[0]

            if state.step % hp.logging_steps == 0 or state.step == total:
                now = time.monotonic()
                tokens_per_s = window_tokens / max(now - window_start, 1e-9)
                window_tokens, window_start = 0, now
                if dist.main:
                    if is_tty:
                        sys.stderr.write("\r\033[K")
                    log.info("step %d/%d loss %.4f lr %.3g grad_norm %.3f tokens/s %.0f mem %.0f MB",
                             state.step, total, step_loss, lr, grad_norm, tokens_per_s, run.peak_mem_mb)
                    write_status(out, state="running", step=state.step, max_steps=total, loss=step_loss,
                                 elapsed_s=round(state.elapsed_s, 1),
                                 lr=lr, tokens_per_s=round(tokens_per_s, 1), epoch=state.epoch, run_id=spec.run_id)
            elif is_tty:
                sys.stderr.write(f"\r\033[Kstep {state.step}/{total} loss {step_loss:.4f}")
                sys.stderr.flush()
            # one line per step, written after this step's evaluation: the run report plots these
            record = {"step": state.step, "loss": step_loss, "lr": lr, "grad_norm": grad_norm, "tokens": real,
                      "pid": os.getpid(), "elapsed_s": round(state.elapsed_s, 3),
                      "mem_mb": round(run.peak_mem_mb, 1) or None}  # None: not measured yet
            if run.tb is not None:
                run.tb.add_scalar("train/loss", step_loss, state.step)
                run.tb.add_scalar("train/lr", lr, state.step)
                run.tb.add_scalar("train/grad_norm", grad_norm, state.step)
                run.tb.add_scalar("train/tokens_per_s", tokens_per_s, state.step)
                run.tb.add_scalar("train/peak_memory_mb", run.peak_mem_mb, state.step)

            stop_early = False
            if val_rows and (state.step % hp.eval_steps == 0 or state.step == total):
                val = run.evaluate(model, val_rows, device, amp)
                state.last_val_loss = val
                improved = state.best_val_loss is None or val < state.best_val_loss
                if improved:
                    state.best_val_loss, state.best_step, state.evals_without_improvement = val, state.step, 0
                    with ds.gathered(engine):
                        if dist.main:
                            ckpt.save_best(out, model, tokenizer, state.step, val)
                else:
                    state.evals_without_improvement += 1
                log.info("eval step %d: val loss %.4f (best %.4f at step %d)", state.step, val,
                         state.best_val_loss, state.best_step)
                record["val_loss"] = val
                if run.tb is not None:
                    run.tb.add_scalar("eval/loss", val, state.step)
                patience = hp.early_stopping_patience
                stop_early = bool(patience and state.evals_without_improvement >= patience)
                if stop_early:
                    log.info("early stopping: no val improvement in %d evaluations", patience)

            if dist.main:
                with (out / "logs" / METRICS_FILE).open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
            rng_after = ckpt.rng_state()
            if state.step % hp.save_steps == 0 and state.step < total and not stop_early:
                save_checkpoint(state, rng_after)
            try:
                run.memory_check(device)
                mem_stop = None
            except Stop as exc:
                mem_stop = exc
            # --max-runtime for every backend (RunPod's pod watchdog is the backstop): this launch's wall time
            late = bool(cfg.max_runtime_minutes) and time.monotonic() - run.started > cfg.max_runtime_minutes * 60
            # S3 refused the run's credentials (a pod's STS session expired): stop with a checkpoint kept locally
            refused = run.sink.stop_reason() if dist.main else None
            every = hp.checkpoint_every_minutes * 60
            due = bool(every) and dist.main and time.monotonic() - last_saved_at >= every  # rank 0's clock
            # one collective for the stop reasons and the clock: any rank's reason stops all ranks at this step
            mem_any, sig_any, late_any, refused_any, due_any = (v > 0 for v in all_sum(
                dist, mem_stop is not None, run.stop_signal is not None, late, refused is not None, due))
            if mem_any:
                raise mem_stop or Stop(exitcodes.MEMORY, f"memory guard tripped on another rank at step {state.step}")
            if sig_any:
                raise Stop(exitcodes.STOPPED, f"stopped by {run.stop_signal or 'signal'} at step {state.step}")
            if late_any:
                raise Stop(exitcodes.STOPPED, f"max_runtime_minutes = {cfg.max_runtime_minutes:g} reached "
                           f"at step {state.step}")
            if refused_any:
                raise Stop(exitcodes.STOPPED, f"{refused or 'S3 refused the run credentials on rank 0'} "
                           f"(stopped at step {state.step}, local checkpoints in {run.checkpoints})")
            if stop_early:
                break
            if due_any and state.step != last_saved and state.step < total:
                save_checkpoint(state, rng_after)
    except Stop as stop:
        code, reason = stop.code, stop.reason
        rng = rng_before if rolled_back else ckpt.rng_state()
        left = None if run.stop_deadline is None else run.stop_deadline - time.monotonic()
        # after a signal, a checkpoint that cannot finish before SIGKILL is not started (rank 0's estimate)
        fits = from_rank0(left is None or save_seconds is None or SAVE_SAFETY * save_seconds <= left, dist)
        if state.step > 0 and state.step != last_saved:
            if fits:
                save_checkpoint(state, rng)
            else:
                reason += (f"; no time for a new checkpoint in the {run.grace:g}s grace (the last one took "
                           f"{save_seconds or 0:.1f}s): the last complete one stands")
                state.step = max(last_saved, 0)
        if dist.main:
            where = f"complete checkpoint at step {state.step}" if state.step else "no checkpoint (step 0)"
            log.error("%s; %s; resume with `trainpod launch %s --resume %s`", reason, where, cfg.preset, spec.run_id)
            write_status(out, state="stopped", step=state.step, max_steps=total, exit_code=code,
                         elapsed_s=round(state.elapsed_s, 1),
                         reason=redact_text(reason), run_id=spec.run_id)
        return code

    # ---------------------------------------------------------------- final outputs
    tokens_per_s = session_tokens / max(time.monotonic() - session_start, 1e-9)
    if val_rows and state.last_val_loss is None:
        state.last_val_loss = run.evaluate(model, val_rows, device, amp)
    with ds.gathered(engine):
        if dist.main:
            save_weights(model, out)
    if dist.main:
        tokenizer.save_pretrained(str(out))
        meta = run.metadata(state, stats, tokens_per_s)
        atomic_write_bytes(out / METADATA_FILE, json.dumps(meta, indent=2).encode())
        write_status(out, state="succeeded", step=state.step, max_steps=total, elapsed_s=round(state.elapsed_s, 1),
                     loss=state.last_loss, val_loss=state.last_val_loss,
                     exit_code=exitcodes.OK, run_id=spec.run_id)
        atomic_write_bytes(out / DONE_FILE, json.dumps({"run_id": spec.run_id, "step": state.step,
                                                        "finished": utcnow_iso()}).encode())
        log.info("done: %d steps in %.1fs, %.0f tokens/s, final val loss %s, outputs in %s", state.step,
                 state.elapsed_s, tokens_per_s, f"{state.last_val_loss:.4f}" if state.last_val_loss else "n/a", out)
        run.sink.on_finish(out)
    return exitcodes.OK


def init_process_group(device_kind: str, dist: Dist) -> None:
    """nccl on CUDA, gloo on CPU. Done before the DONE check, so every rank can follow rank 0's answer."""
    import torch
    import torch.distributed as tdist

    if device_kind == "cuda":
        torch.cuda.set_device(dist.local_rank)
    tdist.init_process_group("nccl" if device_kind == "cuda" else "gloo")


def from_rank0(value: Any, dist: Dist) -> Any:
    """Rank 0's ``value`` on every rank: decisions read from the shared output (DONE, resume) are
    made once, so ranks on different nodes cannot disagree about them."""
    if dist.world == 1:
        return value
    import torch.distributed as tdist

    box = [value]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(dist: Dist, *values: float) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64, one collective)."""
    if dist.world == 1:
        return [float(v) for v in values]
    import torch
    import torch.distributed as tdist

    t = torch.tensor(values, dtype=torch.float64)
    if tdist.get_backend() == "nccl":
        t = t.cuda()
    tdist.all_reduce(t)
    return t.tolist()


def barrier(dist: Dist) -> None:
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()


def _any_rank(flag: bool, dist: Dist) -> bool:
    """True if the flag is set on any rank, so all ranks stop at the same step."""
    return all_sum(dist, float(flag))[0] > 0


def stop_grace(spec: RunSpec) -> float:
    """Seconds between SIGTERM and SIGKILL: the spec's ``stop_grace_seconds``, at most RunPod's ~5 s for spot."""
    grace = spec.stop_grace_seconds
    return min(grace, SPOT_GRACE_SECONDS) if spec.config.spot else grace


def _close(run: Run) -> None:
    # queued checkpoint uploads finish within the stop grace on every exit path (what is left of it after a signal)
    run.sink.close(None if run.stop_deadline is None else max(run.stop_deadline - time.monotonic(), 0.0))
    run.restore_signal_handlers()
    if run.tb is not None:
        run.tb.close()
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """The process entrypoint; under ``trainpod_trainer.launch`` each rank also records its exit code."""
    from trainpod_trainer.launch import record_exit_code

    code = _main(argv)
    record_exit_code(code)
    return code


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainpod_trainer",
                                 description="Run one training job from a RunSpec.")
    ap.add_argument("--spec", help="RunSpec JSON file (default: $TRAINPOD_RUN_SPEC)")
    args = ap.parse_args(argv)
    try:
        spec = RunSpec.load(args.spec)
    except TrainpodError as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    try:
        return train(spec)
    except (TrainpodError, DataError) as exc:
        return _fail(spec, exitcodes.BAD_INPUT, redact_text(str(exc)))
    except Exception as exc:  # a crash: log it (redacted) where backends look, with a distinct code
        full = _disk_full_message(exc, spec)
        if full:
            return _fail(spec, exitcodes.FAILED, full)
        import traceback

        tb = redact_text("".join(traceback.format_exception(exc)))
        return _fail(spec, exitcodes.FAILED, f"trainer crashed: {redact_text(str(exc))}\n{tb}")


def _disk_full_message(exc: BaseException, spec: RunSpec) -> str | None:
    """A clear message if ``exc`` comes from a full disk, else None.

    Why: a full output disk is not a trainer bug, so no traceback; the user needs to hear that the
    last complete checkpoint is intact and the run resumes once there is room. torch.save reports
    ENOSPC as a RuntimeError without errno, so the output file system's free space is checked too.
    """
    chain: BaseException | None = exc
    full = False
    while chain is not None and not full:
        full = isinstance(chain, OSError) and chain.errno in (errno.ENOSPC, errno.EDQUOT)
        chain = chain.__cause__ or chain.__context__
    out = os.environ.get(ENV_OUTPUT_DIR) or spec.storage.output
    if not full and not out.startswith("s3://"):
        with contextlib.suppress(OSError):
            st = os.statvfs(out)
            full = st.f_bavail * st.f_frsize < 1 << 20
    if not full:
        return None
    return (f"no space left on device while writing the outputs in {out} ({redact_text(str(exc))}); "
            "the last complete checkpoint (manifest written last) is intact\n"
            "hint: free space or give the run a larger disk (TRAINPOD_OUTPUT_DIR, containerDiskInGb), "
            "then launch the same run again: it resumes from that checkpoint")


def _fail(spec: RunSpec, code: int, message: str) -> int:
    if log.handlers:
        log.error("%s", message)
    else:
        print(f"error: {message}", file=sys.stderr)
    if int(os.environ.get("RANK", 0)) == 0:
        try:
            out = local_path(spec.storage.output, ENV_OUTPUT_DIR, "storage.output", spec.run_id)
            if out.is_dir():
                write_status(out, state="failed", exit_code=code, reason=message.splitlines()[0],
                             run_id=spec.run_id)
        except (TrainpodError, OSError):
            pass
    return code
