"""Text in tables: CSV, TSV, JSON Lines and Parquet files, and Hugging Face `datasets` folders
(written by save_to_disk; a DatasetDict's train split is the data, its test split the test set),
with a text column and, optionally, a label column. Parquet and datasets folders are read with
pyarrow (only the two columns; Arrow files memory-mapped).

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


def _pyarrow():
    try:
        import pyarrow
        return pyarrow
    except ImportError:
        raise AcmInputError("Parquet files and datasets folders need pyarrow: pip install pyarrow") from None


def read_arrow(path: Path) -> tuple[list, list]:
    """(column names, rows) of a .parquet file or of the .arrow files of one datasets split folder."""
    pa = _pyarrow()
    try:
        if path.is_dir():
            import pyarrow.ipc as ipc
            files = sorted(path.glob("*.arrow"))
            if not files:
                raise AcmInputError(f"{path}: no .arrow files in this datasets folder")
            tables = []
            for f in files:
                with pa.memory_map(str(f)) as source:
                    tables.append(ipc.open_stream(source).read_all())
            table = pa.concat_tables(tables)
        else:
            import pyarrow.parquet as pq
            table = pq.read_table(str(path))
    except AcmInputError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise AcmInputError(f"{path}: not a readable {'datasets folder' if path.is_dir() else 'Parquet file'} "
                            f"({str(e).splitlines()[0][:200]})") from None
    return table.column_names, table.to_pylist()


def read_table(path: Path) -> tuple[list, list]:
    """(column names, rows as dicts) of a .csv, .tsv, .jsonl or .parquet file or a datasets split folder."""
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        return read_arrow(path)
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


def datasets_splits(folder: Path) -> Optional[dict]:
    """{split: folder} of a datasets folder (save_to_disk of a DatasetDict, or of one Dataset as
    {"train": folder}); None when the folder is not one."""
    if (folder / "dataset_dict.json").is_file():
        try:
            names = json.loads((folder / "dataset_dict.json").read_text()).get("splits") or []
        except (OSError, ValueError, AttributeError):
            raise AcmInputError(f"{folder}/dataset_dict.json is damaged; save the dataset again") from None
        return {str(n): folder / str(n) for n in names if (folder / str(n)).is_dir()}
    if (folder / "state.json").is_file() and list(folder.glob("*.arrow")):
        return {"train": folder}
    return None


def load_datasets_folder(folder: Path, model, spec: dict, max_samples: Optional[int], seed: int, max_length: int,
                         text_column: Optional[str] = None, label_column: Optional[str] = None) -> Loaded:
    """The train split (or the only one) as the data, the test split, when there is one, as the test set."""
    splits = datasets_splits(folder)
    main = splits.get("train") or (next(iter(splits.values())) if len(splits) == 1 else None)
    if main is None:
        raise AcmInputError(f"{folder}: a datasets folder with the splits {', '.join(splits) or 'none'} and no "
                            f"'train'; pass the split's own folder")
    loaded = load_table(main, model, spec, max_samples, seed, max_length, text_column, label_column)
    if "test" in splits and splits["test"] != main:
        test = load_table(splits["test"], model, spec, max_samples, seed, max_length, text_column, label_column)
        if test.class_names != loaded.class_names and test.num_classes is not None:
            raise AcmInputError(f"{folder}: the test split's labels {test.class_names[:5]} are not the train "
                                f"split's {(loaded.class_names or [])[:5]}")
        loaded = loaded._replace(test=test.dataset)
    return loaded


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
            if isinstance(value, float) and value.is_integer():  # Parquet may store whole numbers as floats
                value = int(value)
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
