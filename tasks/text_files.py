"""The local text files tasks read (GLUE TSV, GSM8K jsonl, lm corpora, image split lists), as users save them.

UTF-8 with or without a byte-order mark (Windows editors and spreadsheets write one), LF or CRLF
line endings: each reads as the original file. A file that is not UTF-8 is one UserError naming
the file, the line and the byte offset of the first bad bytes; the decoder's own offset counts
from the chunk it was decoding, so it is found again here by reading the file as bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from suite.errors import UserError

ENCODING = "utf-8-sig"  # UTF-8; a leading byte-order mark is dropped


@contextmanager
def open_text(path: str, newline: str | None = None) -> Iterator[TextIO]:
    """``open(path)`` for reading a UTF-8 text file: a byte-order mark is dropped, CRLF reads as LF unless
    ``newline=""`` (the csv module's way: it strips line endings itself), and bytes that are not UTF-8,
    met anywhere while the file is read in the ``with`` block, end in ``not_utf8``'s message."""
    try:
        with open(path, encoding=ENCODING, newline=newline) as fh:
            yield fh
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def not_utf8(path: str) -> UserError:
    """The message for a file that is not UTF-8: its first undecodable line and byte offset."""
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):  # a line break is one byte that no multi-byte character holds
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return UserError(f"{path}, line {number}: not UTF-8 text ({exc.reason} at byte offset "
                                 f"{offset + exc.start}); save the file as UTF-8")
            offset += len(raw)
    return UserError(f"{path} is not UTF-8 text; save the file as UTF-8")
