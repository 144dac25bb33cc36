"""Every provider enrichctl can run, and what the rest of the program needs to know about it.

One ``ProviderEntry`` per provider: how to build it, which ``Settings`` section configures it,
what it needs before it can work (a key), the quota its limiter enforces, and what its systemd
unit must allow. Callers ask ``provider_entry(settings.provider)`` instead of comparing names,
so adding a provider is its module plus one entry in ``ENTRIES`` (and, because ``settings`` sits
below the providers, its section model and name in ``settings.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from enrichctl.errors import ConfigError
from enrichctl.providers.base import Provider, RequestSink
from enrichctl.settings import PolygonSettings

if TYPE_CHECKING:
    from pydantic import BaseModel

    from enrichctl.calendar import SessionCalendar
    from enrichctl.resilience.registry import ResilienceRegistry
    from enrichctl.settings import Settings

Clock = Callable[[], int]
ProviderBuild = Callable[
    ["Settings", "SessionCalendar", RequestSink, Clock, "ResilienceRegistry | None"], Provider
]


@dataclass(frozen=True)
class Quota:
    """The provider's plan limit: ``rate`` requests (0: unlimited) in any rolling ``window_s``.
    ``limiter_window_s`` is the window the limiter enforces (wider, for network jitter);
    ``rate_setting`` names the key that sets the rate (shown when the plan is unlimited)."""

    limiter: str
    rate: int
    window_s: float
    limiter_window_s: float
    rate_setting: str


@dataclass(frozen=True)
class UnitNeeds:
    """What the rendered systemd units must allow: IP traffic to anywhere (``internet``) and the
    ``LoadCredential=`` files (read from ``$CREDENTIALS_DIRECTORY`` by ``settings``)."""

    internet: bool = False
    credentials: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderEntry:
    name: str
    build: ProviderBuild
    # The Settings section that configures it (its key is ``section``), None without settings.
    section: str | None = None
    settings_model: type[BaseModel] | None = None
    # Raises ConfigError saying what to set when the provider cannot work as configured;
    # ``for_api``: the advice is for an HTTP client, who cannot set the server's variables.
    key_check: Callable[[Settings, bool], None] | None = None
    quota: Callable[[Settings], Quota] | None = None
    unit: UnitNeeds = UnitNeeds()


# -- demo ---------------------------------------------------------------------------------------


def _demo_build(settings: Settings, calendar: SessionCalendar, sink: RequestSink, clock: Clock,
                registry: ResilienceRegistry | None) -> Provider:
    from enrichctl.providers.demo import DemoProvider

    return DemoProvider(calendar, sink=sink, clock=clock)


# -- polygon ------------------------------------------------------------------------------------


def _polygon_build(settings: Settings, calendar: SessionCalendar, sink: RequestSink, clock: Clock,
                   registry: ResilienceRegistry | None) -> Provider:
    from enrichctl.providers.polygon import PolygonProvider

    return PolygonProvider(
        settings.polygon, calendar, sink=sink, resilience=settings.resilience, registry=registry,
        rate_interval=settings.polygon.rate_window_seconds,
    )


def _polygon_key_check(settings: Settings, for_api: bool) -> None:
    key = settings.polygon.api_key
    if key is not None and key.get_secret_value():
        return
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


def _polygon_quota(settings: Settings) -> Quota:
    from enrichctl.providers.polygon import NAME, rate_window_with_margin

    polygon = settings.polygon
    return Quota(NAME, polygon.requests_per_minute, polygon.rate_window_seconds,
                 rate_window_with_margin(polygon.rate_window_seconds), "polygon.requests_per_minute")


# -- the registry -------------------------------------------------------------------------------

ENTRIES: dict[str, ProviderEntry] = {
    entry.name: entry
    for entry in (
        ProviderEntry(
            "polygon", _polygon_build, section="polygon", settings_model=PolygonSettings,
            key_check=_polygon_key_check, quota=_polygon_quota,
            unit=UnitNeeds(internet=True, credentials=("polygon_api_key",)),
        ),
        ProviderEntry("demo", _demo_build),
    )
}


def provider_names() -> tuple[str, ...]:
    return tuple(ENTRIES)


def provider_entry(name: str) -> ProviderEntry:
    try:
        return ENTRIES[name]
    except KeyError:
        known = " or ".join(repr(n) for n in ENTRIES)
        raise ConfigError(f"unknown provider {name!r}: expected {known}") from None


def provider_check(settings: Settings, *, for_api: bool = False) -> None:
    """ConfigError when the configured provider cannot work as configured (e.g. no key).
    ``for_api``: the advice is for an HTTP client, who cannot set the server's variables or
    flags."""
    entry = provider_entry(settings.provider)
    if entry.key_check is not None:
        entry.key_check(settings, for_api)


def provider_quota(settings: Settings) -> Quota | None:
    """The configured provider's quota; None when it has none (it sends nothing anywhere)."""
    entry = provider_entry(settings.provider)
    return entry.quota(settings) if entry.quota is not None else None


def provider_create(
    settings: Settings, calendar: SessionCalendar, sink: RequestSink,
    clock: Clock | None = None, registry: ResilienceRegistry | None = None,
) -> Provider:
    """Build the configured provider; raises ConfigError when it cannot be used as configured.
    ``clock`` (epoch ms) is the provider's idea of now: no bar that is incomplete then."""
    from enrichctl.domain import now_ms

    provider_check(settings)
    return provider_entry(settings.provider).build(settings, calendar, sink, clock or now_ms, registry)
