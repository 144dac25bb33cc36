"""What a test needs from the machine: without it, a skip on a laptop and a failure under CI.

``.ci/run`` installs every Debian package the tests use, so under ``CI=true`` a missing one is a
broken set-up, never a reason to pass quietly.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it under ``CI=true``."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def program(*names: str, install: str) -> str:
    """The path of the first of ``names`` on PATH; ``install`` says how to get it."""
    found = next((path for name in names if (path := shutil.which(name))), None)
    if found is None:
        unavailable(f"{names[0]} not found ({install})")
    return found
