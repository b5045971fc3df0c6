"""The trainer's exit codes, in one place: launchers and backends map them to run states."""

from __future__ import annotations

OK = 0
"""Training finished (or a DONE marker was already there): outputs and DONE are written."""
FAILED = 1
"""An unexpected error (a bug, a crash in a library): see logs/train.log."""
BAD_INPUT = 2
"""The RunSpec, the dataset or the model reference is invalid; the message names what and where."""
STOPPED = 3
"""SIGTERM/SIGINT arrived: the current step finished, a complete checkpoint was written; resume later."""
MEMORY = 4
"""The memory guard (RAM % / GPU % over the hardware profile's threshold) or an out-of-memory error
stopped training after writing a checkpoint; use a smaller profile (batch, sequence length)."""
