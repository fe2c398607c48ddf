"""CTC output as text, with numpy and the standard library only (shared by the PyTorch evaluation
and the ONNX Runtime transcriber): a frame sequence of ids collapsed as CTC reads it, and ids
spelled in a character vocabulary."""
from __future__ import annotations


def collapse(ids, blank: int) -> list:
    """Runs of one id merged, then blanks dropped: [a, a, -, a, b, b] -> [a, a, b]; the CTC reading
    of an argmax path, as transformers' Wav2Vec2CTCTokenizer.decode groups tokens."""
    out, last = [], None
    for i in ids:
        i = int(i)
        if i != last and i != blank:
            out.append(i)
        last = i
    return out


def spell(ids, chars: dict, delimiter: str) -> str:
    """Ids as text: one-character tokens spell, the delimiter is a space, multi-character tokens
    (<pad>, <s>, <unk>, ...) are dropped; runs of spaces are one."""
    out = []
    for i in ids:
        t = chars.get(int(i), "")
        out.append(" " if t == delimiter else t if len(t) == 1 else "")
    return " ".join("".join(out).split())


def frames_of(samples: int, convolutions) -> int:
    """The frames a feature encoder of [(kernel, stride), ...] convolutions makes of `samples`
    (wav2vec2's _get_feat_extract_output_lengths, without padding)."""
    for kernel, stride in convolutions:
        samples = (samples - int(kernel)) // int(stride) + 1
    return max(samples, 0)
