"""Writing stdout, and failing: a closed pipe ends quietly with 141, a full disk is one line
and exit 1, every error is one line on stderr (a JSON line with ``--log-format json``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from enrichctl.cli.shell import STATE
from enrichctl.domain import printable

T = TypeVar("T")

# The reader of stdout went away (`enrichctl export AAPL | head -1`): end quietly, with the status
# of a process killed by SIGPIPE (128 + 13), as `cat` would; a script sees the output was cut.
EXIT_PIPE_CLOSED = 141

class PipeClosed(Exception):
    """stdout's reader closed the pipe. Not an OSError: click would turn that into a silent 1."""


class StdoutFailed(Exception):
    """Writing stdout failed (a full disk, a quota, an I/O error)."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(exc.strerror or str(exc))
        self.reason = exc.strerror or str(exc)


class GuardedStdout:
    """sys.stdout, whose write errors say they came from stdout: an OSError from a database or
    a socket must not be mistaken for a closed pipe, nor one of stdout for an internal error."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _guarded(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except BrokenPipeError:
            raise PipeClosed() from None
        except OSError as exc:
            raise StdoutFailed(exc) from None

    def write(self, text: str) -> int:
        return self._guarded(lambda: self._stream.write(text))

    def writelines(self, lines: Any) -> None:
        self._guarded(lambda: self._stream.writelines(lines))

    def flush(self) -> None:
        self._guarded(self._stream.flush)


def pipe_closed() -> int:
    stdout_discard()
    return EXIT_PIPE_CLOSED


def stdout_discard() -> None:
    """Point stdout at /dev/null: what is still buffered for a closed pipe or a full disk must
    not fail again (with a message) when the interpreter flushes it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def fail(message: str, code: int) -> None:
    try:
        sys.stdout.flush()
    except (OSError, PipeClosed, StdoutFailed):
        stdout_discard()
    if STATE.log_json:
        line = json.dumps({"ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
                           "level": "error", "event": "error", "message": message, "exit_code": code})
        sys.stderr.write(line + "\n")
    else:
        sys.stderr.write(f"enrichctl: error: {printable(message)}\n")
    sys.exit(code)
