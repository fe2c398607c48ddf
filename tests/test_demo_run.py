"""acmtool.demo.run.convert_and_eval: the options that the benchmarks' variants pass reach the conversion."""
from acmtool.demo import run


def test_convert_and_eval_passes_variant_options(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(run, "convert", calls.append)
    monkeypatch.setattr(run, "evaluate_checkpoint", lambda path, data, split: {"checkpoint": str(path), "split": split})
    lines = []
    got = run.convert_and_eval(tmp_path, tmp_path / "w.safetensors", 0.5, static=True, log=lines.append, seed=3,
                               labels=True, targets="mlp+attn")
    o = calls[-1]
    assert (o.labels, o.targets, o.static, o.seed, o.budget) == (True, "mlp+attn", True, 3, 0.5)
    assert o.distill_epochs == run.PHASES["distill_epochs"]  # the demo's phase lengths stay
    assert "--static --labels --targets mlp+attn" in lines[0]
    assert got["split"] == "test" and got["checkpoint"].endswith("fashion-vit-static-0.5.acm.safetensors")
    # no options: the demo's own conversion, and its command line says nothing more
    run.convert_and_eval(tmp_path, tmp_path / "w.safetensors", 0.5, static=False, log=lines.append)
    assert (calls[-1].labels, calls[-1].targets, calls[-1].seed) == (False, "mlp", 0)
    assert lines[-2].endswith(f"--data fashion-mnist -o {tmp_path / 'fashion-vit-acm-0.5.acm.safetensors'}")
