"""Word error rate: the normaliser, word-level edit counts, corpus WER and the paired difference of
two models' WER with its standard error, all against hand-computed values."""
import math

import pytest

from acmtool.train.wer import corpus_wer, normalize, paired_wer_difference, word_errors


def test_normalize():
    # Whisper's English normaliser: contractions, titles and spelled numbers as its WER figures count them
    assert normalize("Hello, World!  It's two.") == ["hello", "world", "it", "is", "2"]
    assert normalize("And Mr. John") == normalize("and mister john") == ["and", "mister", "john"]
    assert normalize("ten of clubs") == normalize("10 of clubs.") == ["10", "of", "clubs"]
    assert normalize("'Tis the dogs' bone; don't") == ["tis", "the", "dogs", "bone", "do", "not"]
    assert normalize("Don\u2019t") == normalize("don't")  # the typographic apostrophe is one too
    # fullwidth letters and the "fi" ligature become plain letters; "_" and "-" split words; accents go
    assert normalize("\uff21\uff22 \ufb01ne snake_case well-known") == ["ab", "fine", "snake", "case",
                                                                         "well", "known"]
    assert normalize("Élan café") == ["elan", "cafe"]
    assert normalize("") == [] and normalize(" ... ' ") == []


def test_word_errors_by_hand():
    ref = "the cat sat on the mat"
    assert word_errors(ref, ref) == (0, 6)
    assert word_errors(ref, "the cat sat on a mat") == (1, 6)  # one substitution
    assert word_errors(ref, "the cat sat down on the mat") == (1, 6)  # one insertion
    assert word_errors(ref, "the cat on the mat") == (1, 6)  # one deletion
    assert word_errors(ref, "") == (6, 6)  # empty hypothesis: every word deleted
    assert word_errors("", "two words") == (2, 0)  # no reference: every word inserted
    assert word_errors("", "") == (0, 0)
    # punctuation and case are not errors; contractions count as their words ("don't": "do not")
    assert word_errors("The cat, sat on the MAT.", "the cat sat on the mat") == (0, 6)
    assert word_errors("I don't know", "I do not know") == (0, 4)
    assert word_errors("I don't know", "I dont know") == (2, 4)
    assert word_errors("I don't know", "i DON'T know!") == (0, 4)
    # a substitution (b -> x) and two insertions (e, f)
    assert word_errors("a b c d", "a x c e d f") == (3, 4)
    assert word_errors("a b c", "c b a") == (2, 3)  # two substitutions, not a move


def test_corpus_wer():
    # 1 + 0 + 3 edits over 6 + 4 + 10 words: 4 / 20 = 20 %, not the mean of per-utterance WERs
    assert corpus_wer([1, 0, 3], [6, 4, 10]) == pytest.approx(20.0)
    assert corpus_wer([0], [5]) == 0.0
    assert corpus_wer([7], [5]) == pytest.approx(140.0)  # insertions can push WER past 100 %
    with pytest.raises(ValueError, match="no words"):
        corpus_wer([2, 1], [0, 0])
    with pytest.raises(ValueError, match="no words"):
        corpus_wer([], [])


def test_paired_wer_difference_by_hand():
    a, b, w = [2, 0, 3, 1], [1, 1, 1, 1], [5, 4, 6, 5]
    r = paired_wer_difference(a, b, w)
    # d = 1, -1, 2, 0; N = 20; D = 2 / 20 = 0.1; residuals d - D w = 0.5, -1.4, 1.4, -0.5
    # sum of squares 0.25 + 1.96 + 1.96 + 0.25 = 4.42; se = 100 sqrt(4/3 * 4.42) / 20
    assert r["n"] == 4
    assert r["diff"] == pytest.approx(10.0, abs=1e-12)
    assert r["diff"] == pytest.approx(corpus_wer(a, w) - corpus_wer(b, w), abs=1e-12)
    assert r["se"] == pytest.approx(100 * math.sqrt(4 / 3 * 4.42) / 20, abs=1e-12)
    back = paired_wer_difference(b, a, w)
    assert back["diff"] == pytest.approx(-r["diff"], abs=1e-12) and back["se"] == pytest.approx(r["se"])


def test_paired_wer_difference_edge_cases():
    # d_i = 0.5 w_i exactly: every utterance moves the same way, so there is no spread at all
    r = paired_wer_difference([3, 4, 6], [1, 1, 1], [4, 6, 10])
    assert r["diff"] == pytest.approx(50.0) and r["se"] == pytest.approx(0.0, abs=1e-12)
    same = paired_wer_difference([1, 2], [1, 2], [3, 4])
    assert same == {"diff": 0.0, "se": 0.0, "n": 2}
    one = paired_wer_difference([3], [1], [8])  # one utterance: no spread to estimate, se 0.0
    assert one["diff"] == pytest.approx(25.0) and one["se"] == 0.0 and one["n"] == 1
    with pytest.raises(ValueError, match="same utterances"):
        paired_wer_difference([1, 2], [1], [3, 4])
    with pytest.raises(ValueError, match="same utterances"):
        paired_wer_difference([1, 2], [1, 2], [3])
    with pytest.raises(ValueError, match="no words"):
        paired_wer_difference([1], [0], [0])
    with pytest.raises(ValueError, match="no words"):
        paired_wer_difference([], [], [])


def test_sign_test_by_hand():
    from acmtool.train.wer_eval import sign_test
    assert sign_test(0, 0) == 1.0 and sign_test(5, 5) == 1.0
    assert sign_test(10, 0) == pytest.approx(2 / 2 ** 10) and sign_test(0, 10) == sign_test(10, 0)
    # 30 against 10: 2 * P(X <= 10), X ~ Binomial(40, 1/2)
    assert sign_test(30, 10) == pytest.approx(2 * sum(math.comb(40, i) for i in range(11)) / 2 ** 40)
    assert sign_test(3, 2) == 1.0  # the two-sided tail is capped at 1


def test_paired_wer_counts_utterances_so_one_runaway_transcript_cannot_sway_it():
    import torch

    from acmtool.train.wer_eval import paired_wer
    words = [5, 4, 3, 6, 5, 4, 3, 6, 5, 4]
    a = torch.tensor([[e, w] for e, w in zip([0, 1, 0, 1, 0, 0, 1, 0, 0, 1], words)])
    b = torch.tensor([[e, w] for e, w in zip([1, 2, 1, 2, 1, 1, 2, 1, 1, 200], words)])  # a loop on the last one
    d = paired_wer(a, b)
    assert d["fewer"] == 10 and d["more"] == 0 and d["sign_p"] == pytest.approx(2 / 2 ** 10)
    assert d["diff"] < 0 and abs(d["diff"]) < 2.5 * d["se"]  # the corpus difference: inside 2.5 s.e.
    swapped = paired_wer(b, a)
    assert (swapped["fewer"], swapped["more"]) == (0, 10) and swapped["sign_p"] == d["sign_p"]
    tied = paired_wer(a, a)
    assert (tied["fewer"], tied["more"], tied["sign_p"]) == (0, 0, 1.0)
