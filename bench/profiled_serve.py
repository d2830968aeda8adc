"""``python -m app serve`` with the page under pyinstrument (bench/profiled_page.py): the same model loading,
warm-up and Streamlit options, another script. For ``bench/app_bench.py --profile``."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.cli import serve  # noqa: E402 - after the repository is on sys.path
from app.engine.config import Settings  # noqa: E402

serve.STREAMLIT_SCRIPT = Path(__file__).resolve().parent / "profiled_page.py"
sys.exit(serve.serve(Settings.from_env()))
