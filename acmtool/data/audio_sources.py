"""Where audio samples come from, as lists of files with a transcript or a class; nothing decoded here.

- a transcript table (CSV/TSV/JSONL/Parquet): a path column (relative to the table) and a text column;
- a folder holding one such table beside its audio;
- class subfolders of audio files (label = the folder's name, classes sorted);
- the named datasets `asterisk` (Debian asterisk-core-sounds-en-wav + asterisk-core-sounds-en) and
  `pocketsphinx` (Debian pocketsphinx-testdata)."""
from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import NamedTuple, Optional

from acmtool.data.audio_read import AUDIO_SUFFIXES, is_audio_file
from acmtool.data.table_readers import open_table
from acmtool.errors import AcmInputError

PATH_GUESSES = ("path", "audio", "audio_path", "audio_filepath", "file", "filename", "file_name", "wav")
TEXT_GUESSES = ("text", "transcript", "transcription", "sentence", "normalized_text", "label_text")
TRANSCRIPT_TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".parquet")

# Module attributes, so that tests can point them elsewhere.
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
_ASTERISK_PACKAGES = "asterisk-core-sounds-en-wav asterisk-core-sounds-en"


class Clips(NamedTuple):
    """Audio files with a transcript each (texts) or a class each (labels, class_names)."""

    paths: list
    texts: Optional[list] = None
    labels: Optional[list] = None
    class_names: Optional[list] = None
    note: str = ""  # what was skipped, for a named dataset


# --- transcript tables ---------------------------------------------------------------------------
def audio_table_columns(columns: list, first: Optional[dict]) -> Optional[str]:
    """The path column of a table whose first row names an audio file there, else None (not audio)."""
    for c in PATH_GUESSES:
        value = (first or {}).get(c)
        if c in columns and isinstance(value, str) and value.strip().lower().endswith(AUDIO_SUFFIXES):
            return c
    return None


def is_audio_table(path: Path) -> bool:
    """A table file whose first row's path column names an audio file (reads the header and one row)."""
    try:
        table = open_table(path)
    except AcmInputError:
        return False  # not this module's to report: the text-table loader says what is wrong
    return audio_table_columns(table.columns, table.first) is not None


def read_transcript_table(path: Path, text_column: Optional[str] = None) -> Clips:
    """Every row's audio file (checked to exist) and its transcript (stripped, non-empty)."""
    table = open_table(path)
    if table.first is None:
        raise AcmInputError(f"{path}: no rows under the header; give one row per audio file (path and text)")
    shown = ", ".join(map(str, table.columns[:12]))
    path_col = audio_table_columns(table.columns, table.first) or next(
        (c for c in PATH_GUESSES if c in table.columns), None)
    if path_col is None:
        raise AcmInputError(f"{path}: no column names the audio files (columns: {shown}); name it one of "
                            f"{', '.join(PATH_GUESSES[:4])}")
    if text_column is not None and text_column not in table.columns:
        raise AcmInputError(f"{path}: no column {text_column!r} (--text-column); its columns: {shown}")
    text_col = text_column or next((c for c in TEXT_GUESSES if c in table.columns), None)
    if text_col is None:
        raise AcmInputError(f"{path}: no transcript column (columns: {shown}); add a 'text' column with what each "
                            f"file says, or pass --text-column NAME (class labels: use class subfolders instead)")
    base, paths, texts = path.parent, [], []
    for i, row in enumerate(table.rows([path_col, text_col]), start=1):
        name, text = row.get(path_col), row.get(text_col)
        if not isinstance(name, str) or not name.strip():
            raise AcmInputError(f"{path}: row {i} has no audio file in column {path_col!r}")
        if not isinstance(text, str) or not text.strip():
            raise AcmInputError(f"{path}: row {i} ({name}) has no text in column {text_col!r}; every audio file "
                                f"needs its transcript")
        audio = base / name.strip()
        if not audio.is_file():
            raise AcmInputError(f"{path}: row {i} names {name.strip()!r}, but {audio} is not a file (paths are "
                                f"relative to the table's folder); fix the path or remove the row")
        paths.append(audio)
        texts.append(" ".join(text.split()))
    return Clips(paths, texts=texts)


def folder_table(folder: Path) -> Optional[Path]:
    """The one transcript table directly in `folder`, None when there is none."""
    tables = sorted(p for p in folder.iterdir() if p.suffix.lower() in TRANSCRIPT_TABLE_SUFFIXES and p.is_file()
                    and not p.name.startswith("."))
    if len(tables) > 1:
        raise AcmInputError(f"{folder} holds {len(tables)} tables ({', '.join(p.name for p in tables[:4])}); give "
                            f"the transcript table itself as the data")
    return tables[0] if tables else None


# --- folders -------------------------------------------------------------------------------------
def _visible_files(folder: Path):
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (Path(root) / f for f in sorted(files) if not f.startswith("."))


def audio_without_images(folder: Path) -> bool:
    """Whether the folder holds audio files and no images (one walk, ended by the first image)."""
    from acmtool.data.images import IMAGE_SUFFIXES
    audio = False
    for p in _visible_files(folder):
        suffix = p.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return False
        audio = audio or suffix in AUDIO_SUFFIXES
    return audio


