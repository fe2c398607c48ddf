"""Decoding one audio file to a mono float32 waveform at the model's sampling rate.

soundfile (libsndfile, bundled in its wheels) reads WAV, FLAC, OGG/Vorbis, Opus and MP3. Without
it, PCM WAV still reads through the standard library's `wave`, so the named datasets (PCM WAV
from Debian packages) work either way. Every failure is one AcmInputError naming the file."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from acmtool.data.resample import resample
from acmtool.errors import AcmInputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
_CONVERT = "convert it to 16-bit PCM WAV or FLAC (e.g. sox IN -b 16 OUT.wav)"


def is_audio_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _soundfile():
    """The soundfile module, or None where it or its libsndfile is missing."""
    try:
        import soundfile
        return soundfile
    except (ImportError, OSError):  # OSError: the module is there but libsndfile is not
        return None


def decode(path: Path) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1], sampling rate) of the whole file, checked."""
    sf = _soundfile()
    samples, rate = _with_soundfile(sf, path) if sf is not None else _with_wave(path)
    if rate <= 0:
        raise AcmInputError(f"{path}: the file states a sampling rate of {rate} Hz; {_CONVERT}")
    if samples.shape[0] == 0:
        raise AcmInputError(f"{path}: the audio file holds no samples; remove it or record it again")
    if samples.shape[1] > 1:  # mean of the channels: no channel is favoured
        samples = samples.mean(axis=1, dtype=np.float32, keepdims=True)
    samples = samples[:, 0]
    if not np.isfinite(samples).all():  # float WAV can hold NaN or inf, which would poison the features
        raise AcmInputError(f"{path}: the audio holds NaN or infinite samples; remove or replace it")
    return samples, int(rate)


def read_audio(path: Path, rate: int) -> np.ndarray:
    """Mono float32 at `rate` Hz (resampled with a polyphase filter when the file's rate differs)."""
    samples, file_rate = decode(path)
    return resample(samples, file_rate, rate) if file_rate != rate else samples


def _with_soundfile(sf, path: Path) -> tuple[np.ndarray, int]:
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except sf.SoundFileError as e:  # libsndfile's own messages start with "Error opening 'PATH': "
        reason = str(e).split(": ", 1)[-1].strip().rstrip(".") or type(e).__name__
        if "unimplemented format" in reason.lower() or "unsupported" in reason.lower():
            raise AcmInputError(f"{path}: an audio sample format acmtool cannot decode ({reason}); {_CONVERT}") \
                from None
        raise AcmInputError(f"{path}: not a readable audio file ({reason}); remove or replace it") from None
    except (OSError, RuntimeError, ValueError) as e:
        raise AcmInputError(f"{path}: cannot be read as audio ({type(e).__name__}: {e}); remove or replace it") \
            from None
    return samples, rate


# sample width in bytes -> (numpy dtype of one sample, scale to [-1, 1]); 8-bit WAV is unsigned
_PCM = {1: (np.uint8, 128.0), 2: (np.dtype("<i2"), 32768.0), 4: (np.dtype("<i4"), 2147483648.0)}


def _with_wave(path: Path) -> tuple[np.ndarray, int]:
    """PCM WAV through the standard library (no soundfile)."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except wave.Error as e:
        what = str(e)
        if what.startswith("unknown format"):
            raise AcmInputError(f"{path}: an audio sample format acmtool cannot decode without soundfile ({what}); "
                                f"pip install soundfile, or {_CONVERT}") from None
        raise AcmInputError(f"{path}: not a readable WAV file ({what}); remove or replace it (without soundfile "
                            f"only PCM WAV reads: pip install soundfile for FLAC, OGG, MP3)") from None
    except (OSError, EOFError) as e:
        raise AcmInputError(f"{path}: not a readable WAV file ({type(e).__name__}: {e}); remove or replace it") \
            from None
    if width == 3:  # 24-bit: widen each sample to 32 bits, the low byte zero
        raw = np.frombuffer(raw[: len(raw) // 3 * 3], np.uint8).reshape(-1, 3)
        raw = np.concatenate([np.zeros((len(raw), 1), np.uint8), raw], axis=1).tobytes()
        width = 4
    if width not in _PCM or channels < 1:
        raise AcmInputError(f"{path}: {8 * width}-bit samples in {channels} channels, an audio sample format "
                            f"acmtool cannot decode without soundfile; pip install soundfile, or {_CONVERT}")
    dtype, scale = _PCM[width]
    values = np.frombuffer(raw[: len(raw) // (width * channels) * width * channels], dtype).astype(np.float32)
    if width == 1:
        values -= 128.0
    return (values / scale).reshape(-1, channels), rate
