"""A tiny ViT and a tiny learnable image set: whole conversions in seconds, for the tests that run them."""
import json

import numpy as np

TINY = "timm:vit_tiny_patch16_224"
TINY_ARGS = {"img_size": 16, "in_chans": 1, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2,
             "num_classes": 4, "mlp_ratio": 4}


def write_squares(path, n: int = 400) -> str:
    """Images whose class decides where a bright square sits: learnable, labelled, seeded."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, n)
    x = rng.normal(0, 0.3, (n, 1, 16, 16)).astype(np.float32)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 0, r * 8:(r + 1) * 8, col * 8:(col + 1) * 8] += 1.0
    np.savez(path, x=x, y=y)
    return str(path)


def convert_args(npz, out, *extra) -> list:
    """`acmtool convert` on the tiny ViT: the arguments after the command name."""
    return ["convert", TINY, "--model-args", json.dumps(TINY_ARGS), "--budget", "0.5", "--data", str(npz),
            "-o", str(out), *map(str, extra)]
