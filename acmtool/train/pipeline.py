"""`acmtool convert --data`: load, convert, distil, pre-train the gates, fine-tune to the budget,
calibrate the budget, evaluate, write the checkpoint and the report. Resumable after each phase
and every few minutes; under torchrun it trains with DistributedDataParallel."""
from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from acmtool.adapters import find_sites
from acmtool.config import AcmConfig
from acmtool.convert.acmize import acmize_
from acmtool.data.length_batches import LengthGroupedBatches, eval_loader, text_lengths
from acmtool.errors import AcmInputError, StopRequested
from acmtool.io.atomic import atomic_path
from acmtool.io.call import main_output, run_model
from acmtool.io.checkpoint import save
from acmtool.io.outputs import onnx_outputs, onnx_path, refuse_existing, report_path
from acmtool.io.sources import example_inputs, load_model
from acmtool.layers.acm import acm_modules
from acmtool.layers.control import apply_static_k, at_budget, set_knob
from acmtool.train.budget_range import GateRangeTraining, RangeTraining, gate_param_groups, report_budgets
from acmtool.train.budget_table import budget_table
from acmtool.train.calibrate_budget import calibrate_budget, shift_gates
from acmtool.train.calibration_rows import calibration_batches
from acmtool.train.capture import SiteCapture
from acmtool.train.distributed import DistContext, all_mean, barrier, init_distributed
from acmtool.train.evaluate import evaluate
from acmtool.train.feature_scale import embedding_scale
from acmtool.train.loop import GracefulStop, run_phase, to_device
from acmtool.train.objectives import DistillObjective, FinetuneObjective, GateObjective
from acmtool.train.options import GATE_LR, ConvertOptions
from acmtool.train.run_state import RunState
from acmtool.train.token_chunks import DISTILL_TOKENS, GATE_TOKENS, token_chunks

CALIBRATION_BATCHES = 8
STEER_RATE = 0.5  # logits per unit of budget error, per fine-tuning step (--finetune-gates)
MAX_STEER_WEIGHT = 4.0  # a batch of many tokens steers at most this many times a mean batch's step
# Fine-tuning moves every weight of the pre-trained model, and Adam's first steps move each by about
# the learning rate whatever its gradient: a short phase (Whisper on Asterisk: 15 steps, so one
# warm-up step) took the distillation loss from 0.021 to 0.34 in its first update.
FINETUNE_WARMUP = 8
NOISE_FREE = 0.75  # the fraction of fine-tuning after which the gates train without Gumbel noise


def run_folder(output: Path) -> Path:
    return output.with_name(output.name + ".run")


def _wrap(module: nn.Module, ctx: DistContext) -> nn.Module:
    if not ctx.enabled:
        return module
    return DistributedDataParallel(module, find_unused_parameters=True)


def _set_trainable(params_on: list, params_off: list) -> None:
    for p in params_off:
        p.requires_grad_(False)
    for p in params_on:
        p.requires_grad_(True)


def _learner_params(acms: dict) -> list:
    return [p for m in acms.values() for n, p in m.named_parameters() if not n.startswith("gate.")]


def _gate_params(acms: dict) -> list:
    return [p for m in acms.values() for p in m.gate.parameters()]


