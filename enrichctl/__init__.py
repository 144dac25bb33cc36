"""enrichctl: keeps a market-data database fresh. ``enrichctl.open()`` reads it into pandas
(see ``enrichctl.research``); the CLI is ``enrichctl.cli``.

The research API is imported on first use, so the CLI's start-up never pays for pandas and
pyarrow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from enrichctl.research import Reader, open  # noqa: A004

__all__ = ["Reader", "open"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from enrichctl import research

        return getattr(research, name)
    raise AttributeError(f"module 'enrichctl' has no attribute {name!r}")
