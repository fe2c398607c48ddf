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
from acmtool.io import json_checks as J
from acmtool.io.atomic import atomic_path


class RunState:
    def __init__(self, folder: Path, args: dict, enabled: bool = True, defaults: Optional[dict] = None):
        # defaults: what an option missing from a saved run's args.json meant (a run started before
        # the option existed ran with its default, so it resumes under it)
        self.folder, self.args, self.enabled = Path(folder), args, enabled
        self.defaults = defaults or {}
        self.data: dict = {"phase": None, "step": 0, "done": [], "history": {}}
        self.last_save = time.monotonic()

    @property
    def path(self) -> Path:
        return self.folder / "state.pt"

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> dict:
        """Load a saved run; refuses one started with other arguments, or a damaged one."""
        try:
            saved_args = json.loads((self.folder / "args.json").read_text())
            if not isinstance(saved_args, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError, RecursionError) as e:
            raise AcmInputError(f"--resume: {self.folder / 'args.json'} is missing or damaged ({type(e).__name__}); "
                                f"delete {self.folder} and start again") from None
        differ = {k for k in set(saved_args) | set(self.args)
                  if k not in ("resume", "output", "onnx", "force")
                  and saved_args.get(k, self.defaults.get(k)) != self.args.get(k)}
        if differ:
            raise AcmInputError(f"--resume: the run in {self.folder} was started with other options "
                                f"({', '.join(sorted(differ))}); rerun without --resume or with the same options")
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            check_run_data(data)
        except Exception as e:
            raise AcmInputError(f"--resume: {self.path} is damaged ({type(e).__name__}: {str(e)[:120]}); delete "
                                f"{self.folder} and start again") from None
        self.data = data
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


def check_run_data(data) -> None:
    """The shape `save` writes; anything else is a damaged or foreign state file."""
    J.obj(data, "state", required=("phase", "step", "done", "history", "model"), optional=("optimizer", "scheduler"))
    J.optional(J.string, data["phase"], "state.phase", 64)
    J.integer(data["step"], "state.step", 0, 1 << 40)
    for i, phase in enumerate(J.array(data["done"], "state.done", 16)):
        J.string(phase, f"state.done[{i}]", 64)
    if not isinstance(data["history"], dict):
        raise J.BadValue("state.history: expected an object")
    model = data["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in model.items()):
        raise J.BadValue("state.model: expected a state dict of tensors")
    for key in ("optimizer", "scheduler"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise J.BadValue(f"state.{key}: expected an object")
