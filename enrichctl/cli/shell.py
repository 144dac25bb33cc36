"""What every command shares: the global options' state, the settings, running the command's
one coroutine, a session on the store, printing a document as JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from enrichctl.domain import printable
from enrichctl.logs import log_event
from enrichctl.settings import Settings, settings_load

if TYPE_CHECKING:
    from enrichctl import service

T = TypeVar("T")
JSON_HELP = "Print the document as JSON (stable keys) instead of a table."


class State:
    config: Path | None = None
    database_url: str | None = None
    log_json: bool = False  # --log-format json: errors and notices are JSON lines too
    env_warned: bool = False  # unknown ENRICHCTL_* variables are named once per process


STATE = State()


def service_module() -> ModuleType:
    """The use cases, imported once the arguments are known to be good (see the module doc)."""
    from enrichctl import service

    return service


def settings_read(**overrides: Any) -> Settings:
    if STATE.database_url is not None:
        overrides.setdefault("database_url", STATE.database_url)
    _env_warn()
    return settings_load(STATE.config, **overrides)


def _env_warn() -> None:
    """Name each misspelt ``ENRICHCTL_*`` variable once, on stderr (stdout may be --json)."""
    if STATE.env_warned:
        return
    STATE.env_warned = True
    from enrichctl.settings import env_unknown

    for name, line in env_unknown():
        if STATE.log_json:
            log_event(logging.getLogger("enrichctl.settings"), logging.WARNING,
                      "unknown_environment_variable", variable=name, message=line)
        else:
            sys.stderr.write(f"enrichctl: warning: {printable(line)}\n")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run the one coroutine of this command; SIGTERM cancels it like Ctrl-C does."""

    result: list[T] = []

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        result.append(await coro)

    # The main task returns nothing: Python 3.11's asyncio.run formats the task's repr, result
    # included, when it restores the SIGINT handler, and a run's report is its whole plan
    # (0.1 s for 300 symbols).
    asyncio.run(main())
    return result[0]


async def with_session(settings: Settings, use: Callable[[service.Session], Awaitable[T]]) -> T:
    async with service_module().session_open(settings) as session:
        return await use(session)


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")

