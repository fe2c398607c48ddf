"""The Whisper decoder with a key/value cache, as two graphs' PyTorch sides: `DecoderInit` runs the
prompt and returns every layer's self-attention keys/values and the cross-attention ones (computed
once from the encoder's output); `DecoderWithPast` runs one new token against them. Greedy
decoding then costs one token per step instead of the whole sequence.

The forward is written out over the Hugging Face decoder's own submodules in plain torch ops (no
Cache objects, which torch.export cannot trace cleanly): the projections and MLPs are called as
modules, so that an ACM in their place (AcmMlp for fc1, AcmProjection for q/k/v/out_proj) exports as
a DynamicLearners node with its gate and the `budget` input, as in the other graphs. It computes
what WhisperDecoder does in eval mode (tests/test_whisper_cache.py checks it against
model.model.decoder + proj_out)."""
from __future__ import annotations

import torch
import torch.nn as nn

from acmtool.export.seq2seq import DecoderPart

INIT_ONNX = "decoder_init.onnx"
STEP_ONNX = "decoder_with_past.onnx"
PAST, PRESENT = "past_key_values", "present"


def kv_names(layers: int, prefix: str, cross: bool = True) -> list[str]:
    """Per layer: the self-attention key and value, then (cross) the cross-attention ones."""
    parts = ("decoder.key", "decoder.value") + (("encoder.key", "encoder.value") if cross else ())
    return [f"{prefix}.{i}.{p}" for i in range(layers) for p in parts]


def _heads(x: torch.Tensor, attn: nn.Module) -> torch.Tensor:
    """[B, T, d] -> [B, heads, T, head_dim]."""
    return x.unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(1, 2)


def _attend(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None) -> torch.Tensor:
    # q arrives scaled: Whisper scales it before the product (HF keeps that order for its rounding)
    weights = q @ k.transpose(-1, -2)
    if mask is not None:
        weights = weights + mask
    out = weights.softmax(-1) @ v
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def cross_kv(layer: nn.Module, encoder_hidden_states: torch.Tensor) -> tuple:
    c = layer.encoder_attn
    return _heads(c.k_proj(encoder_hidden_states), c), _heads(c.v_proj(encoder_hidden_states), c)


def layer_forward(layer: nn.Module, x: torch.Tensor, past, cross: tuple, mask=None):
    """One WhisperDecoderLayer in eval mode: (output, (self keys, self values)), the new tokens'
    keys and values appended to `past` (None: no past)."""
    a = layer.self_attn
    h = layer.self_attn_layer_norm(x)
    q = _heads(a.q_proj(h) * a.scaling, a)
    k, v = _heads(a.k_proj(h), a), _heads(a.v_proj(h), a)  # k_proj has no bias in Whisper; an ACM may
    if past is not None:
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
    x = x + _attend(a, q, k, v, mask)
    c = layer.encoder_attn
    h = layer.encoder_attn_layer_norm(x)
    x = x + _attend(c, _heads(c.q_proj(h) * c.scaling, c), *cross)
    h = layer.final_layer_norm(x)
    # an AcmMlp takes fc1's place and activation_fn, fc2 become identities: the same call either way
    x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
    return x, (k, v)


def causal_mask(tokens: int, like: torch.Tensor) -> torch.Tensor:
    """[tokens, tokens]: 0 where a token may look (itself and before), -inf after."""
    pos = torch.arange(tokens, device=like.device)
    return torch.zeros(tokens, tokens, dtype=like.dtype, device=like.device).masked_fill(
        pos[None, :] > pos[:, None], float("-inf"))


class _CachedPart(DecoderPart):
    """DecoderPart's modules (the decoder and the output projection under the names they have in the
    whole model, so that the checkpoint's per-ACM figures name the same modules), run with the cache."""

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        decoder = self.model.decoder
        # HF's WhisperDecoder adds no embed_scale to the tokens
        return decoder.embed_tokens(ids) + decoder.embed_positions.weight[positions]

    def _out(self, x: torch.Tensor, kv: list) -> tuple:
        # the logits first: acmtool.export.verify's reference (MainOutput) takes a tuple's first item
        return (self.proj_out(self.model.decoder.layer_norm(x)), *kv)


class DecoderInit(_CachedPart):
    """decoder_input_ids [B, T], encoder_hidden_states [B, F, d] -> logits [B, T, V] (every position:
    it also serves as the whole-sequence decoder), then per layer the self-attention keys and values
    [B, heads, T, head_dim] and the cross-attention ones [B, heads, F, head_dim] (kv_names order)."""

    def forward(self, decoder_input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor):
        tokens = decoder_input_ids.shape[1]
        x = self._embed(decoder_input_ids, torch.arange(tokens, device=decoder_input_ids.device))
        mask = causal_mask(tokens, x)
        kv = []
        for layer in self.model.decoder.layers:
            cross = cross_kv(layer, encoder_hidden_states)
            x, own = layer_forward(layer, x, None, cross, mask)
            kv += [*own, *cross]
        return self._out(x, kv)


class DecoderWithPast(_CachedPart):
    """decoder_input_ids [B, 1], position_ids [B, 1] (the new token's position: the past length), and
    per layer `past_key_values.{i}.decoder.key/value` [B, heads, P, head_dim] and
    `past_key_values.{i}.encoder.key/value` [B, heads, F, head_dim] -> logits [B, 1, V] and per
    layer the self-attention keys and values with the new token's appended [B, heads, P + 1, head_dim]."""

    def forward(self, decoder_input_ids: torch.Tensor, position_ids: torch.Tensor, **past: torch.Tensor):
        x = self._embed(decoder_input_ids, position_ids)
        kv = []
        for i, layer in enumerate(self.model.decoder.layers):
            own = past[f"{PAST}.{i}.decoder.key"], past[f"{PAST}.{i}.decoder.value"]
            cross = past[f"{PAST}.{i}.encoder.key"], past[f"{PAST}.{i}.encoder.value"]
            x, own = layer_forward(layer, x, own, cross)  # one query sees every key: no mask
            kv += list(own)
        return self._out(x, kv)


def step_inputs(init_kv, ids: torch.Tensor, position: int, layers: int) -> dict:
    """DecoderWithPast's inputs for token ids [B, 1] at `position`, the keys and values from
    DecoderInit's outputs after the logits (kv_names order)."""
    batch = ids.shape[0]
    kv = dict(zip(kv_names(layers, PAST), init_kv))
    return {"decoder_input_ids": ids, "position_ids": torch.full((batch, 1), position, dtype=torch.long), **kv}
