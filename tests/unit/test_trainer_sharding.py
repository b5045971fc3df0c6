"""Rank sharding of the trainer's batches: R ranks x batch b == one rank x batch R*b, step by step."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainpod_trainer.data import IGNORE, Batches, Position, Row


def _rows(n: int) -> list[Row]:
    return [Row([i + 1], [i + 1], [0]) for i in range(n)]  # token id = row number + 1 (0 is padding)


def _step_ids(batches: Batches, steps: int) -> list[set[int]]:
    it = batches.iterate(Position())
    out = []
    for _ in range(steps):
        _, b = next(it)
        out.append({int(t) for t in b["input_ids"].flatten() if t})
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), b=st.integers(1, 5), world=st.integers(2, 4), seed=st.integers(0, 99))
def test_ranks_together_see_the_rows_of_one_big_batch(n, b, world, seed):
    rows = _rows(n)
    one = Batches(rows, b * world, seed, 0)
    ranks = [Batches(rows, b, seed, 0, rank=r, world=world) for r in range(world)]
    assert {r.batches_per_epoch for r in ranks} == {one.batches_per_epoch}
    steps = 2 * one.batches_per_epoch + 1  # two epochs and a bit: the short tail batch included
    want = _step_ids(one, steps)
    per_rank = [_step_ids(r, steps) for r in ranks]
    for k in range(steps):
        parts = [p[k] for p in per_rank]
        assert set().union(*parts) == want[k]
        assert sum(len(p) for p in parts) == len(want[k])  # disjoint: no row twice in a step


def test_a_rank_without_rows_gets_one_padding_row_without_targets():
    (_, batch), = [next(Batches(_rows(1), 4, 0, 0, rank=1, world=2).iterate(Position()))]
    assert batch["input_ids"].tolist() == [[0]] and batch["targets"].tolist() == [[IGNORE]]
    assert batch["real_tokens"] == 0


@pytest.mark.parametrize("world", [1, 2, 3])
def test_resume_position_continues_the_same_rank_stream(world):
    b = Batches(_rows(23), 3, 5, 0, rank=world - 1, world=world)
    it = b.iterate(Position())
    seq = [next(it) for _ in range(12)]
    again = b.iterate(seq[6][0])
    for (_, want), (_, got) in zip(seq[7:], (next(again) for _ in range(5)), strict=True):
        assert want["input_ids"].equal(got["input_ids"])
