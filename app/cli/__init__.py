"""The command line, ``python -m app COMMAND``: one module per command (detect, batch, eval, bench, weights,
serve), the parser and dispatch in ``main``, what they share in ``common``.

May import ``app.page`` (``serve`` runs it), ``app.engine`` and ``app.ops``; nothing imports this package.
"""
