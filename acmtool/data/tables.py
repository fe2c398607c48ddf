"""Text in tables: CSV, TSV, JSON Lines and Parquet files, and Hugging Face `datasets` folders
(written by save_to_disk; a DatasetDict's train split is the data, its test split the test set),
with a text column and, optionally, a label column, read a row at a time (table_readers: only the
two columns are kept; Parquet and Arrow read just those).

    --text-column NAME   (default: the first of TEXT_GUESSES present, else the only text column)
    --label-column NAME  (default: the first of LABEL_GUESSES present, else none: unlabelled)

Labels may be strings or integers; classes are their sorted distinct values. Every problem names
the file, the row and the columns the file has."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

from acmtool.data.split import subset_indices
from acmtool.data.table_readers import Table, open_table
from acmtool.data.task_data import Loaded, PadCollate
from acmtool.data.text import TokenData, load_tokenizer, pad_id
from acmtool.errors import AcmInputError

TEXT_GUESSES = ("text", "sentence", "content", "document", "review", "question", "body")
LABEL_GUESSES = ("label", "labels", "class", "category", "target", "topic")


def pick_columns(path: Path, columns: list, first: dict, text_column: Optional[str],
                 label_column: Optional[str]) -> tuple[str, Optional[str]]:
    """The text column and the label column (None: unlabelled), given or guessed."""
    shown = ", ".join(map(str, columns[:12])) + (" ..." if len(columns) > 12 else "")
    for given, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if given is not None and given not in columns:
            raise AcmInputError(f"{path}: no column {given!r} ({flag}); its columns: {shown}")
    if text_column is None:
        text_column = next((c for c in TEXT_GUESSES if c in columns), None)
        if text_column is None:
            texts = [c for c in columns if c != label_column and isinstance(first.get(c), str)]
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
    return load_rows(path, open_table(path), lambda: load_tokenizer(model, spec), max_samples, seed, max_length,
                     text_column, label_column, class_labels=_class_labels(path) if path.is_dir() else None)


def _class_labels(split: Path) -> dict:
    """{column: class names} of the ClassLabel columns in a datasets split's dataset_info.json."""
    try:
        features = json.loads((split / "dataset_info.json").read_text(encoding="utf-8")).get("features") or {}
    except (OSError, ValueError, AttributeError):
        return {}  # no or unreadable info: labels are then named by their values
    return {col: [str(n) for n in f["names"]] for col, f in features.items()
            if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list)}


def load_rows(where, table: Table, get_tokenizer: Callable, max_samples: Optional[int], seed: int, max_length: int,
              text_column: Optional[str] = None, label_column: Optional[str] = None,
              class_labels: Optional[dict] = None) -> Loaded:
    """The text (and label) column of `table`'s rows as tokenised samples. get_tokenizer() gives
    the tokenizer (called once the columns are known good). class_labels: {column: class names}
    of columns whose whole-number labels 0, 1, ... name classes (a datasets ClassLabel); other
    label columns' classes are their sorted distinct values."""
    if table.first is None:
        raise AcmInputError(f"{where}: no rows under the header")
    text_col, label_col = pick_columns(where, table.columns, table.first, text_column, label_column)
    texts, raw = [], []  # only these two columns are kept, a row at a time
    for i, row in enumerate(table.rows([text_col] + ([label_col] if label_col is not None else []))):
        text = row.get(text_col)
        if not isinstance(text, str) or not text.strip():
            raise AcmInputError(f"{where}: row {i + 1} has no text in column {text_col!r}")
        texts.append(text.strip())
        if label_col is not None:
            value = row.get(label_col)
            if isinstance(value, float) and value.is_integer():  # Parquet may store whole numbers as floats
                value = int(value)
            if value is None or isinstance(value, (dict, list, float)) or value == "":
                raise AcmInputError(f"{where}: row {i + 1} has no usable label in column {label_col!r} (got "
                                    f"{value!r}); labels are strings or whole numbers")
            raw.append(value)
    class_names = (class_labels or {}).get(label_col)
    if label_col is None:
        labels, names = None, None
    elif class_names is not None:
        bad = next((v for v in raw if not isinstance(v, int) or not 0 <= v < len(class_names)), None)
        if bad is not None:
            raise AcmInputError(f"{where}: label {bad!r} in column {label_col!r} is not one of its "
                                f"{len(class_names)} classes")
        labels, names = raw, list(class_names)
    else:
        labels, names = _classes(where, raw)
    tokenizer = get_tokenizer()
    keep = subset_indices(len(texts), max_samples, seed)
    data = TokenData([texts[i] for i in keep], [labels[i] for i in keep] if labels else None, tokenizer, max_length)
    return Loaded(data, len(names) if names else None, names, "text", PadCollate(pad_id(tokenizer)))


def load_datasets_object(data, tokenizer, max_samples: Optional[int], seed: int, max_length: int,
                         text_column: Optional[str] = None, label_column: Optional[str] = None) -> Loaded:
    """A datasets.Dataset of text, or a DatasetDict (its train split the data, its test split the
    test set), from Python; a ClassLabel label column keeps its class names."""
    from acmtool.data.table_readers import dataset_table
    if tokenizer is None:
        raise AcmInputError("data: a datasets.Dataset of text needs the model's tokenizer: "
                            "acmtool.convert(..., tokenizer=tok)")
    splits = dict(data) if isinstance(data.column_names, dict) else {"train": data}  # from_python checked 'train'

    def load(name: str) -> Loaded:
        ds = splits[name]
        names = {col: list(f.names) for col, f in ds.features.items() if isinstance(getattr(f, "names", None), list)}
        return load_rows(f"<datasets {name} split>", dataset_table(ds), lambda: tokenizer, max_samples, seed,
                         max_length, text_column, label_column, class_labels=names)
    loaded = load("train")
    if "test" in splits:
        loaded = loaded._replace(test=load("test").dataset)
    return loaded


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
