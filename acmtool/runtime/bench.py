"""Latency of ONNX models in ONNX Runtime, alone or side by side with a baseline.

    report = bench("vit.onnx", BenchConfig(batch=8), baseline="dense.onnx")
    report["model"]["p50_ms"], report["speedup"]

Inputs are random and fit the model: dynamic axes take `batch` (axis 0) and `seq` (any other
axis); integer inputs named like an attention mask are ones, token type ids zeros, position ids
0..seq-1, any other integer input (input_ids) uniform in [0, vocab); float inputs standard normal.
A model and its baseline that share an input name and shape get the same array.

With a baseline the two run interleaved, one run of each per round (the order alternating, each
after a pause that lets the other session's threads stop spinning and an untimed run that wakes the
cores again), so a slow spell of the machine hits both alike; the speed-up is the median over rounds of
baseline time / model time (above 1: the model is faster). On CUDA the inputs and outputs are
bound on the device (IOBinding), so host-device copies are not timed.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from acmtool.errors import AcmInputError

PERCENTILES = (50, 90, 99)
# The pause before each interleaved run (and before its untimed run). Measured on 2 cores (ViT-S,
# batch 1, two sessions of 2 intra-op threads, ONNX Runtime 1.32): with no pause both medians rose
# by up to 40 % over each session's time alone and the speed-up moved by up to 0.25 either way,
# still off after 20 ms; from 40 ms on the medians matched the sessions' times alone.
COOLDOWN_S = 0.05
# Providers whose inputs and outputs are bound on the device: provider -> OrtValue device type.
DEVICE_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


@dataclass
class BenchConfig:
    batch: Optional[int] = None  # for a dynamic batch axis; None: 1 (a fixed batch axis keeps its size)
    seq: int = 128  # for every other dynamic axis
    warmup: int = 10
    iters: int = 100
    threads: Optional[int] = None  # intra-op threads; None: ONNX Runtime's default
    provider: str = "CPUExecutionProvider"
    vocab: int = 100  # input_ids are drawn from [0, vocab)
    seed: int = 0
    max_seconds: Optional[float] = None  # cap on the timed rounds' total: fewer rounds, never under MIN_ROUNDS
    profile_runs: int = 0  # > 0: also profile each model over this many runs (time per node type and role)
    budgets: Optional[list] = None  # a model with a budget input: time it at each, interleaved with the rest

    def __post_init__(self):
        for name, low in (("seq", 1), ("warmup", 0), ("iters", 1), ("vocab", 1), ("profile_runs", 0)):
            if getattr(self, name) < low:
                raise AcmInputError(f"--{name} must be at least {low}; got {getattr(self, name)}")
        if self.batch is not None and self.batch < 1:
            raise AcmInputError(f"--batch must be at least 1; got {self.batch}")
        if self.threads is not None and self.threads < 1:
            raise AcmInputError(f"--threads must be at least 1; got {self.threads}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise AcmInputError(f"--max-seconds must be positive; got {self.max_seconds}")
        if self.budgets is not None and (not self.budgets or not all(0 < b <= 1 for b in self.budgets)):
            raise AcmInputError(f"--budgets must be numbers in (0, 1]; got {self.budgets}")


# --- inputs ---------------------------------------------------------------------------------
def check_model_file(path) -> Path:
    """A readable ONNX file, or an AcmInputError that says what is wrong with it."""
    import onnx
    from acmtool.io.sources import check_file
    path = Path(path)
    check_file(path)
    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise AcmInputError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    return path


def input_shape(dims, batch: Optional[int], seq: int, name: str) -> tuple:
    """A concrete shape for an input whose dims ONNX Runtime reports (ints, or names/None when dynamic)."""
    shape = []
    for axis, d in enumerate(dims):
        if isinstance(d, int) and d >= 0:
            if axis == 0 and batch is not None and d != batch:
                raise AcmInputError(f"input {name!r} has a fixed batch size of {d}; --batch {batch} does not fit")
            shape.append(d)
        else:
            shape.append((batch or 1) if axis == 0 else seq)
    return tuple(shape)


def random_input(name: str, onnx_type: str, shape: tuple, vocab: int, rng: np.random.Generator) -> np.ndarray:
    dtype = _NUMPY_TYPES.get(onnx_type)
    if dtype is None:
        raise AcmInputError(f"input {name!r} has type {onnx_type}, for which acmtool bench makes no random data")
    lower = name.lower()
    if dtype == np.bool_:
        return np.ones(shape, dtype)
    if np.issubdtype(dtype, np.integer):
        if "mask" in lower:
            return np.ones(shape, dtype)
        if "token_type" in lower or "segment" in lower:
            return np.zeros(shape, dtype)
        if "position" in lower and shape:
            return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
        return rng.integers(0, vocab, shape, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def random_feeds(sess, cfg: BenchConfig, rng: np.random.Generator, shared: Optional[dict] = None) -> dict:
    """{input name: array} for every input of `sess`; arrays in `shared` of the right name, shape and
    dtype are reused (and new ones added to it), so that a model and its baseline see the same data."""
    shared = {} if shared is None else shared
    feeds = {}
    for i in sess.get_inputs():
        shape = input_shape(i.shape, cfg.batch, cfg.seq, i.name)
        old = shared.get(i.name)
        if old is not None and old.shape == shape and old.dtype == _NUMPY_TYPES.get(i.type):
            feeds[i.name] = old
        else:
            feeds[i.name] = shared[i.name] = random_input(i.name, i.type, shape, cfg.vocab, rng)
    return feeds


# --- running --------------------------------------------------------------------------------
def runner(sess, feeds: dict, provider: str) -> Callable[[], None]:
    """One call = one inference. On a device provider inputs and outputs live on the device."""
    device = DEVICE_PROVIDERS.get(provider)
    if device is None:
        return lambda: sess.run(None, feeds)
    from acmtool.runtime.session import import_onnxruntime
    ort = import_onnxruntime()
    binding = sess.io_binding()
    on_device = {n: ort.OrtValue.ortvalue_from_numpy(a, device, 0) for n, a in feeds.items()}
    for name, value in on_device.items():
        binding.bind_ortvalue_input(name, value)
    outputs = [o.name for o in sess.get_outputs()]
    for name in outputs:
        binding.bind_output(name, device, 0)
    sess.run_with_iobinding(binding)  # allocates the outputs on the device once; later runs reuse them
    for name, value in zip(outputs, binding.get_outputs()):
        binding.bind_ortvalue_output(name, value)

    def run():
        sess.run_with_iobinding(binding)
    run.keep_alive = on_device  # the bound device buffers must outlive the binding
    return run


def time_interleaved(runs: dict, warmup: int, iters: int, cooldown: Optional[float] = None,
                     primers: Optional[dict] = None) -> dict:
    """{name: seconds per run [iters]}: every round runs each once, the order rotating per round.

    With more than one run, each timed run comes after a pause of `cooldown` seconds (COOLDOWN_S
    when None) and one untimed run of its own: a session's intra-op threads go on spinning after
    its run, so without the pause the next session's run shares the cores with them and its time
    says more about the order than about the model; and after the pause the cores and threads
    sleep, which the untimed run wakes (on this VM that took milliseconds: a run of a few tokens
    timed straight after a pause measured its wake-up). `primers` ({name: callable}) replaces a
    run's untimed run, for runs whose calls must not be spent on it."""
    names = list(runs)
    pause = (COOLDOWN_S if cooldown is None else cooldown) if len(names) > 1 else 0.0
    for _ in range(warmup):
        for name in names:
            runs[name]()
    times = {name: np.empty(iters) for name in names}
    for r in range(iters):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            if pause:
                time.sleep(pause)
                (primers or {}).get(name, runs[name])()
            start = time.perf_counter()
            runs[name]()
            times[name][r] = time.perf_counter() - start
    return times


