"""The script Streamlit runs: ``streamlit run app/streamlit_app.py``, or ``python -m app serve``.

The page itself is ``app.page.render`` (an importable module). Streamlit puts this script's folder first on
``sys.path``; that folder is the ``app`` package, so its parent goes there instead (``app/engine/images.py``
must not shadow a library's ``import images``), and then the page runs.
"""

import importlib
import sys
from pathlib import Path


def _package_parent_first() -> None:
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    if str(here.parent) not in sys.path:
        sys.path.insert(0, str(here.parent))


_package_parent_first()
importlib.import_module("app.page.render").main()
