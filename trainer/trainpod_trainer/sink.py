"""Where finished pieces of a run go besides the local output directory.

The trainer always writes to a local directory. A :class:`Sink` is told when a checkpoint is
complete (its manifest written) and when the whole run is finished (outputs + DONE written), so the
S3 uploader can ship checkpoints as they appear and the final artefacts at the end. Locally there is
nothing to do: :class:`LocalSink`.
"""

from __future__ import annotations

from pathlib import Path


class Sink:
    """Base sink: both hooks do nothing. Subclasses must not raise on transient failures."""

    def on_checkpoint(self, path: Path) -> None:
        """``path`` is a complete checkpoint directory (manifest written last)."""

    def on_finish(self, output_dir: Path) -> None:
        """``output_dir`` holds the final artefacts, metadata.json and DONE; a remote sink ships DONE
        last, since its presence means "finished" to every reader."""


class LocalSink(Sink):
    """The output directory *is* the destination."""


def sink_for(output_uri: str) -> Sink:
    """The sink for a run's ``storage.output`` URI. Only local outputs are wired so far."""
    if output_uri.startswith("s3://"):
        from trainpod.errors import TrainpodError

        raise TrainpodError(
            f"storage.output {output_uri!r}: the S3 sink is not wired into the trainer yet",
            "run with a local output directory (TRAINPOD_OUTPUT_DIR) until trainpod.storage provides the uploader",
        )
    return LocalSink()
