"""Reading parallel data, and writing files atomically.

Formats:
- TSV: ``source<TAB>target[<TAB>anything ...]``; extra columns (such as the
  attribution column of Tatoeba/ManyThings files) are ignored by ``read_pairs``;
  ``read_columns`` returns them too, numbered from 1 (source 1, target 2, then 3, 4, ...).
  There is no header line.
- Aligned files: one source per line in one file, its target on the same line
  of another.
- question_answer: the fixed-width format of the book's ``date.txt`` and
  ``addition.txt``: ``question_answer``, split at the first underscore.

Normalisation, the same for every format: files are UTF-8 (a leading BOM is
dropped); CRLF and CR line endings are read as LF; each field is stripped of
surrounding whitespace; blank and whitespace-only lines are skipped. Anything
else that is wrong (no tab, an empty side, bytes that are not UTF-8, an empty
file) raises ``DataError`` naming the file and line.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import DataError


def split_lines(text: str) -> list[str]:
    """Lines of a text: a leading BOM dropped, CRLF and CR read as LF, no empty last line for a final newline."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: str | Path, allow_empty: bool = False) -> list[str]:
    """Decode a UTF-8 text file into lines (see ``split_lines``), or raise DataError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                        "convert the file to UTF-8") from None
    lines = split_lines(text)
    if not allow_empty and not any(line.strip() for line in lines):
        raise DataError(f"{path}: file is empty")
    return lines


def _pair(path, lineno, src, tgt):
    src, tgt = src.strip(), tgt.strip()
    if not src:
        raise DataError(f"{path}:{lineno}: empty source")
    if not tgt:
        raise DataError(f"{path}:{lineno}: empty target")
    return src, tgt


def _tsv_fields(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line of a TSV file with at least two fields."""
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{path}:{lineno}: expected source<TAB>target, found no tab: {line[:60]!r}")
        yield lineno, fields


def read_tsv(path: str | Path) -> list[tuple[str, str]]:
    """Pairs from a ``source<TAB>target`` file; extra columns are ignored."""
    return [_pair(path, lineno, fields[0], fields[1]) for lineno, fields in _tsv_fields(path)]


def read_columns(path: str | Path, columns: Sequence[int]) -> tuple[list[tuple[str, str]], list[tuple[str, ...]]]:
    """The pairs of a data file as ``read_pairs`` gives them, and for each pair its fields in the 1-based
    ``columns`` (3: the first after source and target), stripped.

    A line without one of those columns is a DataError naming the file, the line and the column; so is
    any column past 2 in a question_answer file, which has only two.
    """
    bad = [c for c in columns if not isinstance(c, int) or c < 1]
    if bad:
        raise ValueError(f"columns are numbered from 1, got {bad[0]!r}")
    lines = read_lines(path)
    first = next(line for line in lines if line.strip())
    if "\t" not in first:
        pairs = read_question_answer(path)
        if any(c > 2 for c in columns):
            raise DataError(f"{path}: question_answer lines have two columns, no column {max(columns)}")
        return pairs, [tuple(p[c - 1] for c in columns) for p in pairs]
    pairs, extra = [], []
    for lineno, fields in _tsv_fields(path):
        pairs.append(_pair(path, lineno, fields[0], fields[1]))
        missing = [c for c in columns if c > len(fields)]
        if missing:
            raise DataError(f"{path}:{lineno}: no column {missing[0]} (the line has {len(fields)})")
        extra.append(tuple(fields[c - 1].strip() for c in columns))
    return pairs, extra


def read_question_answer(path: str | Path) -> list[tuple[str, str]]:
    """Pairs from the book's fixed-width ``question_answer`` lines."""
    pairs = []
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        if "_" not in line:
            raise DataError(f"{path}:{lineno}: expected question_answer, found no '_': {line[:60]!r}")
        q, a = line.split("_", 1)
        pairs.append(_pair(path, lineno, q, a))
    return pairs


def read_aligned(src_path: str | Path, tgt_path: str | Path) -> list[tuple[str, str]]:
    """Pairs from two line-aligned files; lines blank on both sides are skipped."""
    src_lines, tgt_lines = read_lines(src_path), read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise DataError(f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; "
                        "aligned files need the same number of lines")
    pairs = []
    for lineno, (s, t) in enumerate(zip(src_lines, tgt_lines), 1):
        if not s.strip() and not t.strip():
            continue
        if not s.strip():
            raise DataError(f"{src_path}:{lineno}: empty source (its target is {t.strip()[:40]!r})")
        if not t.strip():
            raise DataError(f"{tgt_path}:{lineno}: empty target")
        pairs.append((s.strip(), t.strip()))
    return pairs


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """TSV if the first non-blank line has a tab, else the question_answer format."""
    lines = read_lines(path)
    first = next(line for line in lines if line.strip())
    return read_tsv(path) if "\t" in first else read_question_answer(path)


# -- atomic writes -------------------------------------------------------------------
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
