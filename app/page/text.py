"""Text from outside the app (file names, URL parameters, COCO category names and file_names, zip member names)
put into Streamlit's markdown as the characters it holds.

Streamlit renders ``st.markdown``, ``st.error``/``warning``/``info``/``success``, ``st.caption``, ``st.subheader``,
image captions and widget labels as markdown: a name like ``![x](http://host/x.png)`` would make every visitor's
browser fetch that address, and a backtick would end a code span and let the rest become a link. ``plain``
backslash-escapes every ASCII punctuation mark (CommonMark allows an escape before each), so no link, image,
code span, emphasis, autolink, math or Streamlit directive can start inside it, and shows control characters
as ``\\xNN`` (a newline cannot start a new block). GitHub's bare-URL links (``http://…``, ``www.…``, e-mail
addresses) are found in the text after the escapes are undone, and only where the address follows a space,
punctuation or the start: an invisible WORD JOINER (U+2060) goes before each, so none becomes a link.
"""

from __future__ import annotations

import re
import string

_ESCAPES = {ord(c): "\\" + c for c in string.punctuation} | {code: f"\\\\x{code:02x}" for code in (*range(32), 127)}


_BARE_LINK = re.compile(r"(?i)(?=https?:|www\.|@)")
WORD_JOINER = "\u2060"


def plain(text: object) -> str:
    """``text`` escaped for Streamlit's markdown: shown as written (bare addresses carry an invisible word
    joiner), never as markup or a link."""
    return _BARE_LINK.sub(WORD_JOINER, str(text)).translate(_ESCAPES)
