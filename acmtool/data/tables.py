"""Text in tables: CSV, TSV and JSON Lines files with a text column and, optionally, a label column.

    --text-column NAME   (default: the first of TEXT_GUESSES present, else the only text column)
    --label-column NAME  (default: the first of LABEL_GUESSES present, else none: unlabelled)

Labels may be strings or integers; classes are their sorted distinct values. Every problem names
the file, the row and the columns the file has."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

from acmtool.data.split import subset_indices
from acmtool.data.task_data import Loaded, PadCollate
from acmtool.data.text import TokenData, load_tokenizer, pad_id
from acmtool.errors import AcmInputError

DELIMITERS = {".csv": ",", ".tsv": "\t"}  # .jsonl: one JSON object a line
TEXT_GUESSES = ("text", "sentence", "content", "document", "review", "question", "body")
LABEL_GUESSES = ("label", "labels", "class", "category", "target", "topic")
# a cell longer than this is not a sample (csv's own default limit is 128 KiB)
MAX_CELL = 1 << 24


def read_table(path: Path) -> tuple[list, list]:
    """(column names, rows as dicts) of a .csv, .tsv or .jsonl file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _read_jsonl(path)
        csv.field_size_limit(MAX_CELL)
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=DELIMITERS[suffix])
            columns = list(reader.fieldnames or [])
            rows = []
            for i, row in enumerate(reader, start=2):
                if None in row:  # more cells than the header has columns
                    raise AcmInputError(f"{path}: row {i} has {len(columns) + len(row[None])} cells but the header "
                                        f"names {len(columns)} columns")
                rows.append(row)
    except UnicodeDecodeError as e:
        raise AcmInputError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except csv.Error as e:
        raise AcmInputError(f"{path}: not a valid {suffix[1:].upper()} file ({e})") from None
    except OSError as e:
        raise AcmInputError(f"{path}: cannot be read ({e.strerror})") from None
    if not columns:
        raise AcmInputError(f"{path}: no header row; the first row must name the columns (e.g. text,label)")
    return columns, rows


def _read_jsonl(path: Path) -> tuple[list, list]:
    rows, columns = [], {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise AcmInputError(f"{path}: line {i} is not JSON ({e.msg}); give one JSON object a line") from None
            if not isinstance(row, dict):
                raise AcmInputError(f"{path}: line {i} is a JSON {type(row).__name__}, not an object with named "
                                    f"fields (e.g. {{\"text\": ..., \"label\": ...}})")
            rows.append(row)
            columns.update(dict.fromkeys(row))
    return list(columns), rows


def pick_columns(path: Path, columns: list, rows: list, text_column: Optional[str],
                 label_column: Optional[str]) -> tuple[str, Optional[str]]:
    """The text column and the label column (None: unlabelled), given or guessed."""
    shown = ", ".join(map(str, columns[:12])) + (" ..." if len(columns) > 12 else "")
    for given, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if given is not None and given not in columns:
            raise AcmInputError(f"{path}: no column {given!r} ({flag}); its columns: {shown}")
    if text_column is None:
        text_column = next((c for c in TEXT_GUESSES if c in columns), None)
        if text_column is None:
            texts = [c for c in columns if c != label_column and rows and isinstance(rows[0].get(c), str)]
            if len(texts) != 1:
                raise AcmInputError(f"{path}: cannot tell which column holds the text (columns: {shown}); pass "
                                    f"--text-column NAME")
            text_column = texts[0]
    if label_column is None:
        label_column = next((c for c in LABEL_GUESSES if c in columns and c != text_column), None)
    if label_column == text_column:
        raise AcmInputError(f"{path}: --text-column and --label-column are both {text_column!r}")
    return text_column, label_column


def load_table(path: Path, model, spec: dict, max_samples: Optional[int], seed: int, max_length: int,
               text_column: Optional[str] = None, label_column: Optional[str] = None) -> Loaded:
    columns, rows = read_table(path)
    if not rows:
        raise AcmInputError(f"{path}: no rows under the header")
    text_col, label_col = pick_columns(path, columns, rows, text_column, label_column)
    texts, raw = [], []
    for i, row in enumerate(rows):
        text = row.get(text_col)
        if not isinstance(text, str) or not text.strip():
            raise AcmInputError(f"{path}: row {i + 1} has no text in column {text_col!r}")
        texts.append(text.strip())
        if label_col is not None:
            value = row.get(label_col)
            if value is None or isinstance(value, (dict, list, float)) or value == "":
                raise AcmInputError(f"{path}: row {i + 1} has no usable label in column {label_col!r} (got "
                                    f"{value!r}); labels are strings or whole numbers")
            raw.append(value)
    labels, names = _classes(path, raw) if label_col is not None else (None, None)
    tokenizer = load_tokenizer(model, spec)
    keep = subset_indices(len(texts), max_samples, seed)
    data = TokenData([texts[i] for i in keep], [labels[i] for i in keep] if labels else None, tokenizer, max_length)
    return Loaded(data, len(names) if names else None, names, "text", PadCollate(pad_id(tokenizer)))


def _classes(path: Path, raw: list) -> tuple[list, list]:
    """Class indices and names: the sorted distinct labels (numbers sorted as numbers)."""
    if all(isinstance(v, str) and v.strip().lstrip("-").isdigit() for v in raw):  # CSV numbers are text
        raw = [int(v) for v in raw]
    kinds = {type(v) for v in raw}
    if kinds - {str, int, bool} or (str in kinds and len(kinds) > 1):
        raise AcmInputError(f"{path}: the labels mix strings and numbers; use one kind")
    values = sorted(set(raw))
    if len(values) < 2:
        raise AcmInputError(f"{path}: every row has the label {values[0]!r}; a label column needs two classes or "
                            f"more (or pass --label-column to name another)")
    index = {v: i for i, v in enumerate(values)}
    return [index[v] for v in raw], [str(v) for v in values]
