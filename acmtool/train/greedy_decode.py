"""Batched greedy decoding for a Whisper-style encoder-decoder, with a key/value cache.

Written out rather than calling model.generate() so that what is scored is exactly this loop: a
fixed prompt, argmax at every step, the same token suppression as CTranslate2/faster-whisper
(suppress_tokens at every step, begin_suppress at the first), no timestamp or length heuristics.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch


def suppression_of(model) -> tuple[list[int], list[int]]:
    """(suppress, suppress_at_begin): the model's suppress_tokens and begin_suppress_tokens, from
    model.generation_config when it has them (where Whisper checkpoints keep them), else from
    model.config, else empty lists.

    Ids outside the model's vocabulary are dropped: they can never be generated, and WhisperConfig's
    defaults ([220, 50256] at begin) name them on any smaller vocabulary; transformers' generate()
    ignores them the same way (it masks by torch.isin over the vocabulary)."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    lists = []
    for name in ("suppress_tokens", "begin_suppress_tokens"):
        ids = None
        for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
            ids = getattr(source, name, None) if source is not None else None
            if ids is not None:
                break
        ids = [int(i) for i in ids] if ids is not None else []
        lists.append([i for i in ids if vocab is None or 0 <= i < vocab])
    return lists[0], lists[1]


def _cache_kwarg(model) -> str:
    # transformers 5.x renamed the forward argument past_key_values to cache (the old name still
    # works there, with a deprecation warning); use whichever the installed model's forward names.
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _check_ids(ids: Sequence[int], vocab: int, what: str) -> list[int]:
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"greedy_decode: {what} holds ids outside the vocabulary [0, {vocab}): {bad}")
    return ids


def greedy_decode(model, input_features: torch.Tensor, prompt: list[int], end_id: int,
                  max_new_tokens: int, suppress: Sequence[int] = (),
                  suppress_at_begin: Sequence[int] = ()) -> list[list[int]]:
    """Greedy (argmax) decoding of a batch: every row starts with prompt (e.g.
    [<|startoftranscript|>, <|notimestamps|>]); at every step the logits of the ids in suppress are
    set to -inf, at the first generated step also those in suppress_at_begin. A row ends when it
    emits end_id (not returned); decoding stops when every row has ended or after max_new_tokens.

    input_features: [batch, num_mel_bins, frames]. Returns each row's generated ids, without the
    prompt. Runs under torch.no_grad() in eval mode and restores every module's training flag."""
    if input_features.dim() != 3:
        raise ValueError(f"greedy_decode: input_features must be [batch, num_mel_bins, frames] "
                         f"(got shape {tuple(input_features.shape)})")
    if not prompt:
        raise ValueError("greedy_decode: the prompt must hold at least one token (the decoder "
                         "start token)")
    if max_new_tokens < 0:
        raise ValueError(f"greedy_decode: max_new_tokens must be >= 0 (got {max_new_tokens})")
    batch = input_features.shape[0]
    if max_new_tokens == 0 or batch == 0:
        return [[] for _ in range(batch)]
    vocab = model.config.vocab_size
    end_id = _check_ids([end_id], vocab, "end_id")[0]
    suppress = _check_ids(suppress, vocab, "suppress")
    begin = sorted(set(suppress) | set(_check_ids(suppress_at_begin, vocab, "suppress_at_begin")))
    max_positions = getattr(model.config, "max_target_positions", None)
    # the last generated token is never fed back, hence the - 1
    if max_positions is not None and len(prompt) + max_new_tokens - 1 > max_positions:
        raise ValueError(f"greedy_decode: a prompt of {len(prompt)} tokens plus {max_new_tokens} new "
                         f"tokens exceeds the decoder's {max_positions} positions")

    # Remember each module's flag, not just the top one: a caller may hold e.g. a frozen encoder in
    # eval mode inside a model in training mode, and model.train(True) would not give that back.
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return _decode(model, input_features, prompt, end_id, max_new_tokens, suppress, begin)
    finally:
        for m, flag in flags:
            m.training = flag


def take_step(next_ids: list, end_id: int, done: list, out: list) -> bool:
    """Append each unfinished row's token (end_id finishes the row, and is not kept); True when
    every row has finished. The step both greedy loops share (this one, and ONNX Runtime's in
    acmtool.runtime.transcribe)."""
    for row, token in enumerate(next_ids):
        if done[row]:
            continue
        if token == end_id:
            done[row] = True
        else:
            out[row].append(token)
    return all(done)


def _decode(model, input_features: torch.Tensor, prompt: list[int], end_id: int,
            max_new_tokens: int, suppress: list[int], begin: list[int]) -> list[list[int]]:
    param = next(model.parameters())
    features = input_features.to(device=param.device, dtype=param.dtype)
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else model.model.encoder
    # The encoder runs once; every decoder step reuses its output through cross-attention.
    encoder_outputs = encoder(features)
    batch = features.shape[0]
    tokens = torch.tensor([prompt] * batch, dtype=torch.long, device=param.device)
    cache_kwarg, cache = _cache_kwarg(model), None
    done = [False] * batch
    out: list[list[int]] = [[] for _ in range(batch)]
    for step in range(max_new_tokens):
        # No cache yet: the model builds the right one (EncoderDecoderCache for Whisper) and fills
        # it with the whole prompt; afterwards only the last token goes in.
        result = model(encoder_outputs=encoder_outputs, decoder_input_ids=tokens,
                       use_cache=True, **({cache_kwarg: cache} if cache is not None else {}))
        cache = getattr(result, "cache", None)
        if cache is None:
            cache = result.past_key_values
        logits = result.logits[:, -1, :].float()
        banned = begin if step == 0 else suppress
        if banned:
            logits[:, banned] = float("-inf")
        next_ids = logits.argmax(dim=-1)
        if take_step(next_ids.tolist(), end_id, done, out):  # one device-to-host copy per step
            break
        # Rows that have ended keep being fed end_id: cheaper than shrinking the batch and its
        # cache, and what they generate afterwards is never read.
        ended = torch.tensor(done, device=next_ids.device)
        tokens = torch.where(ended, torch.full_like(next_ids, end_id), next_ids).unsqueeze(1)
    return out
