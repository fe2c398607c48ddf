"""Word error rate for speech evaluation: Whisper's English normaliser, word-level edit counts, corpus WER,
and the paired difference of two models' WER over the same utterances with its standard error.

Corpus WER is total edits over total reference words (not the mean of per-utterance WERs), so long
utterances weigh more; that is why the paired difference below is a ratio estimator and its standard
error comes from linearisation rather than from the spread of per-utterance WERs.
"""
from __future__ import annotations

import functools
import math
import re
import unicodedata
from typing import Sequence

# Anything that is not a letter, a digit or an apostrophe separates words. \w also matches "_",
# which is not a letter, so it is excluded explicitly.
_NOT_WORD = re.compile(r"[^\w']|_")


def normalize(text: str) -> list[str]:
    """The words of text as scored: Whisper's English normaliser (transformers' EnglishTextNormalizer,
    the one Whisper's own WER figures use: "Mr." -> "mister", "ten" -> "10", "don't" -> "do not",
    punctuation out), then lowercased, Unicode NFKC, every character that is not a letter, digit or
    apostrophe a space, apostrophes at word edges dropped, split on whitespace. Without a model
    folder's normalizer.json its British-to-American spelling table is empty."""
    # the typographic apostrophe U+2019 is punctuation to both normalisers: mapped by hand first
    # ("don’t" and "don't" must score the same)
    text = _whisper_english()(text.replace("\u2019", "'"))
    text = unicodedata.normalize("NFKC", text).lower()  # e.g. fullwidth letters to ASCII
    words = (w.strip("'") for w in _NOT_WORD.sub(" ", text).split())
    return [w for w in words if w]


@functools.lru_cache(maxsize=1)
def _whisper_english():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
    return EnglishTextNormalizer({})


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, number of reference words) between the normalised
    words of reference and hypothesis: word-level Levenshtein distance, O(n*m) time, two rows."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    # prev[j]: edits turning the first i-1 reference words into the first j hypothesis words
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1,  # deletion of r
                         cur[j - 1] + 1,  # insertion of h
                         prev[j - 1] + (r != h))  # match or substitution
        prev = cur
    return prev[-1], len(ref)


def corpus_wer(edits: Sequence[int], words: Sequence[int]) -> float:
    """Corpus WER in percent: 100 * total edits / total reference words."""
    total = sum(words)
    if total <= 0:
        raise ValueError("corpus_wer: the references have no words at all, so WER is undefined")
    return 100.0 * sum(edits) / total


def paired_wer_difference(edits_a: Sequence[int], edits_b: Sequence[int],
                          words: Sequence[int]) -> dict:
    """WER(a) - WER(b) in percentage points over the same m utterances, with its paired standard
    error: pairing removes the utterance-to-utterance variation both models share.

    The difference is the ratio D = sum(d_i) / N with d_i = a_i - b_i and N = sum(words); by
    linearisation se = 100 * sqrt(m / (m - 1) * sum((d_i - D * w_i)^2)) / N. se is 0.0 when m < 2
    (one utterance gives no spread to estimate), and also when d_i is exactly proportional to w_i.
    Returns {"diff": ..., "se": ..., "n": m}."""
    m = len(words)
    if len(edits_a) != m or len(edits_b) != m:
        raise ValueError(f"paired_wer_difference: edits_a, edits_b and words must hold one count per "
                         f"utterance, for the same utterances (got lengths {len(edits_a)}, "
                         f"{len(edits_b)} and {m})")
    total = sum(words)
    if total <= 0:
        raise ValueError("paired_wer_difference: the references have no words at all, "
                         "so WER is undefined")
    d = [a - b for a, b in zip(edits_a, edits_b)]
    ratio = sum(d) / total
    if m < 2:
        se = 0.0
    else:
        se = 100.0 * math.sqrt(m / (m - 1) * sum((di - ratio * w) ** 2 for di, w in zip(d, words))) / total
    return {"diff": 100.0 * ratio, "se": se, "n": m}
