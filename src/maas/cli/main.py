"""The ``maas`` command's entry point.

``maas serve …`` loads only the server's side of the CLI (``maas.cli.serve``): every
other command is a client of the SDK, and their modules bring httpx and its command
line's libraries (5 MB and a tenth of a second of imports) into a server process that
never uses them. Every other invocation, ``maas --url … serve`` included, goes through
the whole command tree (``maas.cli.commands``), which holds the same serve command.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        from maas.cli.serve import serve_app

        serve_app(args=sys.argv[2:], prog_name="maas serve")
        return
    from maas.cli.commands import app

    app()
