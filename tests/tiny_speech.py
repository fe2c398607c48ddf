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


CHARS = ["<pad>", "<s>", "</s>", "<unk>", "|", *"EHLOWRDPSNFTUAIC'"]


def tiny_wav2vec2(folder, seed=0, layers=2, hidden=32, save=True, norm="layer"):
    """(model, spec): a Wav2Vec2ForCTC over capital letters (the layout of English wav2vec2
    checkpoints: <pad> is the CTC blank, "|" the word delimiter), its feature encoder 20x shorter
    than the waveform, and its folder with vocab.json, tokenizer_config.json and
    preprocessor_config.json (and the weights, with save). norm "group": the feature encoder of
    wav2vec2-base, whose extractor gives no attention mask."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(CHARS)}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"word_delimiter_token": "|", "unk_token": "<unk>",
                                                              "do_lower_case": False}))
    Wav2Vec2FeatureExtractor(return_attention_mask=norm == "layer").save_pretrained(str(folder))
    config = Wav2Vec2Config(vocab_size=len(CHARS), hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=2, intermediate_size=2 * hidden, conv_dim=(16, 16), conv_stride=(5, 4),
                            conv_kernel=(10, 8), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                            feat_extract_norm=norm, do_stable_layer_norm=norm == "layer", pad_token_id=0,
                            ctc_loss_reduction="mean")
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(config).eval()
    if save:
        model.save_pretrained(str(folder))
    return model, {"kind": "hf", "path": str(folder)}
