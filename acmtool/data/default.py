"""The built-in data `acmtool convert MODEL --budget B` distils on when no --data is given: the
Fashion-MNIST images for image models, the fortunes text for text models (both from Debian
packages, the data the demo uses). A user's own data will do better: the conversion says so."""
from __future__ import annotations

import torch

from acmtool.errors import AcmInputError

# A cap on the built-in data's samples (unless --max-samples says otherwise): the ACMs learn from
# the model's own outputs, and a few thousand samples keep a CPU conversion within the hour.
DEFAULT_MAX_SAMPLES = 4000


def default_data(model, spec: dict) -> str:
    """The named dataset for this model's inputs; an AcmInputError when none fits."""
    from acmtool.io.sources import example_inputs
    ex = example_inputs(model, spec)
    if isinstance(ex, torch.Tensor) and ex.dim() == 4 or isinstance(ex, dict) and "pixel_values" in ex:
        return "fashion-mnist"
    if isinstance(ex, dict) and "input_ids" in ex:
        return "fortunes"
    what = f"inputs {sorted(ex)}" if isinstance(ex, dict) else "inputs acmtool cannot tell" if ex is None else \
        f"a {ex.dim()}-d input"
    raise AcmInputError(f"no built-in data fits this model ({what}); give --data: {_KINDS}")


_KINDS = "a folder of images, a .npz with x (and y), a .txt file, fashion-mnist or fortunes"


def default_data_line(name: str, max_samples: int) -> str:
    return (f"no --data: distilling on the built-in {name} data ({max_samples} samples, no labels used); your own "
            f"data will do better: pass --data")
