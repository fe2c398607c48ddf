"""A CTC speech model's transcripts as character ids and back: the model folder's vocab.json read
the way transformers' Wav2Vec2CTCTokenizer reads it (one id per character, the word delimiter "|"
between words, the pad token as the CTC blank), with no transformers tokenizer needed."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from acmtool.errors import AcmInputError
from acmtool.runtime.ctc_text import spell


class CtcTokens:
    """`tokens(text)` -> label ids; `tokens.text(ids)` -> text (special tokens dropped, the
    delimiter a space). Characters the vocabulary lacks: punctuation is dropped (CTC vocabularies
    spell words, and the WER ignores punctuation), a letter or digit becomes the unknown token, or
    is an error where there is none. Case follows the vocabulary: English wav2vec2 vocabularies hold
    capitals only, so text is upper-cased for them (lower-cased for lower-case ones, or with
    do_lower_case)."""

    def __init__(self, vocab: dict, blank: int, delimiter: str = "|", unk: Optional[str] = "<unk>",
                 lower: bool = False):
        self.vocab = {str(k): int(v) for k, v in vocab.items()}
        if delimiter not in self.vocab:
            raise AcmInputError(f"the CTC vocabulary has no word delimiter {delimiter!r}; give the model's own "
                                f"vocab.json (and tokenizer_config.json if it names another delimiter)")
        self.blank, self.delimiter = int(blank), delimiter
        self.delimiter_id = self.vocab[delimiter]
        self.unk_id = self.vocab.get(unk) if unk else None
        self.chars = {i: t for t, i in self.vocab.items()}
        letters = [t for t in self.vocab if len(t) == 1 and t.isalpha()]
        if lower or (letters and all(t.islower() for t in letters)):
            self.case = "lower"
        else:
            self.case = "upper" if letters and all(t.isupper() for t in letters) else None

    def __call__(self, text: str) -> list:
        text = text.strip()
        text = text.upper() if self.case == "upper" else text.lower() if self.case == "lower" else text
        ids = []
        for word in text.split():
            part = [self._id(ch, text) for ch in word]
            part = [i for i in part if i is not None]
            if part:
                ids += ([self.delimiter_id] if ids else []) + part
        return ids

    def _id(self, ch: str, text: str) -> Optional[int]:
        if ch in self.vocab and ch != self.delimiter:
            return self.vocab[ch]
        if not ch.isalnum():
            return None  # punctuation (and a literal delimiter): no symbol to spell it with
        if self.unk_id is not None:
            return self.unk_id
        raise AcmInputError(f"the transcript {text!r} has {ch!r}, which the model's vocabulary lacks and it has no "
                            f"unknown token; spell it in the vocabulary's characters")

    def text(self, ids) -> str:
        """Ids (a transcript's, or CTC-collapsed ones) as text: one-character tokens spell, the
        delimiter is a space, multi-character tokens (<pad>, <s>, <unk>, ...) are dropped."""
        return spell(ids, self.chars, self.delimiter)


def read_ctc_tokens(folder: Path, blank: int) -> CtcTokens:
    """The CtcTokens of a model folder: vocab.json, and tokenizer_config.json's word delimiter, unknown
    token and do_lower_case where it has them."""
    path = folder / "vocab.json"
    if not path.is_file():
        raise AcmInputError(f"transcripts need the model's vocabulary, and {folder} has no vocab.json; use the model "
                            f"folder with its vocab.json")
    settings = {}
    if (folder / "tokenizer_config.json").is_file():
        settings = _json(folder / "tokenizer_config.json")
    vocab = _json(path)
    if isinstance(vocab, dict) and vocab and all(isinstance(v, dict) for v in vocab.values()):
        raise AcmInputError(f"{path} holds one vocabulary per language; acmtool reads single-language ones")
    if not isinstance(vocab, dict) or not vocab or not all(isinstance(v, int) for v in vocab.values()):
        raise AcmInputError(f"{path} is not a CTC vocabulary (a JSON object of token -> id)")
    if blank not in vocab.values():
        raise AcmInputError(f"the model's pad (CTC blank) id {blank} is not in {path}; the vocabulary belongs to "
                            f"another model")
    unk = settings.get("unk_token", "<unk>")
    return CtcTokens(vocab, blank, delimiter=str(settings.get("word_delimiter_token") or "|"),
                     unk=unk if isinstance(unk, str) else None, lower=bool(settings.get("do_lower_case", False)))


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AcmInputError(f"{path} could not be read ({type(e).__name__}: {str(e)[:120]}); fix or remove "
                            f"it") from None