class Pipeline:
    """One conversion. model / data: Python objects instead of opts.model / opts.data (acmtool.convert);
    write_files=False keeps the result in memory: no checkpoint, report or ONNX file (the run's
    state still goes to opts.output's run folder while it trains, and is removed at the end)."""

    def __init__(self, opts: ConvertOptions, model: Optional[nn.Module] = None, data=None, tokenizer=None,
                 transform=None, write_files: bool = True):
        self.opts = opts
        self.model_obj, self.data_obj = model, data
        self.tokenizer, self.transform, self.write_files = tokenizer, transform, write_files
        self.started = time.time()
        self.seconds: dict = {}  # wall time of each stage in this process (a resumed run: since resuming)
        self.ctx = init_distributed(opts.device)
        self.out = Path(opts.output)
        self.run = RunState(run_folder(self.out), opts.to_dict(), enabled=self.ctx.is_main,
                            defaults=ConvertOptions.defaults())

    def log(self, msg: str) -> None:
        if self.ctx.is_main:
            print(msg, flush=True)

    @contextlib.contextmanager
    def timed(self, stage: str):
        """Adds the block's wall time to the report's stage_seconds: where a slow conversion's time goes."""
        start = time.time()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.time() - start

    # --- set-up ----------------------------------------------------------------------------
    def outputs(self) -> list:
        """Every file the run writes: checkpoint, report, and the ONNX model and its external data."""
        if not self.write_files:
            return []
        return [self.out, report_path(self.out)] + (onnx_outputs(onnx_path(self.out)) if self.opts.onnx else [])

    def prepare(self) -> None:
        from acmtool.data import load_data
        o = self.opts
        if o.resume and not self.run.exists():
            raise AcmInputError(f"--resume: no interrupted run in {self.run.folder}")
        if not o.resume and self.run.exists():
            raise AcmInputError(f"an interrupted run is in {self.run.folder}: pass --resume to continue it, or "
                                f"delete that folder to start again")
        if not o.resume:  # a resumed run may replace its own files (written before it was stopped)
            refuse_existing(self.outputs(), o.force)
        if self.model_obj is not None:
            from acmtool.io.sources import LoadedModel, user_spec
            loaded = LoadedModel(self.model_obj, user_spec(self.model_obj))
        else:
            loaded = load_model(o.model, weights=o.weights, arch=o.arch, trust_pickle=o.trust_pickle,
                                model_kwargs=o.model_args)
        self.spec = loaded.spec
        if not o.static:
            from acmtool.train.options import few_learners_line
            line = few_learners_line(o.budget, o.num_learners, o.budget_range[0] if o.budget_range else None)
            if line:
                self.log(line)
        source, max_samples = (self.data_obj if self.data_obj is not None else o.data), o.max_samples
        if source is None:  # the built-in data for the model's inputs, capped
            from acmtool.data.default import DEFAULT_MAX_SAMPLES, default_data, default_data_line
            source = default_data(loaded.model, loaded.spec)
            max_samples = max_samples or DEFAULT_MAX_SAMPLES
            self.log(default_data_line(source, max_samples))
        self.data = load_data(source, loaded.model, loaded.spec, val_fraction=o.val_fraction, seed=o.seed,
                              max_samples=max_samples, text_column=o.text_column, label_column=o.label_column,
                              tokenizer=self.tokenizer, transform=self.transform)
        if o.labels and self.data.num_classes is None:
            raise AcmInputError(f"--labels: {o.data} has no labels")
        if o.resume:
            self.run.load()
        torch.manual_seed(o.seed)
        dev = self.ctx.device
        self.teacher = copy.deepcopy(loaded.model).eval().requires_grad_(False).to(dev)
        self.student = loaded.model.to(dev)
        self.train_loader = self._train_loader()
        self.val_loader = eval_loader(self.data.val, o.batch_size, self.data.collate, self.data.kind, o.workers)
        # a fixed, unsharded set of training batches: every rank calibrates on the same tokens
        calib = DataLoader(self.data.train, batch_size=o.batch_size, shuffle=True, collate_fn=self.data.collate,
                           generator=torch.Generator().manual_seed(o.seed + 1))
        self.calib_batches = [x for _, (x, _) in zip(range(CALIBRATION_BATCHES), calib)]
        # long inputs (Whisper: 1500 encoder frames a clip): only the first samples that hold enough tokens
        firsts = [getattr(s, "fc1", None) or s.linear for s in find_sites(self.teacher, o.targets)]
        self.calib_batches = calibration_batches(self.teacher, firsts, self.calib_batches, dev)
        # embedding models: errors in the units of a linear head on the original's standardised
        # features (the gate labels' Fisher probe and fine-tuning); None for classifiers
        self.embedding_scale = embedding_scale(self.teacher, self.calib_batches, dev)
        if o.labels:
            self._check_label_count()
        config = AcmConfig(num_learners=o.num_learners, targets=o.targets, gumbel_tau=o.gumbel_tau,
                           budget_input=o.budget_range is not None)
        example = example_inputs(self.student, self.spec)
        acmize_(self.student, config, calibration=None if o.resume else [to_device(b, dev) for b in self.calib_batches],
                example_inputs=to_device(example, dev) if example is not None else None, init=not o.resume)
        if o.resume:
            self.student.load_state_dict(self.run.data["model"])
            self.log(f"resuming from {self.run.folder} (done: {', '.join(self.run.data['done']) or 'nothing'}; "
                     f"{self.run.data['phase'] or 'next phase'} at step {self.run.data['step']})")
        self.acms = dict(acm_modules(self.student))
        self.capture = SiteCapture(self.teacher, self.student, o.targets)

    def _train_loader(self) -> DataLoader:
        o, ctx, train = self.opts, self.ctx, self.data.train
        drop_last = len(train) > o.batch_size * ctx.world
        if self.data.kind == "text":  # similar lengths per batch: little compute spent on padding
            batches = LengthGroupedBatches(text_lengths(train), o.batch_size, seed=o.seed, rank=ctx.rank,
                                           world=ctx.world, drop_last=drop_last)
            return DataLoader(train, batch_sampler=batches, collate_fn=self.data.collate, num_workers=o.workers)
        sampler = DistributedSampler(train, seed=o.seed) if ctx.enabled else None
        return DataLoader(train, batch_size=o.batch_size, shuffle=sampler is None, sampler=sampler,
                          collate_fn=self.data.collate, drop_last=drop_last, num_workers=o.workers,
                          generator=torch.Generator().manual_seed(o.seed))

    @torch.no_grad()
    def _check_label_count(self) -> None:
        kind, out = main_output(run_model(self.teacher, to_device(self.calib_batches[0], self.ctx.device)))
        if kind != "logits" or out.shape[-1] != self.data.num_classes:
            got = f"{out.shape[-1]} outputs" if kind == "logits" else "no classifier head"
            raise AcmInputError(f"--labels: {self.opts.data} has {self.data.num_classes} classes but the model has "
                                f"{got}")

    def steps(self, epochs: float) -> int:
        n = math.ceil(epochs * len(self.train_loader)) if epochs > 0 else 0
        return min(n, self.opts.max_steps) if self.opts.max_steps else n

    # --- phases ----------------------------------------------------------------------------
    def phase(self, name: str, epochs: float, lr: float, step_fn, params: list, stop: GracefulStop,
              after_step=None, before_step=None, min_warmup: int = 0) -> None:
        if self.run.is_done(name):
            return
        steps = self.steps(epochs)
        history = {}
        if steps:
            history = run_phase(name, objective=step_fn, params=params, steps=steps, lr=lr,
                                loader=self.train_loader, run_state=self.run, student=self.student, ctx=self.ctx,
                                stop=stop, checkpoint_minutes=self.opts.checkpoint_minutes, after_step=after_step,
                                before_step=before_step, min_warmup=min_warmup)
        history["steps"] = steps
        self.run.mark_done(name, history)
        self.run.save(self.student.state_dict(), None, 0)
        barrier(self.ctx)

    def distill(self, stop) -> None:
        _set_trainable(_learner_params(self.acms), _gate_params(self.acms))
        obj = _wrap(DistillObjective(self.acms, self.opts.distill_weighting(), self.opts.budget), self.ctx)

        parts = torch.Generator().manual_seed(self.opts.seed + 3 + self.ctx.rank)

        def step(batch):
            _, caps = self.capture(to_device(batch[0], self.ctx.device))
            chunks = token_chunks(caps, DISTILL_TOKENS, parts, self.ctx)
            if chunks is None:
                return obj(caps), {}
            return ((obj({n: tuple(t[r] for t in ts) for (n, ts), r in zip(caps.items(), rows)}), {})
                    for rows in chunks)
        self.phase("distill", self.opts.distill_epochs, self.opts.distill_lr, step,
                   _learner_params(self.acms), stop)

    def pretrain_gates(self, stop) -> None:
        _set_trainable(_gate_params(self.acms), _learner_params(self.acms))
        labels = self.gate_label_rule()
        objective = GateObjective(self.acms, self.opts.tau, labels, self.opts.budget)
        obj = _wrap(objective, self.ctx)
        probe = torch.Generator().manual_seed(self.opts.seed + 2 + self.ctx.rank)
        spread = None
        if self.opts.budget_range is not None:  # labels at each step's budget, which the gates are told
            spread = GateRangeTraining(objective, self.acms.values(), self.opts.budget, self.opts.budget_range,
                                       self.opts.seed)

        parts = torch.Generator().manual_seed(self.opts.seed + 4 + self.ctx.rank)

        def update(caps, prepared, rows):
            loss, acc = obj(caps, prepared, rows)
            return loss, {"gate_acc": acc}

        def step(batch):
            _, caps = self.capture(to_device(batch[0], self.ctx.device), sensitivity=labels == "loss", generator=probe,
                                   probes=self.opts.gate_probes, scale=self.embedding_scale)
            prepared = objective.prepare(caps)  # labels over the whole batch, then a step per part of it
            chunks = token_chunks(caps, GATE_TOKENS, parts, self.ctx)
            if chunks is None:
                return update(caps, prepared, None)
            return (update(caps, prepared, rows) for rows in chunks)
        lr = self.opts.gate_lr if self.opts.gate_lr is not None else GATE_LR[labels]
        params = _gate_params(self.acms) if spread is None else gate_param_groups(self.acms.values(), lr)
        try:
            self.phase("gates", self.opts.gate_epochs, lr, step, params, stop, before_step=spread)
        finally:
            set_knob(self.acms.values(), None, None)

    def gate_label_rule(self) -> str:
        """--gate-labels auto: 'loss' for every model: each token's error weighed by what it costs the
        output (the KL of the logits, or the cosine of the pooled embedding), one allocation over
        every block. On the demo's ViT at budget 0.25 the loss-aware oracle itself agrees with the
        dense model on 99.3 % of the test images, the per-block relative one on 97.8 %; ACM - static
        went from +0.07 ('budget') to +0.13 +- 0.10 and +0.26 +- 0.10 points (seeds 0 and 1). On
        MiniLM / fortunes at 0.25, 'budget' gave k = 1 to every token (the static model: cosine
        0.873), 'loss' skips 58 % of the MLP tokens and reaches cosine 0.916 (ACM - static +0.0437
        +- 0.0008 on 1519 held-out sentences; drop-in probe -0.33 +- 0.98 points, a tie)."""
        if self.opts.gate_labels != "auto":
            return self.opts.gate_labels
        return "loss"

    def finetune(self, stop) -> None:
        o = self.opts
        static = o.static
        # By default the gates keep the weights that gate pre-training gave them (after a bias shift
        # to the budget) and the learners and the rest of the model learn to work with their
        # choices: on MiniLM at budget 0.5 that gave cosine 0.958 against 0.950 with the gates
        # trained on (--finetune-gates).
        train_gates = o.finetune_gates and not static
        gates = {id(p) for p in _gate_params(self.acms)}  # by identity: a model's own "gate" (MoE) trains
        params = [p for p in self.student.parameters() if train_gates or id(p) not in gates]
        _set_trainable(params, [p for p in self.student.parameters() if all(p is not q for q in params)])
        if not static and not self.run.is_done("finetune") and self.run.data.get("phase") != "finetune":
            # start at the budget: gate pre-training's labels (the tau rule above all) may spend
            # another, and the model should learn at the split it will be deployed at
            start = calibrate_budget(self.student, self.calib_batches, o.budget, self.ctx.device)
            self.log(f"gates shifted to the budget before fine-tuning: {start['budget']:.3f}")
        obj = FinetuneObjective(self.student, self.acms, None if static else o.budget,
                                (o.budget_weight, o.entropy_weight, o.diversity_weight), o.labels,
                                gate_losses=train_gates, embedding_scale=self.embedding_scale)
        wrapped = _wrap(obj, self.ctx)
        # the rest of the model stays in eval mode (no dropout: the student imitates the teacher);
        # ACMs train: their gates choose through the straight-through one-hot, with Gumbel noise
        # only while the gates themselves train
        self.student.eval()
        for m in self.acms.values():
            m.train(not static)
            if not train_gates:
                m.gumbel_noise = 0.0

        def step(batch):
            inputs = to_device(batch[0], self.ctx.device)
            with torch.no_grad():
                teacher_out = run_model(self.teacher, inputs)
            return wrapped(inputs, batch[1].to(self.ctx.device), teacher_out)

        seen = {"tokens": 0.0, "steps": 0}  # for the mean tokens per batch

        def steer(stats, step, steps):
            # Frozen gates do not steer: their spend drifts (DINOv2-112 at 0.25 fine-tuned at 0.28)
            # and calibration brings it back after, and steering them too did not help there (drop-in
            # probe 76.25 % against 77.44 %, cosine 0.9555 against 0.9561, 1600 test images).
            if not train_gates or "budget" not in stats:
                return
            # dual ascent on the budget constraint: the gates' logits move towards fewer learners
            # while the batch spends too much (and back), so fine-tuning runs at the budget it
            # will be deployed at; the budget loss alone pulls too weakly through Gumbel noise
            # Batches weigh by their real tokens, as the budget weighs tokens: short texts' batches
            # must not count as much as long ones'.
            tokens = all_mean(stats["tokens"], self.ctx)
            spent = all_mean(stats["budget"] * stats["tokens"], self.ctx)
            seen["tokens"] += tokens
            seen["steps"] += 1
            if tokens > 0:
                weight = min(MAX_STEER_WEIGHT, tokens * seen["steps"] / seen["tokens"])
                shift_gates(self.acms, STEER_RATE * weight * (spent / tokens - o.budget))
            # anneal the Gumbel noise to 0 by NOISE_FREE of the phase: the last steps train the
            # deterministic choices that inference makes
            noise = max(0.0, 1.0 - step / (NOISE_FREE * steps))
            for m in self.acms.values():
                m.gumbel_noise = noise
        spread = None
        if o.budget_range is not None:  # each step at its own budget of the range, through the knob's shift
            spread = RangeTraining(self.student, self.calib_batches, o.budget, o.budget_range, self.ctx.device,
                                   o.seed, self.log, skew=o.range_skew)
        try:
            self.phase("finetune", o.finetune_epochs, o.finetune_lr, step, params, stop, after_step=steer,
                       before_step=spread, min_warmup=FINETUNE_WARMUP)
        finally:
            if spread is not None:
                spread.finish()
            self.student.eval()

    # --- the whole job -----------------------------------------------------------------------
    def __call__(self) -> dict:
        o = self.opts
        with self.timed("prepare"):
            self.prepare()
        with GracefulStop() as stop:
            try:
                with self.timed("distill"):
                    self.distill(stop)
                if o.static:
                    apply_static_k(self.student, o.budget)
                else:
                    with self.timed("gates"):
                        self.pretrain_gates(stop)
                with self.timed("finetune"):
                    self.finetune(stop)
            except StopRequested:
                self.log(f"stopped; the run is saved in {self.run.folder}. Resume with the same command and --resume")
                raise
        self.student.eval()
        calibration = table = None
        if not o.static:
            with self.timed("budget"):
                calibration = calibrate_budget(self.student, self.calib_batches, o.budget, self.ctx.device)
                # the run-time budget knob (acmtool.set_budget, the ONNX model's budget input)
                table = budget_table(self.student, self.calib_batches, o.budget, self.ctx.device)
            lo, hi = table["budgets"][0], table["budgets"][-1]
            self.log(f"budget knob: calibrated for budgets {lo:.2f} to {hi:.2f} ({len(table['budgets'])} points)")
        info = self.student.acmtool_info
        info.update(budget=o.budget, static=o.static)
        if table is not None:
            info["budget_table"] = {k: table[k] for k in ("budgets", "shifts", "conditioned") if k in table}
        if o.budget_range is not None:
            info["budget_range"] = list(o.budget_range)
        with self.timed("evaluate"):
            report = self.report(calibration)
        report["budget_table"] = table
        info["report"] = report
        if self.ctx.is_main:
            if self.write_files:
                self.write(report)
            else:
                shutil.rmtree(self.run.folder, ignore_errors=True)
        barrier(self.ctx)
        return report

    def report(self, calibration) -> dict:
        o = self.opts
        profile = self.student.acmtool_info.get("flops_profile")
        validation, curve = {}, None
        if self.ctx.is_main:
            probe = eval_loader(self.data.train, o.batch_size, self.data.collate, self.data.kind) \
                if self.data.num_classes else None
            validation, ev = evaluate(self.student, self.teacher, self.val_loader, self.ctx.device, profile,
                                      probe_loader=probe, transcripts=self.data.transcripts)
            if o.budget_range is not None:  # the one model across its range, on the same samples
                curve = []
                budgets = self.student.acmtool_info["budget_table"]["budgets"]
                for b in report_budgets(*o.budget_range, o.budget):
                    if not budgets[0] <= b <= budgets[-1]:
                        self.log(f"budget {b:g}: out of the calibrated range, not evaluated")
                        continue
                    with at_budget(self.student, b):
                        at, _ = evaluate(self.student, self.teacher, self.val_loader, self.ctx.device, profile,
                                         probe_loader=probe, original=ev.original, transcripts=self.data.transcripts)
                    curve.append({"budget": b, **at})
        return {"budget_curve": curve, "model": o.model, "data": self.data.source, "default_data": o.data is None,
                "budget_target": o.budget, "static": o.static, "device": str(self.ctx.device),
                "options": {"seed": o.seed, "val_fraction": o.val_fraction, "max_samples": o.max_samples,
                            "text_column": o.text_column, "label_column": o.label_column},
                # every option, as `acmtool convert --config` reads them back: the run is reproducible
                "convert_options": {k: v for k, v in o.to_dict().items() if k not in ("resume",)},
                "targets": o.targets, "num_learners": o.num_learners, "processes": self.ctx.world,
                "phases": self.run.data.get("history", {}), "budget_calibration": calibration,
                "validation": validation, "wall_time_s": time.time() - self.started, "stage_seconds": self.seconds}

    def write(self, report: dict) -> None:
        o = self.opts
        if not (o.force or o.resume):
            self._refuse_new_files()
        save(self.student.cpu(), self.out, source=self.spec)
        if o.onnx:  # replaces only what this run may replace: checked above and up front
            with self.timed("export"):
                report["onnx"] = export_after_convert(self.out, self.log, force=True)
            if report["onnx"]:
                from acmtool.export.dense_fallback import exported_dense_blocks
                report["onnx_dense_blocks"] = exported_dense_blocks(report["onnx"])
        report["stage_seconds"] = dict(self.seconds)
        with atomic_path(report_path(self.out)) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        shutil.rmtree(self.run.folder, ignore_errors=True)

    def _refuse_new_files(self) -> None:
        """A file that appeared at an output path while the run trained is not replaced either; the
        trained run stays on disk so that nothing is lost."""
        for p in self.outputs():
            if p.exists() or p.is_symlink():
                raise AcmInputError(f"{p} appeared while this run trained and was not replaced; the trained run is "
                                    f"kept in {self.run.folder}: move {p} away (or keep it and let the run replace "
                                    f"it) and rerun the same command with --resume")


def export_after_convert(output: Path, log, force: bool = False) -> Optional[str]:
    """The ONNX model beside the checkpoint (NAME.acm.onnx; a Whisper's folder of graphs
    NAME.acm.whisper); a model that does not export keeps its checkpoint. Static models export too,
    as the narrower dense model they are; ACMs that cannot beat their dense block export as it
    (acmtool.export.dense_fallback)."""
    from acmtool.export import export_checkpoint
    from acmtool.export.dense_fallback import dense_fallback_line
    try:
        path = export_checkpoint(output, None, force=force)  # NAME.acm.onnx, or a Whisper's NAME.acm.whisper
    except AcmInputError as e:  # a model the export does not take: retrying would not help
        log(f"not exported to ONNX: {e}")
        return None
    except Exception as e:  # export failures must not cost the trained checkpoint
        log(f"acmtool: ONNX export failed ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}); "
            f"the checkpoint is saved: retry with acmtool export {output}")
        return None
    log(f"wrote {path}")
    if dense_fallback_line(path):
        log(dense_fallback_line(path))
    return str(path)


def convert(opts: ConvertOptions) -> dict:
    return Pipeline(opts)()
