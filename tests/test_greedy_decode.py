"""Greedy decoding with a key/value cache on a tiny random Whisper, against a reference loop that
re-runs the whole decoder sequence for one row at a time without any cache."""
from types import SimpleNamespace

import pytest
import torch

from acmtool.train.greedy_decode import greedy_decode, suppression_of

START, END, NO_TIMESTAMPS = 50, 51, 52
PROMPT = [START, NO_TIMESTAMPS]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """A 32-wide model gains nothing from intra-op threads, and on a busy machine their spin-waits
    make these tests hundreds of times slower; the caller's setting comes back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def model():
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=60, num_mel_bins=8, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=16, max_target_positions=32, decoder_start_token_id=START,
        eos_token_id=END, pad_token_id=END, bos_token_id=END,
        # WhisperConfig's default begin_suppress_tokens [220, 50256] lie outside this vocabulary
        suppress_tokens=None, begin_suppress_tokens=None,
        # the default 0.02 gives a random model whose greedy output ignores the audio (every row
        # the same token over and over); 0.5 gives rows that differ and tokens that vary
        init_std=0.5)
    return WhisperForConditionalGeneration(config).eval()


@pytest.fixture
def features():
    torch.manual_seed(1)
    return torch.randn(3, 8, 32)  # [batch, num_mel_bins, 2 * max_source_positions]


def reference_decode(model, features, end_id, max_new_tokens, suppress=(), suppress_at_begin=(),
                     prompt=tuple(PROMPT)):
    """One row at a time, the full sequence through encoder and decoder at every step, no cache."""
    rows = []
    with torch.no_grad():
        for x in features:
            seq, new = list(prompt), []
            for step in range(max_new_tokens):
                logits = model(input_features=x[None], decoder_input_ids=torch.tensor([seq]),
                               use_cache=False).logits[0, -1]
                banned = list(suppress) + (list(suppress_at_begin) if step == 0 else [])
                logits[banned] = float("-inf")
                token = int(logits.argmax())
                if token == end_id:
                    break
                seq.append(token)
                new.append(token)
            rows.append(new)
    return rows


def test_matches_reference_without_cache(model, features):
    got = greedy_decode(model, features, PROMPT, END, 10)
    assert got == reference_decode(model, features, END, 10)
    assert len({tuple(r) for r in got}) == 3, "the three inputs should decode differently"
    assert all(len(r) <= 10 and END not in r for r in got)


def test_rows_stop_at_end_id(model, features):
    # Take a token that the rows emit at different steps (or never) as the end: each row must be
    # cut just before its first occurrence, and the rows that never emit it run to the limit.
    full = greedy_decode(model, features, PROMPT, END, 12, suppress=[END])
    first = {t: [r.index(t) if t in r else None for r in full] for r in full for t in r}
    end_id = max(first, key=lambda t: len(set(first[t])))
    assert len(set(first[end_id])) >= 2, f"no token ends the rows at different steps: {full}"
    got = greedy_decode(model, features, PROMPT, end_id, 12, suppress=[END])
    assert got == [r[:i] if i is not None else r for r, i in zip(full, first[end_id])]
    assert all(end_id not in r for r in got)
    assert got == reference_decode(model, features, end_id, 12, suppress=[END])


def test_forced_end_stops_the_loop(model, features):
    # A large bias on end_id's logit makes it the argmax everywhere: every row ends at once, and
    # the decoder runs once (the prompt), not max_new_tokens times.
    bias = torch.zeros(60)
    bias[END] = 1e4
    calls = []
    model.model.decoder.register_forward_hook(lambda *args: calls.append(1))
    model.proj_out.register_forward_hook(lambda module, inputs, output: output + bias)
    assert greedy_decode(model, features, PROMPT, END, 10) == [[], [], []]
    assert len(calls) == 1
    # End suppressed at the first step only: exactly one token each, then the end.
    calls.clear()
    got = greedy_decode(model, features, PROMPT, END, 10, suppress_at_begin=[END])
    assert [len(r) for r in got] == [1, 1, 1] and len(calls) == 2
    assert got == reference_decode(model, features, END, 10, suppress_at_begin=[END])


def test_suppress_and_suppress_at_begin(model, features):
    plain = greedy_decode(model, features, PROMPT, END, 10)
    # the most common generated tokens, suppressed at every step, never appear
    counts = torch.bincount(torch.tensor(sum(plain, [])), minlength=60)
    suppress = counts.topk(3).indices.tolist()
    got = greedy_decode(model, features, PROMPT, END, 10, suppress=suppress)
    assert got != plain and not set(sum(got, [])) & set(suppress)
    assert got == reference_decode(model, features, END, 10, suppress=suppress)
    # the first tokens, suppressed at the first step only, are not first but may come later
    begin = sorted({r[0] for r in plain})
    got = greedy_decode(model, features, PROMPT, END, 10, suppress_at_begin=begin)
    assert all(r and r[0] not in begin for r in got)
    assert got == reference_decode(model, features, END, 10, suppress_at_begin=begin)
    both = greedy_decode(model, features, PROMPT, END, 10, suppress=suppress, suppress_at_begin=begin)
    assert all(r[0] not in begin for r in both) and not set(sum(both, [])) & set(suppress)
    assert both == reference_decode(model, features, END, 10, suppress, begin)


def test_training_flags_restored(model, features):
    # a model in training mode with a frozen encoder held in eval mode: both come back as they were
    model.train()
    model.model.encoder.eval()
    flags = {name: m.training for name, m in model.named_modules()}
    got = greedy_decode(model, features, PROMPT, END, 8)
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert got == reference_decode(model.eval(), features, END, 8)  # dropout was off while decoding
    model.train()
    model.model.encoder.eval()
    with pytest.raises(RuntimeError):  # 7 mel bins where the encoder's conv wants 8
        greedy_decode(model, torch.randn(2, 7, 32), PROMPT, END, 8)
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert torch.is_grad_enabled()


def test_batch_of_one_and_no_new_tokens(model, features):
    batched = greedy_decode(model, features, PROMPT, END, 8)
    for i in range(3):
        assert greedy_decode(model, features[i:i + 1], PROMPT, END, 8) == [batched[i]]
    assert greedy_decode(model, features, PROMPT, END, 0) == [[], [], []]
    assert greedy_decode(model, features[:1], PROMPT, END, 0) == [[]]
    # a one-token prompt (the decoder start token alone) works the same way
    assert greedy_decode(model, features, [START], END, 8) == reference_decode(
        model, features, END, 8, prompt=[START])


def test_clear_errors(model, features):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        greedy_decode(model, features, PROMPT, END, 4, suppress=[60])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        greedy_decode(model, features, PROMPT, 99, 4)
    with pytest.raises(ValueError, match="32 positions"):
        greedy_decode(model, features, PROMPT, END, 32)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_decode(model, features, PROMPT, END, -1)
    with pytest.raises(ValueError, match="prompt"):
        greedy_decode(model, features, [], END, 4)
    with pytest.raises(ValueError, match="num_mel_bins"):
        greedy_decode(model, features[0], PROMPT, END, 4)


def test_suppression_of(model):
    assert suppression_of(model) == ([], [])  # the tiny model's configs name none
    model.generation_config.suppress_tokens = [1, 2, 3]
    model.generation_config.begin_suppress_tokens = [20, END]
    assert suppression_of(model) == ([1, 2, 3], [20, END])
    # generation_config first, model.config where it has nothing
    both = SimpleNamespace(generation_config=SimpleNamespace(suppress_tokens=[4]),
                           config=SimpleNamespace(suppress_tokens=[5], begin_suppress_tokens=[6]))
    assert suppression_of(both) == ([4], [6])
    assert suppression_of(SimpleNamespace(config=SimpleNamespace(suppress_tokens=[7]))) == ([7], [])
    assert suppression_of(SimpleNamespace()) == ([], [])


def test_suppression_of_drops_ids_outside_the_vocabulary(model):
    # WhisperConfig's default begin_suppress_tokens [220, 50256] on a 60-token vocabulary: neither
    # can be generated, so there is nothing to suppress, and greedy_decode must not be refused
    model.config.begin_suppress_tokens = [220, 50256]
    model.generation_config.suppress_tokens = [3, 59, 60, -1]
    suppress, begin = suppression_of(model)
    assert (suppress, begin) == ([3, 59], [])
    got = greedy_decode(model, torch.randn(1, 8, 32), PROMPT, END, 4, suppress, begin)
    assert len(got) == 1 and not set(got[0]) & {3, 59}