def latency_stats(seconds: np.ndarray, samples: int) -> dict:
    ms = seconds * 1e3
    stats = {f"p{p}_ms": float(np.percentile(ms, p)) for p in PERCENTILES}
    stats.update(mean_ms=float(ms.mean()), min_ms=float(ms.min()),
                 samples_per_s=float(samples * len(seconds) / seconds.sum()))
    return stats


def _samples(feeds: dict) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


MIN_ROUNDS = 10


def rounds_within(runs: dict, cfg: BenchConfig) -> int:
    """cfg.iters, or fewer where one round (each run once) says they would take over cfg.max_seconds."""
    if cfg.max_seconds is None:
        return cfg.iters
    start = time.perf_counter()
    for run in runs.values():
        run()
    fit = int(cfg.max_seconds / max(time.perf_counter() - start, 1e-9))
    return max(min(cfg.iters, MIN_ROUNDS), min(cfg.iters, fit))


def bench(model, cfg: Optional[BenchConfig] = None, baseline=None) -> dict:
    """Latency percentiles and throughput of `model` (and of `baseline`, measured side by side,
    with the speed-up); the JSON that `acmtool bench --json` writes."""
    from acmtool.runtime.session import import_onnxruntime, session
    cfg = cfg or BenchConfig()
    ort = import_onnxruntime()
    paths = {"model": check_model_file(model)}
    if baseline is not None:
        paths["baseline"] = check_model_file(baseline)
    sessions = {role: session(p, providers=[cfg.provider], threads=cfg.threads) for role, p in paths.items()}
    rng = np.random.default_rng(cfg.seed)
    shared: dict = {}
    feeds = {role: random_feeds(s, cfg, rng, shared) for role, s in sessions.items()}
    runs = {}
    for role, s in sessions.items():
        try:
            runs[role] = runner(s, feeds[role], cfg.provider)
            runs[role]()
        except Exception as e:
            raise AcmInputError(f"{paths[role]}: ONNX Runtime could not run it on random inputs of shapes "
                                f"{ {n: list(a.shape) for n, a in feeds[role].items()} }: "
                                f"{str(e).strip().splitlines()[0][:300]}") from None
    for b in cfg.budgets or []:  # the same session at each budget: rounds interleaved with the rest
        if "budget" not in {i.name for i in sessions["model"].get_overridable_initializers()}:
            raise AcmInputError(f"{paths['model']} has no budget input (export a converted ACM model with this "
                                f"version of acmtool); --budgets needs one")
        runs[f"budget {b:g}"] = runner(sessions["model"], feeds["model"] | {"budget": np.array(b, np.float32)},
                                       cfg.provider)
    for _ in range(cfg.warmup):
        for run in runs.values():
            run()
    iters = rounds_within(runs, cfg)  # the time box, judged on a warm round
    times = time_interleaved(runs, 0, iters)
    report = {"onnxruntime": ort.__version__, "config": asdict(cfg) | {"iters": iters},
              "provider": sessions["model"].get_providers()[0], "io_binding": cfg.provider in DEVICE_PROVIDERS,
              "interleaved": len(sessions) > 1, "baseline": None, "speedup": None}
    for role, s in sessions.items():
        report[role] = {"path": str(paths[role]),
                        "inputs": {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in feeds[role].items()},
                        **latency_stats(times[role], _samples(feeds[role]))}
    if baseline is not None:
        report["speedup"] = float(np.median(times["baseline"] / times["model"]))
    if cfg.budgets:
        report["budgets"] = [{"budget": b, **latency_stats(times[f"budget {b:g}"], _samples(feeds["model"])),
                              "speedup": float(np.median(times["baseline"] / times[f"budget {b:g}"]))
                              if baseline is not None else None} for b in cfg.budgets]
    if cfg.profile_runs:  # after the timing: a profiled run is slower, and must not be timed
        from acmtool.runtime.profile import profile
        for role in sessions:
            report[role]["profile"] = profile(paths[role], feeds[role], cfg.profile_runs, cfg.threads, cfg.provider)
    return report


