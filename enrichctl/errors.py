"""The error tree, split by how the caller must react.

    EnrichError
    ├── UsageError            bad input on the command line or in a request   -> exit 2 / HTTP 400
    ├── NotFound              an unknown symbol or series was asked for        -> exit 1 / HTTP 404
    ├── ConfigError           needs a person: settings, missing key, bad path  -> exit 78
    │   └── ProviderAuthError the provider refused our credentials
    ├── TemporaryError        will pass by itself; try again later             -> exit 75
    │   ├── RunActive         another run holds the lease
    │   └── ProviderUnavailable the provider could not be reached at all
    ├── ProviderError         one provider call failed
    │   ├── RetryableProviderError   429, 5xx, timeout, connection, broken JSON
    │   └── PermanentProviderError   any other 4xx, a response we cannot use
    └── StoreError            the database failed underneath us                -> exit 1
        ├── StoreUnavailable  the connection was lost (refused, reset, DNS)    -> exit 75
        ├── StoreFault        needs a person: read-only, full disk, damaged    -> exit 78
        │   └── StoreLost     the SQLite file was removed or replaced mid-run  -> exit 1
        ├── StoreConflict     a constraint refused the write (a run just started)
        └── StoreDamaged      the SQLite file fails its integrity check        -> exit 1

Third-party errors (aiohttp, SQLAlchemy, pydantic) are mapped onto this tree at the module that
talks to them; ``cli.py`` and ``web/server.py`` turn the tree into exit codes and HTTP statuses.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNHEALTHY = 3
EXIT_TEMPFAIL = 75
EXIT_CONFIG = 78


class EnrichError(Exception):
    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class UsageError(EnrichError):
    exit_code = EXIT_USAGE


class NotFound(EnrichError):
    exit_code = EXIT_FAILED


class ConfigError(EnrichError):
    exit_code = EXIT_CONFIG


class ProviderAuthError(ConfigError):
    pass


class TemporaryError(EnrichError):
    exit_code = EXIT_TEMPFAIL


class RunActive(TemporaryError):
    pass


class ProviderUnavailable(TemporaryError):
    pass


class ProviderError(EnrichError):
    """One provider call failed. ``status`` is the HTTP status when there was one."""

    retryable = False

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RetryableProviderError(ProviderError):
    retryable = True


class PermanentProviderError(ProviderError):
    retryable = False


class UnknownTickerError(PermanentProviderError):
    """The provider's reference data does not know the symbol: nothing is stored for it."""


class StoreError(EnrichError):
    pass


class StoreUnavailable(StoreError):
    """The server could not be reached or dropped us: it may well be back later (75). Not a
    TemporaryError, so that the web face keeps its message (host names) to itself."""

    exit_code = EXIT_TEMPFAIL


class StoreFault(StoreError):
    """A permanent storage fault (read-only or immutable file, full disk, damaged file): retrying
    will not help, a person must act."""

    exit_code = EXIT_CONFIG


class StoreConflict(StoreError):
    """A unique constraint refused the write: someone else wrote the same thing just now."""


class StoreDamaged(StoreError):
    """The database file fails SQLite's own integrity check (pages overwritten, truncated)."""


class StoreLost(StoreFault):
    """The SQLite file the store opened is no longer at its path (deleted, or replaced by
    another file): what it writes now would be lost, so nothing may report success."""

    exit_code = EXIT_FAILED
