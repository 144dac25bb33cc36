"""The one seam every data provider sits behind (``registry.py`` knows which ones exist)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol, runtime_checkable

from enrichctl.domain import AssetClass, Bars, RequestRecord, Series

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
