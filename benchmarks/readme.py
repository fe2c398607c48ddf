"""The README's benchmark tables, rewritten from one `python -m benchmarks run`.

Each table lives between `<!-- benchmarks:NAME -->` and `<!-- /benchmarks:NAME -->` in README.md;
a run replaces the blocks it measured and leaves the others (a part it skipped) as they were.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from acmtool.cli.format import table
from acmtool.io.atomic import atomic_path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- benchmarks:(?P<name>[a-z0-9-]+) -->\n)(.*?)(<!-- /benchmarks:(?P=name) -->)", re.S)
SUMMARY_TOKENS = 1576  # 8 x 197: a batch of 8 ViT images
SUMMARY_BUDGETS = (0.25, 0.5, 1.0)


def indented(text: str) -> str:
    """A fixed-width table as a Markdown code block."""
    return "\n".join(("    " + line).rstrip() for line in text.splitlines()) + "\n"


def _pick(rows: list[dict], **match) -> Optional[dict]:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _cells(rows, key: str, **match) -> list[str]:
    cells = []
    for b in SUMMARY_BUDGETS:
        r = _pick(rows, budget=b, **match)
        cells.append(f"{r[key]:.2f}x" if r is not None and key in r else "-")
    return cells


def summary(ort_rows: list[dict], torch_rows: list[dict]) -> str:
    """The headline ratios: the ViT-B MLP on a batch of 8 images' tokens, at budgets 0.25 / 0.5 / 1.0."""
    cpu = [r for r in ort_rows if r.get("provider", "CPUExecutionProvider") == "CPUExecutionProvider"]
    tcpu = [r for r in torch_rows if r.get("device", "cpu") == "cpu"]
    head = ["what (ViT-B MLP, N = 4, 1576 tokens)"] + [f"budget {b}" for b in SUMMARY_BUDGETS]
    body = [["ORT DynamicLearners vs dense MLP"] + _cells(cpu, "speedup_vs_dense", tokens=SUMMARY_TOKENS),
            ["ORT DynamicLearners vs standard-ops export"] + _cells(cpu, "speedup_vs_standard", tokens=SUMMARY_TOKENS),
            ["ORT DynamicLearners vs its own K = N"] + _cells(cpu, "speedup_vs_full", tokens=SUMMARY_TOKENS),
            ["PyTorch grouped path vs dense MLP"] + _cells(tcpu, "grouped_speedup_vs_dense", tokens=SUMMARY_TOKENS)]
    return table(head, body)


def setup_line(setup: dict, threads: int, minutes: float) -> str:
    return (f"Measured by `python -m benchmarks run` on {setup.get('cores')} cores ({threads} intra-op threads), "
            f"torch {setup.get('torch')}, onnxruntime {setup.get('onnxruntime', '-')}; the speed parts took "
            f"{minutes:.0f} min.\n")


def image(plot: Path, readme: Path = README, alt: str = "accuracy against compute") -> str:
    """A Markdown image of the plot, by its path relative to the README (none outside the checkout)."""
    try:
        rel = plot.resolve().relative_to(readme.resolve().parent).as_posix()
    except ValueError:
        return ""
    return f"\n![{alt}]({rel})\n"


def update(new_blocks: dict, readme: Path = README) -> list[str]:
    """Replace the named blocks in the README (atomically); returns the names replaced (none
    without a README: a copy of the benchmarks alone has nothing to rewrite)."""
    if not readme.is_file():
        return []
    text = readme.read_text(encoding="utf-8")
    done = []

    def replace(m: re.Match) -> str:
        name = m["name"]
        if name not in new_blocks:
            return m.group(0)
        done.append(name)
        return m.group(1) + new_blocks[name].rstrip("\n") + "\n" + m.group(4)
    updated = BLOCK.sub(replace, text)
    if updated != text:
        mode = readme.stat().st_mode & 0o777
        with atomic_path(readme) as tmp:
            tmp.write_text(updated, encoding="utf-8")
            tmp.chmod(mode)  # the temporary file is private; the README keeps its permissions
    return done
