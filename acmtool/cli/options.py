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


# ConvertOptions fields that a --config file does not set: what to convert and where to write stay
# on the command line, and so do the switches that say how to treat existing files.
NOT_IN_CONFIG = ("model", "output", "resume", "force")


def load_convert_config(ctx, _param, path):
    """--config FILE: the options of a run (a JSON object of ConvertOptions fields, e.g. a report's
    "convert_options") as the defaults of this one; options given on the command line win."""
    if path is None:
        return None
    import dataclasses

    from acmtool.train.options import ConvertOptions
    try:
        config = json.loads(open(path, encoding="utf-8").read())
    except OSError as e:
        raise AcmInputError(f"--config {path}: cannot be read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AcmInputError(f"--config {path}: not JSON ({e})") from None
    if isinstance(config, dict) and isinstance(config.get("convert_options"), dict):  # a whole report
        config = config["convert_options"]
    if not isinstance(config, dict):
        raise AcmInputError(f"--config {path}: expected a JSON object of convert options")
    fields = {f.name for f in dataclasses.fields(ConvertOptions)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise AcmInputError(f"--config {path}: unknown options {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(fields - set(NOT_IN_CONFIG)))}")
    defaults, extra = {}, {}
    params = {p.name for p in ctx.command.params}
    for key, value in config.items():
        if key in NOT_IN_CONFIG:
            continue
        if key == "onnx":
            defaults["no_onnx"] = not value
        elif key == "model_args":
            defaults[key] = json.dumps(value) if value is not None else None
        elif key == "budget_range":  # [lo, hi] in a report; LO:HI on the command line
            defaults[key] = ":".join(str(v) for v in value) if isinstance(value, list) else value
        elif key in params:
            defaults[key] = value
        else:  # options without a flag (loss weights, workers): straight to ConvertOptions
            extra[key] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta["convert_extra"] = extra
    return path
