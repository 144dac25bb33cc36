"""The one seam every data provider sits behind, and the factory that picks one."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from enrichctl.domain import AssetClass, Bars, RequestRecord, Series

if TYPE_CHECKING:
    from enrichctl.calendar import SessionCalendar
    from enrichctl.resilience.registry import ResilienceRegistry
    from enrichctl.settings import Settings


RequestSink = Callable[[RequestRecord], None]


@runtime_checkable
class Provider(Protocol):
    """Fetches bars of one series between two instants.

    ``fetch_bars`` returns the bars the source sent for ``start_ms <= ts <= end_ms`` (both ends
    inclusive, UTC epoch ms), as sent: possibly unsorted, twice, or outside the range. The
    pipeline's quality check (``check_batch``) drops those and records why, so nothing is lost
    silently. Every call it makes is reported to the ``RequestSink`` it was built with.
    ``synthetic`` is True for data that is not real market data.

    What a provider can do besides bars it declares: ``supports_grouped_daily`` promises the
    ``GroupedDailySource`` methods, ``supports_reference`` the ``ReferenceSource`` ones
    (``providers/reference.py``). ``tests/integration/test_provider_contract.py`` holds every
    provider to this contract.
    """

    name: str
    synthetic: bool
    supports_grouped_daily: bool
    supports_reference: bool

    def requests_needed(self, series: Series, start_ms: int, end_ms: int) -> int:
        """How many provider calls fetching this range costs (for ``run --dry-run``)."""
        ...

    async def fetch_bars(self, series: Series, start_ms: int, end_ms: int) -> Bars: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class GroupedDailySource(Protocol):
    """The day bars of a whole market for one date in one request (``supports_grouped_daily``)."""

    def grouped_days(self, start_ms: int, end_ms: int) -> list[str]:
        """The session dates (YYYY-MM-DD) in [start_ms, end_ms]: one grouped request each."""
        ...

    async def fetch_grouped_daily(
        self, day: str, *, asset_class: AssetClass = ..., symbols: Collection[str] | None = None
    ) -> dict[str, Bars]:
        """ticker -> its one day bar of ``day``, stamped like ``fetch_bars``' day bars."""
        ...


def provider_check(settings: Settings, *, for_api: bool = False) -> None:
    """ConfigError when the configured provider cannot work as configured (e.g. no key).
    ``for_api``: the advice is for an HTTP client, who cannot set the server's variables or
    flags."""
    from enrichctl.errors import ConfigError

    if settings.provider == "polygon" and (
        settings.polygon.api_key is None or not settings.polygon.api_key.get_secret_value()
    ):
        if for_api:
            raise ConfigError(
                "this server has no Polygon API key, so it cannot start runs: ask its operator to "
                "set POLYGON_API_KEY (or polygon.api_key) and restart 'enrichctl serve'; the "
                "read-only endpoints keep working"
            )
        raise ConfigError(
            "no Polygon API key: set POLYGON_API_KEY (or polygon.api_key in the config file), "
            "or run with --provider demo for offline synthetic data"
        )


def provider_create(
    settings: Settings, calendar: SessionCalendar, sink: RequestSink,
    clock: Callable[[], int] | None = None, registry: ResilienceRegistry | None = None,
) -> Provider:
    """Build the configured provider; raises ConfigError when it cannot be used as configured.
    ``clock`` (epoch ms) is the provider's idea of now: no bar that is incomplete then."""
    from enrichctl.domain import now_ms
    from enrichctl.errors import ConfigError

    provider_check(settings)
    name = settings.provider
    if name == "demo":
        from enrichctl.providers.demo import DemoProvider

        return DemoProvider(calendar, sink=sink, clock=clock or now_ms)
    if name == "polygon":
        try:
            from enrichctl.providers.polygon import PolygonProvider
        except ImportError:
            raise ConfigError(
                "the polygon provider is not available in this build yet; use --provider demo"
            ) from None
        return PolygonProvider(
            settings.polygon, calendar, sink=sink, resilience=settings.resilience, registry=registry,
            rate_interval=settings.polygon.rate_window_seconds,
        )
    raise ConfigError(f"unknown provider {name!r}: expected 'polygon' or 'demo'")
