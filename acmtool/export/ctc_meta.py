"""What an exported CTC speech model (wav2vec2 with its CTC head) carries in its ONNX metadata, so
that acmtool.runtime.ctc_transcribe turns audio into text from the one file: the vocabulary, the
blank and the word delimiter, the front end's rate and normalisation, and the feature encoder's
convolutions (each row's real frames)."""
from __future__ import annotations

import json

import torch.nn as nn

from acmtool.errors import AcmInputError

KEY = "acmtool.ctc"


def ctc_metadata(model: nn.Module, source: dict) -> dict:
    """{KEY: JSON} for a wav2vec2 CTC model whose original folder (source["path"]) has its
    vocab.json; {} for any other model. A CTC model without a vocabulary beside it still exports;
    `acmtool transcribe` then says what is missing."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "wav2vec2" or not hasattr(model, "lm_head"):
        return {}
    if getattr(config, "add_adapter", False):
        return {}  # an adapter shortens the frames again; not read by the transcriber
    from acmtool.data.speech_prep import speech_prep
    try:
        prep = speech_prep(model, source, transcripts=True)
    except AcmInputError:
        return {}
    tokens, extractor = prep.tokens, prep.extractor
    return {KEY: json.dumps({
        "vocab": tokens.vocab, "blank": tokens.blank, "delimiter": tokens.delimiter,
        "sampling_rate": prep.rate, "do_normalize": bool(extractor.do_normalize),
        "padding_value": float(extractor.padding_value),
        "convolutions": [[int(k), int(s)] for k, s in zip(config.conv_kernel, config.conv_stride)]})}
