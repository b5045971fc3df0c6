"""Text-overlap metrics for generations: ROUGE-L (F1) and corpus BLEU-4. Pure Python.

Small enough to read and test, so evaluation needs no extra dependency. Both work on whitespace
tokens (case-sensitive: in assembly ``X0`` and ``x0`` are not the same thing).

- ROUGE-L: F1 of precision/recall of the longest common subsequence (Lin, 2004), beta = 1.
- BLEU: Papineni et al. (2002) corpus BLEU with n = 1..4, uniform weights, clipped n-gram counts
  summed over the corpus and the brevity penalty exp(1 - r/c) when c < r. Like sacrebleu without
  smoothing, it is 0 when some n-gram order has no match at all.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def tokens(text: str) -> list[str]:
    return text.split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, O(len(a)*len(b)) time, O(len(b)) memory."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    c, r = tokens(candidate), tokens(reference)
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(c), lcs / len(r)
    return 2 * p * rec / (p + rec)


def _ngrams(toks: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))


def corpus_bleu(candidates: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU in [0, 1] with one reference per candidate."""
    if len(candidates) != len(references):
        raise ValueError("candidates and references differ in length")
    matches, totals = [0] * max_n, [0] * max_n
    c_len = r_len = 0
    for cand, ref in zip(candidates, references, strict=True):
        c, r = tokens(cand), tokens(ref)
        c_len, r_len = c_len + len(c), r_len + len(r)
        for n in range(1, max_n + 1):
            cn, rn = _ngrams(c, n), _ngrams(r, n)
            matches[n - 1] += sum(min(k, rn[g]) for g, k in cn.items())
            totals[n - 1] += max(len(c) - n + 1, 0)
    if c_len == 0 or min(matches) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / max_n
    bp = 1.0 if c_len > r_len else math.exp(1 - r_len / c_len)
    return bp * math.exp(log_p)
