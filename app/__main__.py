"""``python -m app``: the command line (see ``app.cli.main``)."""

import sys

from .cli.main import main

sys.exit(main())
