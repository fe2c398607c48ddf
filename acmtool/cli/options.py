"""Options shared by commands that load a model."""
from __future__ import annotations

import json

import click

from acmtool.errors import AcmInputError


def model_source_options(f):
    f = click.option("--trust-pickle", is_flag=True,
                     help="Load a .pt/.pth pickle even if it holds classes outside the allow-list (runs its code).")(f)
    f = click.option("--model-args", default=None, metavar="JSON",
                     help='Keyword arguments for timm.create_model, e.g. \'{"num_classes": 10}\'.')(f)
    f = click.option("--arch", default=None, help="Architecture of a state-dict file: timm:NAME or a HF folder.")(f)
    f = click.option("--weights", default=None, type=click.Path(dir_okay=False),
                     help="Weights for a timm:NAME model (.safetensors or .pth).")(f)
    return f


def parse_model_args(text):
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise AcmInputError(f"--model-args is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise AcmInputError("--model-args must be a JSON object")
    return value


def text_column_options(f):
    """--text-column / --label-column: the columns of a .csv, .tsv or .jsonl table of text."""
    f = click.option("--label-column", default=None,
                     help="Table data: the column of labels (default: label, class, category, ... if present).")(f)
    return click.option("--text-column", default=None,
                        help="Table data (.csv, .tsv, .jsonl): the column of text (default: text, sentence, "
                             "content, ... or the only text column).")(f)
