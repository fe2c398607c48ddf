"""Calibration batches are cut to the samples that hold enough tokens (Whisper: 1500 encoder frames a
clip); batches that hold fewer (images, sentences) are left whole; masked padding is not counted."""
import torch
import torch.nn as nn

from acmtool.train.calibration_rows import (batch_size, calibration_batches, cap_tokens, first_rows, first_samples,
                                            tokens_per_sample)


class Tokens(nn.Module):
    """input_ids [B, T] (+ attention_mask) -> an MLP over every position: the shape of a text encoder."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)

    def forward(self, input_ids, attention_mask=None):
        return self.fc2(torch.relu(self.fc1(self.embed(input_ids))))


def _batches(sizes, length):
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, 50, (n, length), generator=g),
             "attention_mask": torch.ones(n, length, dtype=torch.long)} for n in sizes]


def test_rows_are_cut_along_every_tensor_of_a_batch():
    batch = {"x": torch.arange(12).reshape(6, 2), "pair": (torch.zeros(6, 3), "name"), "scalar": torch.tensor(1.0)}
    cut = first_rows(batch, 4)
    assert cut["x"].shape == (4, 2) and cut["pair"][0].shape == (4, 3) and cut["pair"][1] == "name"
    assert cut["scalar"].dim() == 0
    assert batch_size(batch) == 6 and batch_size(("a", torch.zeros(3, 1))) == 3 and batch_size("text") is None


def test_first_samples_keeps_whole_batches_then_cuts_the_last():
    batches = _batches([4, 5, 6], 3)
    got = first_samples(batches, 7)
    assert len(got) == 2 and got[0] is batches[0] and batch_size(got[1]) == 3
    assert torch.equal(got[1]["input_ids"], batches[1]["input_ids"][:3])
    assert [batch_size(b) for b in first_samples(batches, 100)] == [4, 5, 6]
    assert [batch_size(b) for b in first_samples(batches, 0)] == [1]  # never nothing
    assert first_samples(["a", "b"], 1) == ["a", "b"]  # nothing to count by: every batch


def test_padding_is_not_counted():
    model = Tokens()
    batch = _batches([2], 6)[0]
    batch["attention_mask"] = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    assert tokens_per_sample(model, [model.fc1], batch, "cpu") == 4.0  # (3 + 5) / 2
    del batch["attention_mask"]
    assert tokens_per_sample(model, [model.fc1, model.fc2], batch, "cpu") == 6.0


def test_long_inputs_are_cut_and_short_ones_left_whole():
    model = Tokens()
    long = _batches([8, 8, 8], 100)  # 800 tokens a batch
    got = calibration_batches(model, [model.fc1], long, "cpu", limit=250)
    assert [batch_size(b) for b in got] == [3]  # ceil(250 / 100) samples
    got = calibration_batches(model, [model.fc1], long, "cpu", limit=1000)
    assert [batch_size(b) for b in got] == [8, 2]
    short = _batches([8, 8, 8], 5)  # 120 tokens in all: under the limit
    got = calibration_batches(model, [model.fc1], short, "cpu", limit=250)
    assert all(a is b for a, b in zip(got, short)) and len(got) == 3
    assert cap_tokens(short, 0.0, 10) == short  # no tokens measured: keep them all
    assert calibration_batches(model, [], short, "cpu") == short
