"""The console script. ``enrichctl --version`` answers here, before the CLI and what it pulls
in (typer, pydantic, numpy: most of a second) is imported; everything else goes to
``cli.app.main``."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from importlib.metadata import version

        print(f"enrichctl {version('enrichctl')}")
        return
    from enrichctl.cli.app import main as cli_main

    cli_main()
