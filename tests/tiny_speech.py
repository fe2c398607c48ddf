"""A tiny Whisper with a word-level tokenizer, and seeded synthetic audio with transcripts: what the
speech tests build on (no download, a few ms a step)."""
import json

import numpy as np

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
WORDS = ["hello", "world", "press", "one", "for", "sales", "two", "support", "."]


def tone(freq, rate, seconds, amp=0.5, noise=0.0, seed=0):
    t = np.arange(int(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    return (x + noise * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def write(path, samples, rate, subtype="PCM_16"):
    import soundfile as sf
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, subtype=subtype)
    return path


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    return tok


def tiny_whisper(folder, seed=0, layers=1, d_model=16, ffn=16, max_target_positions=12, save=False, init_std=0.02):
    """(model, spec): a Whisper with 8 mel bins that takes 30 s and `layers` encoder and decoder
    layers, and its folder with tokenizer.json (and the weights, with save). init_std 0.5: weights
    large enough that greedy decoding depends on the audio (at 0.02 every clip decodes alike)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    config = WhisperConfig(vocab_size=tok.get_vocab_size(), num_mel_bins=8, d_model=d_model, encoder_layers=layers,
                           decoder_layers=layers, encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_source_positions=1500,
                           max_target_positions=max_target_positions,
                           decoder_start_token_id=ids["<|startoftranscript|>"], pad_token_id=ids["<|endoftext|>"],
                           eos_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"], init_std=init_std)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    if save:
        model.save_pretrained(str(folder))
    return model, {"kind": "hf", "path": str(folder)}


def transcript_folder(root, suffix=".tsv", rows=None):
    """Four clips: 8 kHz mono and 44.1 kHz stereo, in the folder and a subfolder, with a table."""
    clips = rows or [("a.wav", 8000, 1, "hello world ."), ("sub/b.flac", 44100, 2, "press one for sales"),
                     ("c.wav", 44100, 1, "press two  for support ."), ("sub/d.wav", 8000, 2, "hello")]
    for i, (name, rate, channels, _) in enumerate(clips):
        x = tone(200.0 * (i + 1), rate, 0.3 + 0.1 * i, noise=0.01, seed=i)
        write(root / name, np.stack([x] * channels, axis=1) if channels > 1 else x, rate)
    table = root / f"transcripts{suffix}"
    if suffix == ".jsonl":
        table.write_text("".join(json.dumps({"path": n, "text": t}) + "\n" for n, _, _, t in clips))
    else:
        sep = "\t" if suffix == ".tsv" else ","
        table.write_text(f"path{sep}text\n" + "".join(f"{n}{sep}{t}\n" for n, _, _, t in clips))
    return table
