"""Reading tables a row at a time: CSV, TSV, JSON Lines, Parquet and the .arrow files of a
`datasets` split folder. A Table gives the column names and the first row up front (enough to pick
the columns) and then streams rows holding only the columns asked for: a big file never sits in
memory whole, and Parquet and Arrow read just those columns (Arrow files memory-mapped)."""
from __future__ import annotations

import csv
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional

from acmtool.errors import AcmInputError

DELIMITERS = {".csv": ",", ".tsv": "\t"}  # .jsonl: one JSON object a line
# a cell longer than this is not a sample (csv's own default limit is 128 KiB)
MAX_CELL = 1 << 24
ARROW_BATCH = 8192  # rows converted to Python at a time


class Table(NamedTuple):
    columns: list            # the names (JSON Lines: those of the first row)
    first: Optional[dict]    # the first row, None when there are none
    rows: Callable[[list], Iterator[dict]]  # rows(wanted columns): every row, only those columns


def open_table(path: Path) -> Table:
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        return _arrow_table(path)
    if suffix == ".jsonl":
        return _jsonl_table(path)
    return _csv_table(path, DELIMITERS[suffix])


@contextmanager
def _text_errors(path: Path, kind: str):
    """The one-line errors of reading a text table."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise AcmInputError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except csv.Error as e:
        raise AcmInputError(f"{path}: not a valid {kind} file ({e})") from None
    except AcmInputError:
        raise
    except OSError as e:
        raise AcmInputError(f"{path}: cannot be read ({e.strerror})") from None


def _csv_table(path: Path, delimiter: str) -> Table:
    kind = path.suffix[1:].upper()
    csv.field_size_limit(MAX_CELL)

    def rows(wanted=None) -> Iterator[dict]:
        with _text_errors(path, kind), open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            columns = list(reader.fieldnames or [])
            for i, row in enumerate(reader, start=2):
                if None in row:  # more cells than the header has columns
                    raise AcmInputError(f"{path}: row {i} has {len(columns) + len(row[None])} cells but the header "
                                        f"names {len(columns)} columns")
                yield row if wanted is None else {k: row.get(k) for k in wanted}

    with _text_errors(path, kind), open(path, newline="", encoding="utf-8") as f:
        columns = list(csv.DictReader(f, delimiter=delimiter).fieldnames or [])
    if not columns:
        raise AcmInputError(f"{path}: no header row; the first row must name the columns (e.g. text,label)")
    return Table(columns, next(rows(), None), rows)


def _jsonl_table(path: Path) -> Table:
    def rows(wanted=None) -> Iterator[dict]:
        with _text_errors(path, "JSON Lines"), open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise AcmInputError(f"{path}: line {i} is not JSON ({e.msg}); give one JSON object a line") \
                        from None
                if not isinstance(row, dict):
                    raise AcmInputError(f"{path}: line {i} is a JSON {type(row).__name__}, not an object with "
                                        f"named fields (e.g. {{\"text\": ..., \"label\": ...}})")
                yield row if wanted is None else {k: row.get(k) for k in wanted}

    first = next(rows(), None)
    return Table(list(first or {}), first, rows)


def _pyarrow():
    try:
        import pyarrow
        return pyarrow
    except ImportError:
        raise AcmInputError("Parquet files and datasets folders need pyarrow: pip install pyarrow") from None


def _arrow_table(path: Path) -> Table:
    """A Parquet file, or the .arrow files of a datasets split folder, as one lazily read table."""
    pa = _pyarrow()
    kind = "datasets folder" if path.is_dir() else "Parquet file"

    def read(columns=None):
        try:
            if path.is_dir():
                import pyarrow.ipc as ipc
                files = sorted(path.glob("*.arrow"))
                if not files:
                    raise AcmInputError(f"{path}: no .arrow files in this datasets folder")
                # memory-mapped and zero-copy: selecting columns reads nothing else
                tables = [ipc.open_stream(pa.memory_map(str(f))).read_all() for f in files]
                table = pa.concat_tables(tables)
                return table.select(columns) if columns is not None else table
            import pyarrow.parquet as pq
            return pq.ParquetFile(str(path)) if columns is None else pq.read_table(str(path), columns=columns)
        except AcmInputError:
            raise
        except (OSError, pa.ArrowException) as e:
            raise AcmInputError(f"{path}: not a readable {kind} ({str(e).splitlines()[0][:200]})") from None

    def rows(wanted=None) -> Iterator[dict]:
        table = read(wanted)
        for batch in table.to_batches(max_chunksize=ARROW_BATCH):
            yield from batch.to_pylist()

    head = read()
    if path.is_dir():
        columns = head.column_names
        first = head.slice(0, 1).to_pylist()
    else:  # the schema and the first row group's first row, not the whole file
        columns = head.schema_arrow.names
        first = head.read_row_group(0).slice(0, 1).to_pylist() if head.num_row_groups else []
    return Table(columns, first[0] if first else None, rows)


def is_datasets_object(data) -> bool:
    """A Hugging Face datasets.Dataset or DatasetDict (duck-typed: `datasets` stays optional)."""
    return hasattr(data, "column_names") and hasattr(data, "features") or \
        isinstance(getattr(data, "column_names", None), dict)


def dataset_table(ds) -> Table:
    """A datasets.Dataset as a Table: rows read through select_columns (its Arrow table, memory-mapped)."""
    columns = list(ds.column_names)
    first = ds[0] if len(ds) else None

    def rows(wanted=None) -> Iterator[dict]:
        yield from (ds.select_columns(wanted) if wanted is not None else ds)
    return Table(columns, first, rows)
