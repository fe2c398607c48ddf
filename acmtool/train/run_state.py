"""The resumable state of a conversion run: a folder beside the output, written atomically.

state.pt holds only tensors and plain containers, so it loads with weights_only=True.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import torch

from acmtool.errors import AcmInputError
from acmtool.io.atomic import atomic_path


class RunState:
    def __init__(self, folder: Path, args: dict, enabled: bool = True):
        self.folder, self.args, self.enabled = Path(folder), args, enabled
        self.data: dict = {"phase": None, "step": 0, "done": [], "history": {}}
        self.last_save = time.monotonic()

    @property
    def path(self) -> Path:
        return self.folder / "state.pt"

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> dict:
        """Load a saved run; refuses one started with other arguments."""
        saved_args = json.loads((self.folder / "args.json").read_text())
        differ = {k for k in set(saved_args) | set(self.args)
                  if k not in ("resume", "output", "onnx") and saved_args.get(k) != self.args.get(k)}
        if differ:
            raise AcmInputError(f"--resume: the run in {self.folder} was started with other options "
                                f"({', '.join(sorted(differ))}); rerun without --resume or with the same options")
        try:
            self.data = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise AcmInputError(f"--resume: {self.path} is damaged ({type(e).__name__}); delete {self.folder} "
                                f"and start again") from None
        return self.data

    def save(self, model_state: dict, phase: Optional[str], step: int, optimizer=None, scheduler=None) -> None:
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data.update(phase=phase, step=step, model=model_state,
                         optimizer=optimizer.state_dict() if optimizer is not None else None,
                         scheduler=scheduler.state_dict() if scheduler is not None else None)
        with atomic_path(self.folder / "args.json") as tmp:
            tmp.write_text(json.dumps(self.args, indent=1, default=str))
        with atomic_path(self.path) as tmp:
            torch.save(self.data, tmp)
        self.last_save = time.monotonic()

    def mark_done(self, phase: str, history: dict) -> None:
        self.data["done"] = list(self.data.get("done", [])) + [phase]
        self.data["history"][phase] = history

    def is_done(self, phase: str) -> bool:
        return phase in self.data.get("done", [])

    def due(self, minutes: float) -> bool:
        return time.monotonic() - self.last_save > 60 * minutes
