"""The demo's dense model: a small timm ViT trained on Fashion-MNIST, cached after the first run."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from acmtool.io.atomic import atomic_path
from acmtool.io.sources import load_model
from acmtool.train.loop import cosine_schedule, endless

MODEL = "timm:vit_tiny_patch16_224"
MODEL_ARGS = {"img_size": 28, "in_chans": 1, "patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 3,
              "num_classes": 10}
TRAIN = {"epochs": 4, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.05, "seed": 0}


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "acmtool" / "demo"


def weights_path() -> Path:
    key = hashlib.sha256(json.dumps([MODEL, MODEL_ARGS, TRAIN], sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"fashion-vit-{key}.safetensors"


def trained_weights(log=print) -> Path:
    """The trained dense weights: from the cache, or trained now (a few minutes on 2 cores)."""
    path = weights_path()
    if path.is_file():
        log(f"dense model: cached {path}")
        return path
    from acmtool.data import load_data
    from safetensors.torch import save_file
    loaded = load_model(MODEL, model_kwargs=MODEL_ARGS)
    model = loaded.model.train()
    data = load_data("fashion-mnist", model, loaded.spec, seed=TRAIN["seed"])
    torch.manual_seed(TRAIN["seed"])
    loader = DataLoader(data.train, batch_size=TRAIN["batch_size"], shuffle=True, collate_fn=data.collate,
                        drop_last=True, generator=torch.Generator().manual_seed(TRAIN["seed"]))
    steps = TRAIN["epochs"] * len(loader)
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN["lr"], weight_decay=TRAIN["weight_decay"])
    sched = cosine_schedule(opt, steps, warmup=steps // 20)
    log(f"dense model: training {MODEL} {MODEL_ARGS} on Fashion-MNIST for {TRAIN['epochs']} epochs (once; cached)")
    batches = endless(loader, 0)
    with tqdm(total=steps, desc="train dense", unit="step", dynamic_ncols=True) as bar:
        for _ in range(steps):
            x, y = next(batches)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
            bar.update(1)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"model": MODEL, "model_args": json.dumps(MODEL_ARGS)})
    log(f"dense model: saved {path}")
    return path
