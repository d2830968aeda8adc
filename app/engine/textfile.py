"""Reading a small text file a user points the app at (a names file, a Darknet ``.cfg``) without trusting it.

A folder, a FIFO (whose read would block a model load forever), an unreadable file or one far larger than
any real file of its kind is refused with a message that names the file; at most ``limit + 1`` bytes are read.
"""

from __future__ import annotations

from pathlib import Path


def read_bounded(path: Path, limit: int, what: str, hint: str) -> bytes:
    """The bytes of ``path``, a ``what`` (e.g. "names file") of at most ``limit`` bytes; ``ValueError``
    naming the file otherwise (``hint`` follows the size refusal: what the file should be)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a {what}")
    if path.exists() and not path.is_file():
        raise ValueError(f"{path}: is not a regular file (a FIFO, socket or device), not a {what}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise ValueError(f"{path}: {what} is larger than {limit:,} bytes; {hint}")
    return data
