"""Text from files and folders (names, COCO categories, paths) made safe to print on a terminal.

A name is data, not terminal input: ``ESC]0;...BEL`` would set the window title, ``ESC[2J`` clear the
screen, a carriage return or newline forge a line, a bidi override reorder what follows. Every control
(C0, DEL, C1), format (bidi overrides, zero-width) and line/paragraph separator character is written as
a Python-style escape instead; a byte of a file name that is not UTF-8 (a lone surrogate after
``os.fsdecode``) becomes ``\\xNN``, so printing it can no longer fail on a UTF-8 stream either.
"""

from __future__ import annotations

import unicodedata

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for a byte that is not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``str(text)`` as one line with every character a terminal would act on written as an escape;
    letters, accents, symbols and emoji of every script are kept."""
    text = str(text)
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


def printable_lines(text: object) -> str:
    """``printable`` for each line of a multi-line report: the report's own newlines are kept."""
    return "\n".join(printable(line) for line in str(text).split("\n"))
