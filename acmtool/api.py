"""The Python face of the conversion: `acmtool.convert(model, budget, data=...)`. The command line's
`acmtool convert` builds the same ConvertOptions and runs the same Pipeline."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch.nn as nn

from acmtool.errors import AcmInputError


class ConvertResult(NamedTuple):
    model: nn.Module  # the trained ACM model (in eval mode); acmtool.save / acmtool.export take it
    report: dict      # what NAME.report.json holds: phases, budget calibration, validation metrics


def convert(model, budget: float, data=None, output=None, *, tokenizer=None, transform=None,
            **options) -> ConvertResult:
    """Convert `model` to ACMs and train them to `budget` (distillation, gate pre-training,
    fine-tuning, budget calibration).

    model: an nn.Module (converted in place, as acmize_ does; timm and Hugging Face models
    record their architecture) or what `acmtool convert` takes (timm:NAME, a folder, a file).
    data: a DataLoader (batches), an iterable of samples (tensors, token dicts, (inputs, label)
    pairs, strings with `tokenizer`), a datasets.Dataset, a path or dataset name, or None for the
    built-in data of the model's inputs; `transform` maps each element first.
    output: where to write the checkpoint, report and ONNX model (as the command line does); None
    keeps the result in memory. options: any other ConvertOptions field (max_steps, num_learners,
    targets, static, finetune_epochs, device, ...)."""
    from acmtool.train.options import ConvertOptions
    from acmtool.train.pipeline import Pipeline
    known = {f.name for f in dataclasses.fields(ConvertOptions)} - {"model", "budget", "data", "output"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise AcmInputError(f"acmtool.convert: unknown option {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    module = model if isinstance(model, nn.Module) else None
    python_data = data is not None and not isinstance(data, (str, Path))
    name = f"<{type(model).__name__} from Python>" if module is not None else str(model)
    data_name = f"<{type(data).__name__} from Python>" if python_data else (str(data) if data is not None else None)
    with tempfile.TemporaryDirectory(prefix="acmtool-convert-") as tmp:
        out = Path(output) if output is not None else Path(tmp) / "model.acm.safetensors"
        opts = ConvertOptions(model=name, budget=budget, data=data_name, output=str(out),
                              **({"onnx": False} if output is None else {}), **options)
        pipeline = Pipeline(opts, model=module, data=data if python_data else None, tokenizer=tokenizer,
                            transform=transform, write_files=output is not None)
        report = pipeline()
    return ConvertResult(pipeline.student.eval(), report)
