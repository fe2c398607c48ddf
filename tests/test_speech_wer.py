"""benchmarks.speech_wer: WER against compute from `acmtool eval --baseline --json` files, one per
budget; files that cannot be compared are refused with the reason."""
import json

import pytest

from benchmarks import speech_wer


def _paired(budget, acm_wer, static_wer, original_wer=0.088, n=55, static=True):
    """The fields of `acmtool eval ACM --baseline STATIC --json` that the benchmark reads."""
    def part(wer, b, is_static):
        return {"task": "transcription", "teacher_wer": original_wer, "student_wer": wer, "eval_samples": n,
                "vs_original": {"wer": {"diff": wer - original_wer, "se": 0.01, "n": n}},
                "achieved_budget": b, "flops": {"ratio": 0.6 + 0.4 * b}, "static": is_static, "budget_target": budget}
    d = part(acm_wer, budget - 0.004, False)
    d["part_budgets"] = {"encoder": budget - 0.01, "decoder": 0.9}
    d["baseline"] = part(static_wer, budget, static)
    d["vs_baseline"] = {"wer": {"diff": acm_wer - static_wer, "se": 0.02, "n": n, "fewer": 30, "more": 10,
                                "sign_p": 0.0022}}
    return d


def _write(tmp_path, name, d):
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def test_rows_table_and_plot(tmp_path):
    files = [_write(tmp_path, f"b{b}.json", _paired(b, a, s)) for b, a, s in
             ((0.75, 0.09, 0.12), (0.25, 0.26, 0.60), (0.5, 0.10, 0.20))]
    rows = speech_wer.main([str(f) for f in files] + ["--name", "tiny", "--results", str(tmp_path / "out")])
    assert [r["budget"] for r in rows] == [0.25, 0.5, 0.75]  # sorted by budget
    assert rows[0]["acm_vs_static"] == pytest.approx(-0.34) and rows[0]["acm_vs_static_se"] == 0.02
    text = speech_wer.render(rows)
    assert "-34.00 +- 2.00 (17.0 s.e.)" in text and "0.246 (0.24 / 0.90)" in text and "8.80" in text
    assert "30 / 10 (p = 0.0022)" in text
    for r in rows:  # a file from before the sign test: no count to show
        r["acm_fewer_errors"] = None
    assert "30 / 10" not in speech_wer.render(rows)
    out = tmp_path / "out"
    assert (out / "speech-wer-tiny.png").stat().st_size > 0
    saved = json.loads((out / "speech-wer-tiny.json").read_text())
    assert len(saved["rows"]) == 3 and (out / "speech-wer-tiny.csv").exists()


def test_one_checkpoint_at_several_knob_budgets(tmp_path):
    """Rows from `acmtool eval ACM --budget b`: the knob's budget, and the budget the ACM was trained at."""
    files = []
    for b in (0.25, 0.5, 0.75):
        d = _paired(0.5, 0.1, 0.2)
        d["budget_knob"] = None if b == 0.5 else b
        d["baseline"]["budget_target"] = b
        files.append(_write(tmp_path, f"k{b}.json", d))
    rows = speech_wer.rows_of(files)
    assert [(r["budget"], r["trained_at"], r["static_budget"]) for r in rows] == [(0.25, 0.5, 0.25), (0.5, 0.5, 0.5),
                                                                                  (0.75, 0.5, 0.75)]
    text = speech_wer.render(rows)
    assert "ACM 0.25 (trained at 0.5)" in text and "static 0.75" in text
    assert "ACM 0.5 " in text and "ACM 0.5 (trained" not in text


@pytest.mark.parametrize("bad, message", [
    (lambda d: d.pop("baseline"), "no static baseline"),
    (lambda d: d["baseline"].update(static=False), "no static baseline"),
    (lambda d: d.update(task="embedding"), "not a speech evaluation"),
])
def test_files_that_cannot_be_compared_are_refused(tmp_path, bad, message):
    d = _paired(0.5, 0.1, 0.2)
    bad(d)
    with pytest.raises(SystemExit, match=message):
        speech_wer.rows_of([_write(tmp_path, "x.json", d)])


def test_budgets_must_score_the_same_utterances_once_each(tmp_path):
    a = _write(tmp_path, "a.json", _paired(0.25, 0.2, 0.5))
    other = _write(tmp_path, "b.json", _paired(0.5, 0.1, 0.2, n=54))
    with pytest.raises(SystemExit, match="other utterances"):
        speech_wer.rows_of([a, other])
    twice = _write(tmp_path, "c.json", _paired(0.25, 0.2, 0.5))
    with pytest.raises(SystemExit, match="same budget"):
        speech_wer.rows_of([a, twice])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SystemExit, match="not a readable JSON"):
        speech_wer.rows_of([tmp_path / "broken.json"])
