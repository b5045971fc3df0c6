"""ROUGE-L and BLEU against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from trainpod_trainer.metrics import corpus_bleu, lcs_length, rouge_l


def test_lcs_length():
    assert lcs_length(["a", "b", "c", "d", "e"], ["a", "c", "e"]) == 3
    assert lcs_length([], ["a"]) == 0
    assert lcs_length(["x", "y", "z"], ["z", "y", "x"]) == 1


def test_rouge_l_values():
    assert rouge_l("mov rax , rbx", "mov rax , rbx") == 1.0
    assert rouge_l("add rax", "sub rbx") == 0.0
    # LCS("the cat sat", "the cat was sat") = 3: P = 3/3, R = 3/4, F = 2PR/(P+R) = 6/7
    assert rouge_l("the cat sat", "the cat was sat") == pytest.approx(6 / 7)
    assert rouge_l("", "x") == 0.0


def test_bleu_identity_and_disjoint():
    refs = ["mov rax , rbx and then ret", "ldr x0 , [ x1 ] then ret"]
    assert corpus_bleu(refs, refs) == pytest.approx(1.0)
    assert corpus_bleu(["a b c d"], ["e f g h"]) == 0.0
    with pytest.raises(ValueError):
        corpus_bleu(["a"], [])


def test_bleu_hand_computed():
    # candidate 5 tokens, reference 6: p1 = 5/5, p2 = 3/4, p3 = 1/3, p4 = 0/2 -> 0 without smoothing
    assert corpus_bleu(["a b c d e"], ["a b c x d e"]) == 0.0
    # candidate "a b c d e f" vs reference "a b c d e f g": p1..p4 = 1, BP = exp(1 - 7/6)
    assert corpus_bleu(["a b c d e f"], ["a b c d e f g"]) == pytest.approx(math.exp(1 - 7 / 6))
    # clipping: "the the the the" vs "the cat": p1 = 1/4 (clipped), higher orders 0 -> 0
    assert corpus_bleu(["the the the the"], ["the cat"]) == 0.0
    # p1 = 4/5, p2 = 3/4, p3 = 2/3, p4 = 1/2, c = r = 5 -> geometric mean
    got = corpus_bleu(["a b c d z"], ["a b c d y"])
    assert got == pytest.approx((4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
