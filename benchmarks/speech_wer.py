"""Word error rate against compute for a speech model: the ACM and its static baseline at each
budget, beside the original, from `acmtool eval ACM --baseline STATIC --json FILE` results (one file
per budget; nothing is rerun here). The files may come from one checkpoint evaluated with the knob
(`acmtool eval ACM --budget b --baseline STATIC_b`): each row is then the knob's budget, and says the
budget the ACM was trained at.

    python -m benchmarks.speech_wer PAIRED_0.25.json PAIRED_0.5.json PAIRED_0.75.json
        --name whisper-tiny-en-asterisk [--readme]

Every file must score the same utterances (the same original WER and count), and hold a static
baseline: each row is then the ACM's and static's WER, each one's paired difference from the
original, ACM - static with its paired standard error, the utterances on which the ACM makes fewer
and more word errors than static (with the sign test, which one runaway transcript cannot sway),
and both models' whole-model FLOPs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from acmtool.cli.format import table


def _load(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: not a readable JSON file ({e})")
    if d.get("task") != "transcription":
        raise SystemExit(f"{path}: not a speech evaluation (task {d.get('task')!r}); write one with "
                         f"`acmtool eval ACM --data AUDIO --baseline STATIC --json FILE`")
    base = d.get("baseline")
    if not base or not base.get("static") or "vs_baseline" not in d:
        raise SystemExit(f"{path}: has no static baseline; evaluate with --baseline STATIC.acm.safetensors")
    return d


def row_of(d: dict, source: str) -> dict:
    base, ours, theirs = d["baseline"], d["vs_original"]["wer"], d["baseline"]["vs_original"]["wer"]
    diff = d["vs_baseline"]["wer"]
    # one checkpoint evaluated with the knob (`acmtool eval --budget b`) at several budgets: its row is the knob's
    knob = d.get("budget_knob")
    return {"budget": knob if knob is not None else d["budget_target"], "trained_at": d["budget_target"],
            "static_budget": base["budget_target"], "utterances": d["eval_samples"], "original_wer": d["teacher_wer"],
            "acm_wer": d["student_wer"], "acm_vs_original": ours["diff"], "acm_vs_original_se": ours["se"],
            "static_wer": base["student_wer"], "static_vs_original": theirs["diff"],
            "static_vs_original_se": theirs["se"], "acm_vs_static": diff["diff"], "acm_vs_static_se": diff["se"],
            "acm_fewer_errors": diff.get("fewer"), "acm_more_errors": diff.get("more"), "sign_p": diff.get("sign_p"),
            "acm_budget": d["achieved_budget"], "acm_part_budgets": d.get("part_budgets"),
            "acm_flops": d["flops"]["ratio"], "static_flops": base["flops"]["ratio"], "source": source}


def rows_of(paths: list[Path]) -> list[dict]:
    rows = [row_of(_load(p), p.name) for p in paths]
    first = rows[0] if rows else None
    for r in rows[1:]:
        if (r["utterances"], round(r["original_wer"], 9)) != (first["utterances"], round(first["original_wer"], 9)):
            raise SystemExit(f"{r['source']} scores other utterances than {first['source']} ({r['utterances']} at "
                             f"original WER {r['original_wer']:.4f} against {first['utterances']} at "
                             f"{first['original_wer']:.4f}): evaluate every budget on the same data and split")
    budgets = [r["budget"] for r in rows]
    if len(set(budgets)) != len(budgets):
        raise SystemExit(f"two files at the same budget ({budgets}): one per budget")
    return sorted(rows, key=lambda r: r["budget"])


def _pm(diff: float, se: float) -> str:
    return f"{100 * diff:+.2f} +- {100 * se:.2f}"


def render(rows: list[dict]) -> str:
    body = [["original", "-", f"{100 * rows[0]['original_wer']:.2f}", "-", "-", "-", "1"]] if rows else []
    for r in rows:
        parts = r.get("acm_part_budgets") or {}
        split = " / ".join(f"{parts[k]:.2f}" for k in ("encoder", "decoder") if k in parts)
        sigmas = abs(r["acm_vs_static"]) / r["acm_vs_static_se"] if r["acm_vs_static_se"] > 0 else float("inf")
        trained = r.get("trained_at", r["budget"])
        label = f"ACM {r['budget']:g}" + (f" (trained at {trained:g})" if trained != r["budget"] else "")
        body.append([label, f"{r['acm_budget']:.3f}" + (f" ({split})" if split else ""),
                     f"{100 * r['acm_wer']:.2f}", _pm(r["acm_vs_original"], r["acm_vs_original_se"]),
                     f"{_pm(r['acm_vs_static'], r['acm_vs_static_se'])} ({sigmas:.1f} s.e.)", _utterances(r),
                     f"{r['acm_flops']:.3f}"])
        sb = r.get("static_budget", r["budget"])
        body.append([f"static {sb:g}", f"{sb:.3f}", f"{100 * r['static_wer']:.2f}",
                     _pm(r["static_vs_original"], r["static_vs_original_se"]), "-", "-", f"{r['static_flops']:.3f}"])
    n = rows[0]["utterances"] if rows else 0
    return table(["model", "budget (encoder / decoder)", "WER %", "- original", f"ACM - static (n = {n})",
                  "utterances ACM better / worse (sign test p)", "FLOPs ratio"], body)


def _utterances(r: dict) -> str:
    if r.get("acm_fewer_errors") is None:  # an eval file from before the sign test
        return "-"
    return f"{r['acm_fewer_errors']} / {r['acm_more_errors']} (p = {r['sign_p']:.2g})"


def plot(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, fmt, label in (("acm", "o-", "ACM"), ("static", "s--", "static")):
        xs = [r[f"{key}_flops"] for r in rows]
        ys = [100 * r[f"{key}_wer"] for r in rows]
        errs = [100 * r[f"{key}_vs_original_se"] for r in rows]  # the paired s.e. of its difference from the original
        ax.errorbar(xs, ys, yerr=errs, fmt=fmt, label=label, capsize=3)
    ax.plot([1.0], [100 * rows[0]["original_wer"]], "*", markersize=12, label="original")
    for r in rows:
        ax.annotate(f"{r['budget']:g}", (r["acm_flops"], 100 * r["acm_wer"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xlabel("whole-model FLOPs / original")
    ax.set_ylabel("word error rate (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> list[dict]:
    from benchmarks.__main__ import RESULTS, with_ext, write
    p = argparse.ArgumentParser(prog="python -m benchmarks.speech_wer", description=__doc__.split("\n\n")[0])
    p.add_argument("paired", type=Path, nargs="+", help="acmtool eval --baseline --json files, one per budget")
    p.add_argument("--name", default="whisper-tiny-en-asterisk", help="the result files' name and README block")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the table, CSV and plot go")
    p.add_argument("--readme", action="store_true", help="also rewrite the README block speech-wer-NAME")
    a = p.parse_args(argv)
    rows = rows_of(a.paired)
    text = render(rows)
    print(text)
    stem = a.results / f"speech-wer-{a.name}"
    write(rows, stem, {"inputs": [str(x) for x in a.paired]})
    png = plot(rows, with_ext(stem, ".png"), a.name)
    print(f"wrote {png}")
    if a.readme:
        from benchmarks import readme
        alt = f"WER against FLOPs ({a.name})"
        readme.update({f"speech-wer-{a.name}": readme.indented(text) + readme.image(png, alt=alt)})
    return rows


if __name__ == "__main__":
    main()
