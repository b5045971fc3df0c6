"""Datasets: read jsonl splits, render prompts, tokenize, pack, and batch deterministically.

Packing choice: documents are packed into rows of ``sequence_length`` tokens (best-fit decreasing),
and each document restarts its ``position_ids`` at 0. With ``attention_mask=None`` transformers
(>= 4.54, PR #39194) turns restarting position ids into a block-diagonal causal mask for sdpa and
eager attention, and flash-attention uses them as varlen boundaries, so attention never crosses a
document boundary
(``tests/unit/test_trainer_data.py`` checks that a packed document's logits equal the logits of the
same document alone). The targets are shifted *per document* here (the last token of a document has
no target), so no token is ever trained to predict the next document's first token. Compared with
per-batch padding this removes nearly all padding work: on CPU every padded position costs as
much as a real one (see ``benchmarks/train_throughput.py``).

Loss is taken on the response only for instruction data (prompt targets are ``IGNORE``), and on
every token for ``text`` data. The batch order is a function of (seed, epoch) only, so a resumed run
sees exactly the batches the uninterrupted run would have seen from its saved position.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainpod.errors import TrainpodError

IGNORE = -100
INPUT_SECTION = "### Input:\n{input}\n"


class DataError(TrainpodError):
    """A dataset problem the user can fix: the message names the file (and line)."""


@dataclass(frozen=True)
class Document:
    """One tokenized example: ``ids`` and per-position next-token ``targets`` (IGNORE = no loss)."""

    ids: list[int]
    targets: list[int]


@dataclass
class SplitStats:
    path: str
    records: int = 0
    skipped_bad_lines: int = 0
    dropped_no_target: int = 0
    truncated: int = 0
    tokens: int = 0
    label_tokens: int = 0


@dataclass
class Split:
    docs: list[Document]
    stats: SplitStats
    records: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------- reading


def read_jsonl(path: Path, fmt: str, on_bad_line: str, stats: SplitStats) -> list[dict[str, Any]]:
    """Parse and validate every line; errors name ``file:line``. Blank lines are ignored."""
    if not path.is_file():
        raise DataError(f"{path}: dataset split not found", "check the dataset table's path and split names")
    out = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:  # decoded per line, so a wrong encoding is a DataError naming file:line, not a crash
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a UTF-8 BOM is fine
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: not UTF-8 ({exc.reason} at byte {exc.start} of the line)",
                    "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8` or `iconv -f utf-16 -t utf-8`)",
                ) from None
            if not line.strip():
                continue
            try:
                rec = _validate(json.loads(line), fmt)
            except ValueError as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                if on_bad_line == "skip":
                    stats.skipped_bad_lines += 1
                    continue
                raise DataError(
                    f"{path}:{lineno}: {reason}",
                    "fix the line, or set on_bad_line = \"skip\" in the dataset table to skip bad lines",
                ) from None
            out.append(rec)
    stats.records = len(out)
    if not out:
        raise DataError(f"{path}: split is empty (no valid records)", "every split named in the dataset table needs data")
    return out


def _validate(rec: Any, fmt: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    kind = fmt
    if kind == "auto":
        kind = "text" if "text" in rec and "output" not in rec else "instruction"
    if kind == "text":
        if not isinstance(rec.get("text"), str) or not rec["text"].strip():
            raise ValueError("missing or empty string field 'text'")
        return {"text": rec["text"]}
    for key in ("instruction", "output"):
        if not isinstance(rec.get(key), str):
            raise ValueError(f"missing string field '{key}' (instruction format needs instruction/output)")
    for key in ("input", "context"):
        if key in rec and rec[key] is not None and not isinstance(rec[key], str):
            raise ValueError(f"field '{key}' must be a string")
    return {k: rec.get(k) or "" for k in ("instruction", "input", "output", "context")}


def render(rec: dict[str, Any], template: str) -> tuple[str, str]:
    """``(prompt, response)``: the template up to ``{output}`` filled in, and the output text."""
    if "text" in rec:
        return "", rec["text"]
    head = template[: template.rindex("{output}")]
    input_section = INPUT_SECTION.format(input=rec["input"]) if rec["input"].strip() else ""
    prompt = head.format(instruction=rec["instruction"], input_section=input_section, context=rec["context"])
    return prompt, rec["output"]


def tokenize(rec: dict[str, Any], template: str, tokenizer: Any, seq_len: int, stats: SplitStats) -> Document | None:
    """One document, truncated to ``seq_len``; None when nothing is left to learn from."""
    prompt, response = render(rec, template)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = p_ids + r_ids
    if len(ids) > seq_len:
        stats.truncated += 1
        ids = ids[:seq_len]
    # target at position i is ids[i+1] when ids[i+1] belongs to the response; never past the document
    first_target = max(len(p_ids) - 1, 0)
    targets = [IGNORE] * len(ids)
    for i in range(first_target, len(ids) - 1):
        targets[i] = ids[i + 1]
    n_labels = sum(t != IGNORE for t in targets)
    if n_labels == 0:
        stats.dropped_no_target += 1
        return None
    stats.tokens += len(ids)
    stats.label_tokens += n_labels
    return Document(ids, targets)


def load_split(path: Path, fmt: str, on_bad_line: str, template: str, tokenizer: Any, seq_len: int,
               keep_records: bool = False) -> Split:
    stats = SplitStats(str(path))
    recs = read_jsonl(path, fmt, on_bad_line, stats)
    docs = [d for r in recs if (d := tokenize(r, template, tokenizer, seq_len, stats)) is not None]
    if not docs:
        raise DataError(f"{path}: no record has a response left after truncation to {seq_len} tokens",
                        "raise sequence_length or shorten the prompts")
    return Split(docs, stats, recs if keep_records else [])


# ---------------------------------------------------------------------------- packing


@dataclass(frozen=True)
class Row:
    """One training row: concatenated documents with per-document position ids."""

    ids: list[int]
    targets: list[int]
    positions: list[int]


def pack(docs: list[Document], seq_len: int) -> list[Row]:
    """Best-fit decreasing bin packing into rows of at most ``seq_len`` tokens.

    Deterministic (stable sort by length, ties by original index). Bins are kept sorted by
    remaining space so each document goes into the fullest row it fits in.
    """
    order = sorted(range(len(docs)), key=lambda i: (-len(docs[i].ids), i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted
    for i in order:
        n = len(docs[i].ids)
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            cap, b = free.pop(k)
        else:
            cap, b = seq_len, len(bins)
            bins.append([])
        bins[b].append(i)
        if cap - n > 0:
            bisect.insort(free, (cap - n, b))
    rows = []
    for members in bins:
        ids: list[int] = []
        targets: list[int] = []
        positions: list[int] = []
        for i in members:
            ids += docs[i].ids
            targets += docs[i].targets
            positions += range(len(docs[i].ids))
        rows.append(Row(ids, targets, positions))
    return rows


def unpacked(docs: list[Document]) -> list[Row]:
    """One document per row (``packing = false``): batches are padded to their longest row."""
    return [Row(d.ids, d.targets, list(range(len(d.ids)))) for d in docs]


# ---------------------------------------------------------------------------- batching


@dataclass(frozen=True)
class Position:
    """Where the data stream is: the next micro-batch to read is ``batch`` of ``epoch``."""

    epoch: int = 0
    batch: int = 0


class Batches:
    """Deterministic, rank-sharded micro-batches over rows, reshuffled each epoch with (seed, epoch).

    Sharding keeps the maths of one process: the epoch is cut into *global* micro-batches of
    ``batch_size x world`` rows, and rank r takes rows r, r+world, ... of each. So R ranks x batch b
    see, at every step, exactly the rows one rank x batch R*b sees, including the short batch at the
    end of an epoch (nothing is dropped; a rank left without a row gets one padding row with no
    targets, so every rank still runs forward/backward and the collectives stay in step).
    """

    def __init__(self, rows: list[Row], batch_size: int, seed: int, pad_id: int, rank: int = 0, world: int = 1):
        if not rows:
            raise DataError("no training rows", "the train split produced no usable rows")
        self.rows, self.batch_size, self.seed, self.pad_id = rows, batch_size, seed, pad_id
        self.rank, self.world = rank, world
        self.global_batch = batch_size * world
        self.batches_per_epoch = math.ceil(len(rows) / self.global_batch)

    def _global_order(self, epoch: int) -> list[int]:
        import torch

        g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        return torch.randperm(len(self.rows), generator=g).tolist()

    def _rank_part(self, order: list[int], b: int) -> list[int]:
        return order[b * self.global_batch : (b + 1) * self.global_batch][self.rank :: self.world]

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's rows of ``epoch``, in the order it trains on them."""
        order = self._global_order(epoch)
        return [i for b in range(self.batches_per_epoch) for i in self._rank_part(order, b)]

    def iterate(self, start: Position) -> Iterator[tuple[Position, dict[str, Any]]]:
        """Yield ``(position after this batch, batch)`` forever, starting at ``start``."""
        epoch, b = start.epoch, start.batch
        while True:
            order = self._global_order(epoch)
            while b < self.batches_per_epoch:
                idx = self._rank_part(order, b)
                b += 1
                nxt = Position(epoch, b) if b < self.batches_per_epoch else Position(epoch + 1, 0)
                rows = [self.rows[i] for i in idx] or [Row([self.pad_id], [IGNORE], [0])]
                batch = collate(rows, self.pad_id)
                if not idx:
                    batch["real_tokens"] = 0
                yield nxt, batch
            epoch, b = epoch + 1, 0


def collate(rows: list[Row], pad_id: int) -> dict[str, Any]:
    """Right-pad to the longest row; padding is its own segment with no targets."""
    import torch

    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        n = len(r.ids)
        ids[j, :n] = torch.tensor(r.ids)
        targets[j, :n] = torch.tensor(r.targets)
        positions[j, :n] = torch.tensor(r.positions)
        positions[j, n:] = torch.arange(width - n)
    real = sum(len(r.ids) for r in rows)
    return {"input_ids": ids, "targets": targets, "position_ids": positions, "real_tokens": real}
