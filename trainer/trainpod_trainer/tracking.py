"""Metric trackers: TensorBoard always (when installed), Weights & Biases when configured.

One object with TensorBoard's ``add_scalar``/``close`` surface so the training loop logs once and every
tracker gets it. W&B is opt-in: it starts only when ``WANDB_API_KEY`` or ``WANDB_MODE`` is set and the
``wandb`` package is importable (``pip install wandb``; not in the image by default). ``WANDB_MODE=offline``
writes the run under ``<output>/wandb`` without any network, for air-gapped pods; sync it later with
``wandb sync``. The W&B run id is the trainpod run id, so a resumed run continues the same W&B run.
Nothing secret is sent as config: the RunSpec holds no secrets by construction.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from trainpod.deps import wandb_requested

log = logging.getLogger("trainpod_trainer")


class Trackers:
    def __init__(self, out: Path, spec: Any, start_step: int):
        self._tb: Any = None
        self._wandb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step or None)
        except ImportError:  # tensorboard is optional at runtime
            log.warning("tensorboard is not installed: no event files")
        if wandb_requested():
            try:
                import wandb
            except ImportError:
                log.warning("WANDB_API_KEY/WANDB_MODE is set but wandb is not installed: `pip install wandb`")
            else:
                self._wandb = wandb.init(
                    project=os.environ.get("WANDB_PROJECT", "trainpod"),
                    name=spec.run_id,
                    id=spec.run_id,
                    resume="allow",
                    dir=str(out),
                    config=spec.config.model_dump(mode="json"),
                    tags=[spec.config.preset, spec.config.hardware_name, spec.remote],
                )
                log.info("W&B run %s (%s mode)", spec.run_id, os.environ.get("WANDB_MODE", "online"))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if self._tb is not None:
            self._tb.add_scalar(tag, value, step)
        if self._wandb is not None:
            self._wandb.log({tag: value}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
