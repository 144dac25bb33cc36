"""The ``/metrics`` exposition written to a file for node_exporter's textfile collector, so a
machine with only the timer (no ``serve``) is monitored with the same metrics and alert rules.

``enrichctl run`` calls ``textfile_write`` when ``[metrics] textfile_path`` is set. The file is
replaced atomically (a temporary file in the same directory, fsync, rename): the collector
never reads half a file, and the temporary name does not end in ``.prom``, so it is never read.
"""

from __future__ import annotations

import os
from pathlib import Path

from enrichctl import service
from enrichctl.errors import ConfigError
from enrichctl.settings import Settings
from enrichctl.web import prom


async def textfile_write(settings: Settings) -> Path | None:
    """Write the exposition to the configured path; None when none is configured.
    ``ConfigError`` when the file cannot be written (the store is left as it was)."""
    path = settings.metrics.textfile_path
    if path is None:
        return None
    async with service.session_open(settings) as session:
        body = await prom.exposition(session)
    atomic_write(path, body)
    return path


def atomic_write(path: Path, body: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.chmod(0o644)  # node_exporter usually runs as another user
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the metrics textfile {path}: {exc.strerror or exc}") from None