def list_audio_folder(folder: Path, text_column: Optional[str] = None) -> Clips:
    """A folder with a transcript table, or class subfolders of audio files."""
    table = folder_table(folder)
    if table is not None:
        return read_transcript_table(table, text_column)
    loose = sorted(p for p in folder.iterdir() if is_audio_file(p))
    dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = [d for d in dirs if any(is_audio_file(p) for p in _visible_files(d))]
    if loose:
        raise AcmInputError(f"{folder} holds audio files ({loose[0].name}, ...) but no transcript table (.tsv, "
                            f".csv or .jsonl with path and text columns){' beside class folders' if classes else ''}; "
                            f"add the table, or move the files into one subfolder per class")
    if not classes:
        raise AcmInputError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in its class subfolders and no "
                            f"transcript table in it")
    paths, labels = [], []
    for label, d in enumerate(classes):
        files = [p for p in _visible_files(d) if is_audio_file(p)]
        paths += files
        labels += [label] * len(files)
    return Clips(paths, labels=labels, class_names=[d.name for d in classes])


# --- named datasets ------------------------------------------------------------------------------
_ANNOTATION = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)")  # [tone], <beep>, (3 seconds of silence)
_ENTRY = re.compile(r"^([^\s:;][^\s:]*):\s*(.*)$")  # name: text (";" starts a comment)


def parse_asterisk_transcripts(text: str) -> dict:
    """{prompt name: spoken text} from core-sounds-en.txt: lines `name: text` (name may hold a
    subfolder, digits/1), `;` comments. Bracketed notes are not speech and are dropped ("at [@]"
    says "at"); a prompt left with no words (tones, silence) maps to ""."""
    prompts = {}
    for line in text.splitlines():
        m = _ENTRY.match(line.strip())
        if m:
            spoken = " ".join(_ANNOTATION.sub(" ", m.group(2)).split())
            prompts[m.group(1)] = spoken if any(ch.isalnum() for ch in spoken) else ""
    return prompts


def asterisk_clips(max_seconds: Optional[float] = None, durations=None) -> Clips:
    """Each prompt with both a .wav under ASTERISK_SOUNDS/en*/ and spoken words in its transcript.
    durations(paths) gives each file's seconds when prompts longer than max_seconds are left out."""
    try:
        with gzip.open(ASTERISK_TRANSCRIPTS, "rt", encoding="utf-8") as f:
            entries = parse_asterisk_transcripts(f.read())
    except FileNotFoundError:
        raise AcmInputError(f"the asterisk data needs the Debian packages {_ASTERISK_PACKAGES} ({ASTERISK_TRANSCRIPTS} "
                            f"is missing; where dpkg is set to leave out /usr/share/doc, undo that): "
                            f"apt-get install {_ASTERISK_PACKAGES}") from None
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise AcmInputError(f"{ASTERISK_TRANSCRIPTS}: cannot be read ({e}); reinstall asterisk-core-sounds-en") \
            from None
    wavs = {}
    voices = sorted({d.resolve() for d in ASTERISK_SOUNDS.glob("en*") if d.is_dir()}) \
        if ASTERISK_SOUNDS.is_dir() else []
    for voice in voices:  # en and en_US are links to one voice; the first folder wins a name
        for p in sorted(voice.rglob("*.wav")):
            wavs.setdefault(p.relative_to(voice).with_suffix("").as_posix(), p)
    if not wavs:
        raise AcmInputError(f"the asterisk data needs the Debian packages {_ASTERISK_PACKAGES} (no .wav files under "
                            f"{ASTERISK_SOUNDS}/en*): apt-get install {_ASTERISK_PACKAGES}")
    names = sorted(n for n, text in entries.items() if text and n in wavs)
    skipped = {"without audio": sum(1 for n, text in entries.items() if text and n not in wavs),
               "without speech (tones, silence)": sum(1 for text in entries.values() if not text),
               "audio without a transcript": sum(1 for n in wavs if n not in entries)}
    paths = [wavs[n] for n in names]
    if max_seconds is not None and durations is not None:
        seconds = durations(paths)
        keep = [i for i, s in enumerate(seconds) if s <= max_seconds]
        skipped[f"longer than {max_seconds:g} s"] = len(paths) - len(keep)
        names, paths = [names[i] for i in keep], [paths[i] for i in keep]
    if not names:
        raise AcmInputError(f"no asterisk prompt has both audio and a transcript; reinstall {_ASTERISK_PACKAGES}")
    left_out = ", ".join(f"{n} {what}" for what, n in skipped.items() if n)
    note = f"asterisk: {len(names)} of {len(entries)} prompts" + (f" ({left_out} left out)" if left_out else "")
    return Clips(paths, texts=[entries[n] for n in names], note=note)


_SPHINX_LINE = re.compile(r"^(.*)\(([^()\s]+)\)\s*$")  # "<s> words </s> (utterance id)"


def pocketsphinx_clips() -> Clips:
    """The transcribed 16 kHz utterances of pocketsphinx-testdata (librivox and cards)."""
    sets = [(POCKETSPHINX_DATA / "librivox", "transcription"), (POCKETSPHINX_DATA / "cards", "cards.transcription")]
    paths, texts = [], []
    for folder, listing in sets:
        try:
            lines = (folder / listing).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise AcmInputError(f"the pocketsphinx data needs the Debian package pocketsphinx-testdata "
                                f"({folder / listing} is missing): apt-get install pocketsphinx-testdata") from None
        for line in lines:
            m = _SPHINX_LINE.match(line.strip())
            words = [w for w in (m.group(1).split() if m else []) if w not in ("<s>", "</s>")]
            if m and words and (folder / f"{m.group(2)}.wav").is_file():
                paths.append(folder / f"{m.group(2)}.wav")
                texts.append(" ".join(words))
    if not paths:
        raise AcmInputError(f"{POCKETSPHINX_DATA}: no transcribed utterances; reinstall pocketsphinx-testdata")
    return Clips(paths, texts=texts, note=f"pocketsphinx: {len(paths)} utterances")
