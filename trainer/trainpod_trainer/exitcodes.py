"""The trainer's exit codes: :mod:`trainpod.contract`'s table under the trainer's short names.

The meaning of each (and the run state a backend reads from it) is written once, in the contract.
"""

from __future__ import annotations

from trainpod.contract import EXIT_BAD_INPUT as BAD_INPUT
from trainpod.contract import EXIT_FAILED as FAILED
from trainpod.contract import EXIT_MEMORY as MEMORY
from trainpod.contract import EXIT_OK as OK
from trainpod.contract import EXIT_STOPPED as STOPPED

__all__ = ["BAD_INPUT", "FAILED", "MEMORY", "OK", "STOPPED"]
