"""Print the pinned requirements of a pyproject.toml extra (or ``base``), one per line.

pyproject.toml is the one place pins live; environments that do not install the package itself
(the OpenCV 5 test environment, the checkov tools environment) take their pins from it here.
"""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
for group in sys.argv[1:] or ["base"]:
    reqs = project["dependencies"] if group == "base" else project["optional-dependencies"][group]
    print("\n".join(reqs))
