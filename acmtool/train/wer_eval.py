"""Speech models scored by what users read: each utterance greedy-decoded, its word errors against
the data's transcript, and the word error rate of one model against another on the same utterances
with its paired standard error."""
from __future__ import annotations

import math

import torch

from acmtool.data.task_data import Transcripts
from acmtool.train.ctc_decode import ctc_transcribe
from acmtool.train.greedy_decode import greedy_decode, suppression_of
from acmtool.train.wer import corpus_wer, paired_wer_difference, word_errors


@torch.no_grad()
def transcribe_batch(model, inputs: dict, labels: torch.Tensor, transcripts: Transcripts) -> tuple[torch.Tensor, list]:
    """([B, 2] (word edits, reference words) per utterance, the decoded texts) for one batch;
    the references are the label rows (IGNORE_INDEX padding dropped) as text."""
    if transcripts.blank is not None:  # CTC (wav2vec2): one pass, frames collapsed
        if "input_values" not in inputs:
            raise ValueError("CTC word error rates need a waveform model fed input_values (wav2vec2)")
        ids = ctc_transcribe(model, inputs, transcripts.blank)
    else:
        features = inputs.get("input_features")
        if features is None:
            raise ValueError("word error rates need a speech model fed input_features (Whisper)")
        suppress, at_begin = suppression_of(model)
        prompt = list(transcripts.prompt)
        ids = greedy_decode(model, features, prompt, transcripts.end_id, transcripts.max_length - len(prompt),
                            suppress, at_begin)
    texts = [transcripts.decode(row) for row in ids]
    counts = []
    for row, text in zip(labels.tolist(), texts):
        counts.append(word_errors(transcripts.decode([i for i in row if i >= 0]), text))
    return torch.tensor(counts, dtype=torch.long).reshape(-1, 2), texts


def wer(counts: torch.Tensor) -> float:
    """The corpus word error rate (a fraction) of [n, 2] (edits, reference words) counts."""
    if int(counts[:, 1].sum()) == 0:
        return float("nan")  # no reference words (e.g. no utterances): no rate to give
    return corpus_wer(counts[:, 0].tolist(), counts[:, 1].tolist()) / 100


def paired_wer(a: torch.Tensor, b: torch.Tensor) -> dict:
    """WER(a) - WER(b) (fractions) on the same utterances and its paired standard error (None for one
    utterance); and the utterances where a makes fewer / more word errors than b, with the two-sided
    sign test's p-value. A decoder caught in a loop can add hundreds of insertions on one utterance,
    which then rules the corpus WER and its standard error; the count of utterances is robust to it."""
    if a.shape != b.shape or not torch.equal(a[:, 1], b[:, 1]):
        raise ValueError("the two models' word errors are not counted on the same utterances")
    d = paired_wer_difference(a[:, 0].tolist(), b[:, 0].tolist(), a[:, 1].tolist())
    fewer, more = int((a[:, 0] < b[:, 0]).sum()), int((a[:, 0] > b[:, 0]).sum())
    return {"diff": d["diff"] / 100, "se": d["se"] / 100 if len(a) > 1 else None, "n": len(a),
            "fewer": fewer, "more": more, "sign_p": sign_test(fewer, more)}


def sign_test(wins: int, losses: int) -> float:
    """The two-sided exact sign test's p-value of `wins` against `losses` (ties left out): the chance,
    were either model as likely as the other to do better on an utterance, of a split this uneven."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)
