"""``python -m app COMMAND``: parse the command line and run the command's module.

Exit status: 0 success, 1 a file or model failed (the others still ran), 2 usage error.
Each command's module is imported only when it runs: ``detect --model yolo`` never imports torch.
"""

from __future__ import annotations

import importlib
import os
import sys

from ..engine.config import ConfigError, Settings
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, NoModelReady, UsageError, say
from .parser import build_parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # a bare `python -m app`: what it can do, not only "COMMAND is required"
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        say(f"python -m app {args.command}: interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`... --json | head`): stop quietly, and keep Python's shutdown flush
        # of stdout from printing a second BrokenPipeError.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


# command -> (module, function): imported when the command runs.
COMMANDS = {
    "detect": ("detect", "cmd_detect"),
    "weights": ("weights", "cmd_weights"),
    "bench": ("bench", "cmd_bench"),
    "batch": ("batch", "cmd_batch"),
    "eval": ("evaluate", "cmd_eval"),
    "serve": ("serve", "cmd_serve"),
}


def _run(args) -> int:
    module, function = COMMANDS[args.command]
    try:
        settings = Settings.from_env()
        command = getattr(importlib.import_module(f"{__package__}.{module}"), function)
        return command(args, settings)
    except ConfigError as exc:
        say(f"configuration error: {exc}")
        return EXIT_USAGE
    except UsageError as exc:
        say(f"python -m app {args.command}: error: {exc}")
        return EXIT_USAGE
    except NoModelReady as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
