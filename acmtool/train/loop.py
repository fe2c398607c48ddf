"""One training phase: AdamW, cosine schedule, gradient clipping, a progress bar, periodic
checkpoints, resume, and a graceful stop on the first Ctrl-C."""
from __future__ import annotations

import math
import signal
import threading
from typing import Callable, Iterator, Optional

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from acmtool.errors import StopRequested
from acmtool.train.distributed import DistContext, all_mean


class GracefulStop:
    """First Ctrl-C: finish the current step, checkpoint, stop. Second: stop at once."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nacmtool: stopping after this step and saving a checkpoint (Ctrl-C again to abort)", flush=True)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def endless(loader, start_step: int) -> Iterator:
    """Batches forever, epoch after epoch (each sampler epoch reshuffled), from `start_step` on."""
    per_epoch = max(1, len(loader))
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        for sampler in (loader.sampler, loader.batch_sampler):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
        for i, batch in enumerate(loader):
            if skip:
                skip -= 1
                continue
            yield batch
        epoch += 1


def warmup_steps(steps: int, floor: int = 0) -> int:
    """Linear warm-up: a twentieth of the phase, and at least `floor` steps (at most half of it)."""
    return max(1, steps // 20, min(floor, steps // 2))


def cosine_schedule(optimizer, steps: int, warmup: int):
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def run_phase(name: str, *, objective: Callable, params: list, steps: int, lr: float, loader, run_state,
              student: nn.Module, ctx: DistContext, stop: GracefulStop, checkpoint_minutes: float,
              weight_decay: float = 0.01, grad_clip: float = 1.0, after_step: Optional[Callable] = None,
              before_step: Optional[Callable] = None, min_warmup: int = 0) -> dict:
    """objective(batch) -> (loss, {stat: float}), or an iterable of them: one optimiser update each
    (acmtool.train.token_chunks), the step's stats their mean. before_step(step, steps) runs before each step (step
    counts from 0, resumed runs from where they stopped), after_step(stats, step, steps) after each
    update. params: tensors, or optimiser groups (dicts with "params" and their own "lr"). Returns the
    phase's history (mean stats)."""
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    scheduler = cosine_schedule(optimizer, steps, warmup=warmup_steps(steps, min_warmup))
    start = 0
    if run_state.data.get("phase") == name and run_state.data.get("optimizer") is not None:
        optimizer.load_state_dict(run_state.data["optimizer"])
        scheduler.load_state_dict(run_state.data["scheduler"])
        start = int(run_state.data["step"])
    totals: dict[str, float] = {}
    count = 0
    bar = tqdm(total=steps, initial=start, desc=name, unit="step", disable=not ctx.is_main, dynamic_ncols=True)
    data = endless(loader, start)
    try:
        for step in range(start, steps):
            batch = next(data)
            if before_step is not None:
                before_step(step, steps)
            got = objective(batch)
            parts = [got] if isinstance(got, tuple) else got  # an iterable: one update per part of the batch
            sums, n = {}, 0
            for loss, stats in parts:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
                optimizer.step()
                for k, v in {"loss": float(loss.detach()), **stats}.items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
            scheduler.step()  # the schedule counts batches: a resumed run finds the same learning rate
            stats = {k: v / max(n, 1) for k, v in sums.items()}
            if after_step is not None:
                after_step({k: v for k, v in stats.items() if k != "loss"}, step + 1, steps)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v
            count += 1
            bar.set_postfix({k: f"{v:.4g}" for k, v in stats.items()}, refresh=False)
            bar.update(1)
            if stop.requested or (run_state.due(checkpoint_minutes) and step + 1 < steps):
                if ctx.is_main:
                    run_state.save(student.state_dict(), name, step + 1, optimizer, scheduler)
                if stop.requested:
                    raise StopRequested()
    finally:
        bar.close()
    return {k: all_mean(v / max(1, count), ctx) for k, v in totals.items()}
