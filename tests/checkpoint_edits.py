"""Edit a saved ACM checkpoint the way a damaged or hostile file would: its info JSON, its other
metadata, or its tensors (each edit a function that changes the object in place)."""
import json

from safetensors import safe_open
from safetensors.torch import save_file


def rewrite(src, dst, info=None, tensors=None, meta=None):
    with safe_open(str(src), "pt") as f:
        metadata = dict(f.metadata())
        state = {k: f.get_tensor(k) for k in f.keys()}
    if info:
        d = json.loads(metadata["info"])
        info(d)
        metadata["info"] = json.dumps(d)
    if meta:
        meta(metadata)
    if tensors:
        tensors(state)
    save_file(state, dst, metadata=metadata)
