"""DeepSpeed engine path: a preset's ``deepspeed = "zero2"`` → a filled config → an engine → checkpoints.

Why trainpod fills the ``"auto"`` values itself: the batch, accumulation, clipping and precision are
already decided (and cross-checked) by the preset; a DeepSpeed JSON that restated them could silently
disagree. So ``profiles/deepspeed/*.json`` say ``"auto"`` and :func:`build_config` fills them from the
resolved :class:`~trainpod.config.schema.TrainingConfig`. A value that is *not* ``"auto"`` but disagrees
with the preset is an error naming the file and key, and so is an ``"auto"`` nobody fills.

The optimizer and scheduler are the same objects as on the non-DeepSpeed path (torch AdamW + the
transformers schedule from the hyperparameters), handed to ``deepspeed.initialize`` as client objects,
so switching a preset to ZeRO changes the memory layout, not the maths. A config with its own
``optimizer``/``scheduler`` section is refused for the same reason.

Checkpoints: every rank calls ``engine.save_checkpoint`` into trainpod's ``step-NNNNNNNN`` directory
(ZeRO shards the optimizer state, so each rank writes its own part); rank 0 then adds
``trainer_state.json`` and ``rng.pt`` and writes the manifest last, after a barrier, so a directory is
complete only when every rank's shard is on disk (see :mod:`trainpod_trainer.checkpoint`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainpod.config.loader import DEFAULTS_DIR
from trainpod.config.schema import TrainingConfig
from trainpod.contract import ENV_DEEPSPEED_CONFIG
from trainpod.errors import ConfigError

CONFIG_ENV = ENV_DEEPSPEED_CONFIG
AUTO = "auto"


def config_path(name: str) -> Path:
    """``zero2`` → trainpod's packaged ``profiles/deepspeed/zero2.json``; a path to a ``.json`` file is used as is."""
    if name.endswith(".json"):
        path = Path(name)
    else:
        path = DEFAULTS_DIR / "deepspeed" / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise ConfigError(f"deepspeed config {name!r}: {path} not found",
                          f"packaged configs: {', '.join(known) or '(none)'}; or give a path to a .json file")
    return path


def build_config(cfg: TrainingConfig, world: int, hidden_size: int, name: str | None = None) -> dict[str, Any]:
    """The DeepSpeed config for this run: the named JSON with every ``"auto"`` filled from the preset."""
    name = name or os.environ.get(CONFIG_ENV) or cfg.deepspeed
    if not name:
        raise ConfigError("no deepspeed config named", f"set deepspeed = \"zero2\" in the preset or ${CONFIG_ENV}")
    path = config_path(name)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})", "fix the file") from None
    for section in ("optimizer", "scheduler"):
        if section in raw:
            raise ConfigError(f"{path}: key '{section}' is not allowed",
                              "trainpod builds AdamW and the LR schedule from the preset's hyperparameters; "
                              "remove the section")
    hp = cfg.hyperparameters
    micro, ga = cfg.batch_size, cfg.gradient_accumulation
    fixed: dict[tuple[str, ...], Any] = {
        ("train_micro_batch_size_per_gpu",): micro,
        ("gradient_accumulation_steps",): ga,
        ("train_batch_size",): micro * ga * world,
        ("gradient_clipping",): hp.max_grad_norm,
        ("bf16", "enabled"): cfg.precision == "bf16",
        ("fp16", "enabled"): cfg.precision == "fp16",
    }
    sized = {  # HF's heuristics for bucket sizes from the model's hidden size
        ("zero_optimization", "reduce_bucket_size"): hidden_size * hidden_size,
        ("zero_optimization", "allgather_bucket_size"): hidden_size * hidden_size,
        ("zero_optimization", "stage3_prefetch_bucket_size"): int(0.9 * hidden_size * hidden_size),
        ("zero_optimization", "stage3_param_persistence_threshold"): 10 * hidden_size,
    }
    out = raw  # parsed just above, used nowhere else: filled in place
    for keys, value in fixed.items():
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        current = node.get(keys[-1], AUTO)
        if current != AUTO and current != value:
            raise ConfigError(f"{path}: {'.'.join(keys)} = {current!r} disagrees with preset '{cfg.preset}' "
                              f"({value!r})", "set it to \"auto\"; trainpod fills it from the preset")
        node[keys[-1]] = value
    for (section, key), value in sized.items():
        if out.get(section, {}).get(key) == AUTO:
            out[section][key] = value
    zero = out.get("zero_optimization", {})
    if "offload_optimizer" in zero:
        # the client optimizer is torch AdamW (same maths as without DeepSpeed); allow it on offloaded state
        out.setdefault("zero_force_ds_cpu_optimizer", False)
    left = list(_autos(out))
    if left:
        raise ConfigError(f"{path}: \"auto\" left unfilled at {', '.join(left)}",
                          "trainpod fills batch, accumulation, clipping, precision and bucket sizes; "
                          "give a number for the rest")
    return out


def _autos(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _autos(v, f"{prefix}{k}.")
    elif node == AUTO:
        yield prefix.rstrip(".")


def initialize(model: Any, optimizer: Any, scheduler: Any, config: dict[str, Any]) -> Any:
    """A DeepSpeed engine around our model, optimizer and scheduler (process group already up)."""
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config,
                                      dist_init_required=False)
    return engine


@contextlib.contextmanager
def gathered(engine: Any) -> Iterator[None]:
    """Full parameters on every rank while inside (ZeRO-3 partitions them); every rank must enter."""
    if engine is None or engine.zero_optimization_stage() < 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
        yield


def save(engine: Any, checkpoints: Path, tag: str, frozen_base: bool) -> None:
    """Every rank writes its part of ``checkpoints/tag`` (no ``latest`` file: our manifest decides)."""
    engine.save_checkpoint(str(checkpoints), tag=tag, save_latest=False, exclude_frozen_parameters=frozen_base)


def load(engine: Any, directory: Path, frozen_base: bool) -> None:
    """Restore module, optimizer shards and LR scheduler from a complete checkpoint directory."""
    path, _ = engine.load_checkpoint(str(directory.parent), tag=directory.name, load_module_strict=not frozen_base,
                                     load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise ConfigError(f"{directory}: DeepSpeed found no checkpoint to load",
                          "the directory has a manifest but no DeepSpeed states; was it written without deepspeed?")