def render(report: dict) -> str:
    """The terminal table of a bench report."""
    from acmtool.cli.format import table
    roles = ["model"] + (["baseline"] if report.get("baseline") else [])
    rows = [[report[r]["path"], *(f"{report[r][f'p{p}_ms']:.3f}" for p in PERCENTILES),
             f"{report[r]['samples_per_s']:.1f}"] for r in roles]
    shapes = ", ".join(f"{n} {'x'.join(map(str, i['shape']))}" for n, i in report["model"]["inputs"].items())
    cfg = report["config"]
    lines = [f"onnxruntime {report['onnxruntime']} on {report['provider']}"
             f"{' (IOBinding)' if report['io_binding'] else ''}, threads {cfg['threads'] or 'default'}; "
             f"inputs {shapes}; {cfg['warmup']} warm-up runs, {cfg['iters']} timed"
             f"{' rounds, interleaved' if report['interleaved'] else ' runs'}",
             table(["model", *(f"p{p} ms" for p in PERCENTILES), "samples/s"], rows)]
    if report.get("speedup") is not None:
        lines.append(f"speed-up vs baseline: {report['speedup']:.2f}x (median over rounds of baseline time / "
                     f"model time)")
    if report.get("budgets"):
        rows = [[f"{r['budget']:g}", *(f"{r[f'p{p}_ms']:.3f}" for p in PERCENTILES), f"{r['samples_per_s']:.1f}",
                 f"{r['speedup']:.2f}x" if r["speedup"] is not None else "-"] for r in report["budgets"]]
        lines += ["\nthe model at each budget (its budget input; rounds interleaved with the above):",
                  table(["budget", *(f"p{p} ms" for p in PERCENTILES), "samples/s", "vs baseline"], rows)]
    for role in roles:
        if report[role].get("profile"):
            from acmtool.runtime.profile import render as render_profile
            lines.append(f"\n{role} {report[role]['path']}: {render_profile(report[role]['profile'])}")
    return "\n".join(lines)
