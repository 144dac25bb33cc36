"""Settings: a TOML file, then ``ENRICHCTL_*`` environment variables, then command-line flags.

Flags win over env over file. The seed's ``DATABASE_URL`` and ``POLYGON_API_KEY`` are read too
(``ENRICHCTL_*`` wins over them), and under systemd the key comes first from
``$CREDENTIALS_DIRECTORY/polygon_api_key``. Secrets are ``SecretStr`` and print redacted.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from enrichctl.domain import AssetClass, Timeframe, parse_symbol
from enrichctl.errors import ConfigError
from enrichctl.indicatorspec import parse_indicator

DEFAULT_INDICATORS = (
    "sma_20",
    "sma_50",
    "sma_200",
    "ema_12",
    "ema_26",
    "rsi_14",
    "macd_12_26_9",
    "bbands_20_2",
    "atr_14",
    "log_return",
    "volatility_20",
)

DEFAULT_HISTORY_DAYS = {
    Timeframe.M1: 30,
    Timeframe.M5: 90,
    Timeframe.M15: 180,
    Timeframe.M30: 365,
    Timeframe.H1: 730,
    Timeframe.H4: 1825,
    Timeframe.D1: 3650,
    Timeframe.W1: 7300,
}


class _Section(BaseModel):
    # allow_inf_nan=False: "inf" or "nan" in a duration or threshold is a mistake, caught at load.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _printable(value: str) -> str:
    """Refuse control characters (a newline would start a new line in a systemd unit)."""
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise ValueError(f"must not contain control characters (newline, escape): {value!r}")
    return value


class UniverseEntry(_Section):
    symbol: str
    asset_class: AssetClass | None = None

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        return parse_symbol(value)

    @model_validator(mode="after")
    def _infer_class(self) -> UniverseEntry:
        if self.asset_class is None:
            object.__setattr__(self, "asset_class", AssetClass.for_symbol(self.symbol))
        return self


class PolygonSettings(_Section):
    api_key: SecretStr | None = None
    base_url: str = "https://api.polygon.io"
    requests_per_minute: int = Field(5, ge=0, le=1_000_000, description="plan limit; 0 = unlimited")
    rate_window_seconds: float = Field(
        60.0, gt=0, le=86_400, description="the window the plan limit counts over (Polygon: a minute)"
    )
    adjusted: bool = True
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="one whole request, at most")
    connect_timeout_seconds: float = Field(10.0, gt=0, le=600, description="to open a connection")
    read_timeout_seconds: float = Field(
        10.0, gt=0, le=600,
        description="for the first byte of an answer, and for any later pause while it arrives",
    )
    grouped_daily_max_days: int = Field(
        5, ge=0, le=366, description="use grouped daily up to this many missing days"
    )


class ResilienceSettings(_Section):
    # Every wait is bounded: an hour at most, so a typo cannot park a run for ever.
    failure_rate_threshold: float = Field(0.5, gt=0, le=1)
    window_size: int = Field(20, ge=1, le=10_000)
    minimum_calls: int = Field(5, ge=1, le=10_000)
    unreachable_after: int = Field(
        2, ge=1, le=10_000,
        description="until the provider has answered once, this many transport failures open it",
    )
    recovery_timeout: float = Field(30.0, gt=0, le=3600)
    half_open_calls: int = Field(1, ge=1, le=100)
    retry_max_retries: int = Field(4, ge=0, le=20)
    retry_initial_delay: float = Field(1.0, ge=0, le=3600)
    retry_max_delay: float = Field(60.0, ge=0, le=3600)
    retry_backoff_multiplier: float = Field(2.0, ge=1, le=10)
    retry_after_cap: float = Field(300.0, gt=0, le=3600)
    bulkhead_max_concurrent: int = Field(4, ge=1, le=256)
    bulkhead_timeout: float = Field(120.0, gt=0, le=3600)


class QualitySettings(_Section):
    spike_threshold: float = Field(10.0, gt=0, description="robust z-score of a log return")
    spike_min_move: float = Field(0.15, ge=0, description="and at least this absolute log return")
    volume_factor: float = Field(20.0, gt=1, description="volume above this many times the median")
    stale_after_bars: int = Field(2, ge=1, le=10_000, description="stale when this many complete bars are missing")


class NotifySettings(_Section):
    ping_url: str | None = Field(
        None, description="dead-man's switch: GET <url>/start, <url> on success, <url>/fail"
    )
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class ScheduleSettings(_Section):
    on_calendar: str = Field("*-*-* 01:30:00 UTC", description="systemd OnCalendar= of the timer")
    randomized_delay_seconds: int = Field(
        900, ge=0, le=86_400, description="spread hosts; fixed per host"
    )
    pause_alert_hours: float = Field(
        72.0, gt=0, le=8760, description="status --check is unhealthy when paused longer than this"
    )

    @field_validator("on_calendar")
    @classmethod
    def _calendar_line(cls, value: str) -> str:
        return _printable(value)


class MetricsSettings(_Section):
    textfile_path: Path | None = Field(
        None, description="after each run, write the /metrics exposition here for node_exporter's "
                          "textfile collector (a *.prom file in its --collector.textfile.directory)"
    )

    @field_validator("textfile_path")
    @classmethod
    def _prom_file(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix != ".prom":
            raise ValueError("must name a *.prom file: node_exporter's textfile collector reads no other")
        return value


_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ServeSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    token: SecretStr | None = None
    allowed_hosts: tuple[str, ...] = Field(
        (), description="Host names (or addresses) besides loopback ones that requests may name"
    )
    idle_timeout_seconds: float = Field(
        5.0, ge=0.5, le=3600, description="a connection with no request in progress is closed after "
        "this long (the headers of a request must arrive within it)"
    )
    max_connections: int = Field(
        1024, ge=1, le=65536, description="connections open at once; at the cap a new one closes "
        "the longest-idle one, or is answered 503 when all are busy"
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _HOST_NAME.fullmatch(name) and not _is_address(name.removeprefix("[").removesuffix("]")):
                raise ValueError(f"{name[:80]!r} is not a host name or IP address "
                                 "(give it without scheme, port or wildcard)")
        return tuple(name.lower() for name in value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value):
            raise ValueError(f"expected an address or host name without spaces, not {value[:40]!r}")
        return _printable(value)

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        # A blank token would guard a public address with a password anyone can guess.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is blank: set a real secret (e.g. `openssl rand -hex 32`) or remove it")
        return value


class Settings(BaseSettings):
    """Everything configurable. ``config.example.toml`` documents every key with its default."""

    model_config = SettingsConfigDict(
        env_prefix="ENRICHCTL_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,
    )

    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: sqlite under $XDG_DATA_HOME/enrichctl"
    )
    provider: Literal["polygon", "demo"] = "polygon"
    universe: tuple[UniverseEntry, ...] = tuple(
        UniverseEntry(symbol=s) for s in ("AAPL", "MSFT", "GOOGL", "AMZN", "NVDA")
    )
    timeframes: tuple[Timeframe, ...] = (Timeframe.D1,)
    history_days: dict[Timeframe, int] = Field(default_factory=lambda: dict(DEFAULT_HISTORY_DAYS))
    indicators: tuple[str, ...] = DEFAULT_INDICATORS
    max_concurrent_symbols: int = Field(5, ge=1, le=256)
    max_retries: int = Field(3, ge=0, le=20)
    retry_delay_seconds: float = Field(2.0, ge=0, le=3600, description="first job retry delay; doubles")
    overlap_bars: int = Field(3, ge=0, le=100, description="bars re-read before the watermark")
    worker_lease_seconds: float = Field(
        60.0, ge=1, le=3600, description="a job claim lapses this long after its worker's last renewal"
    )
    requests_retention_days: int = Field(30, ge=1, le=36_500)
    polygon: PolygonSettings = PolygonSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    quality: QualitySettings = QualitySettings()
    serve: ServeSettings = ServeSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    notify: NotifySettings = NotifySettings()
    metrics: MetricsSettings = MetricsSettings()

    @field_validator("history_days", mode="after")
    @classmethod
    def _history_defaults(cls, value: dict[Timeframe, int]) -> dict[Timeframe, int]:
        for tf, days in value.items():
            if days < 1:
                raise ValueError(f"history_days.{tf} must be at least 1")
        return {**DEFAULT_HISTORY_DAYS, **value}

    @field_validator("indicators", mode="after")
    @classmethod
    def _indicators(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            parse_indicator(name)
        if len(set(value)) != len(value):
            raise ValueError("indicators lists a name twice")
        return value

    @field_validator("timeframes", mode="after")
    @classmethod
    def _timeframes(cls, value: tuple[Timeframe, ...]) -> tuple[Timeframe, ...]:
        if not value:
            raise ValueError("timeframes must not be empty")
        return tuple(dict.fromkeys(value))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            _CredentialSource(settings_cls),
            env_settings,
            _SeedEnvSource(settings_cls),
        ]
        if _toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_toml_path))
        return tuple(sources)

    def database_url_resolved(self) -> str:
        return self.database_url or default_database_url()


class _SeedEnvSource(PydanticBaseSettingsSource):
    """The seed's un-prefixed ``DATABASE_URL`` and ``POLYGON_API_KEY``."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if url := os.environ.get("DATABASE_URL"):
            values["database_url"] = url
        if key := os.environ.get("POLYGON_API_KEY"):
            values["polygon"] = {"api_key": key}
        return values


class _CredentialSource(PydanticBaseSettingsSource):
    """systemd ``LoadCredential=``: files in ``$CREDENTIALS_DIRECTORY`` beat the environment."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            return {}
        values: dict[str, Any] = {}
        key_file = Path(directory) / "polygon_api_key"
        if key_file.is_file():
            values["polygon"] = {"api_key": key_file.read_text().strip()}
        token_file = Path(directory) / "serve_token"
        if token_file.is_file():
            values["serve"] = {"token": token_file.read_text().strip()}
        return values


# The TOML file of the load in progress; settings_customise_sources is a classmethod without a
# way to pass it. Loads happen once per process, at start-up.
_toml_path: Path | None = None


def data_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "enrichctl"


def default_database_url() -> str:
    state = os.environ.get("STATE_DIRECTORY")  # systemd StateDirectory=
    directory = Path(state.split(":")[0]) if state else data_home()
    return f"sqlite:///{directory / 'enrichctl.db'}"


def config_candidates() -> list[Path]:
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [
        Path("enrichctl.toml"),
        Path(config_home) / "enrichctl" / "config.toml",
        Path("/etc/enrichctl/config.toml"),
    ]


def config_path_find(explicit: Path | None) -> Path | None:
    """The config file to read: --config, $ENRICHCTL_CONFIG, then the first that exists."""
    chosen = explicit or (Path(p) if (p := os.environ.get("ENRICHCTL_CONFIG")) else None)
    if chosen is not None:
        if not chosen.is_file():
            raise ConfigError(f"config file not found: {chosen}")
        return chosen
    return next((p for p in config_candidates() if p.is_file()), None)


# ENRICHCTL_* variables that are not settings: read by the CLI and the test suite themselves.
ENV_OTHER = ("ENRICHCTL_CONFIG", "ENRICHCTL_DEBUG", "ENRICHCTL_TEST_POSTGRES_URL")
ENV_PREFIX = "ENRICHCTL_"
# Examples for the settings an environment variable gives as JSON.
_JSON_EXAMPLES = {
    "timeframes": '["1d", "1h"]',
    "indicators": '["sma_20", "rsi_14"]',
    "universe": '[{"symbol": "AAPL"}, {"symbol": "X:BTCUSD"}]',
    "history_days": '{"1d": 3650}',
}


def env_names_known() -> set[str]:
    """Every ``ENRICHCTL_*`` name that means something: each setting, each key of a section
    (``__`` nested), each ``history_days`` timeframe, and the non-settings ones."""
    names = set(ENV_OTHER)
    for name, field in Settings.model_fields.items():
        names.add(f"{ENV_PREFIX}{name}".upper())
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            names.update(f"{ENV_PREFIX}{name}__{key}".upper() for key in section.model_fields)
    names.update(f"{ENV_PREFIX}HISTORY_DAYS__{tf.value}".upper() for tf in Timeframe)
    return names


def env_unknown(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(name, one line) for each ``ENRICHCTL_*`` variable that no setting reads, with a
    did-you-mean: pydantic-settings ignores them, so a typo would otherwise go unnoticed."""
    import difflib

    known = env_names_known()
    lines = []
    for name in sorted(environ if environ is not None else os.environ):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in known:
            continue
        # Compared without the prefix every name shares, or anything would look alike.
        suffixes = {k.removeprefix(ENV_PREFIX): k for k in known}
        guess = difflib.get_close_matches(name.upper().removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=0.6)
        hint = (f"; did you mean {suffixes[guess[0]]}?" if guess
                else " (a key of a section is nested with '__', e.g. ENRICHCTL_POLYGON__TIMEOUT_SECONDS)")
        lines.append((name, f"unknown environment variable {name} is ignored{hint}"))
    return lines


def settings_load(config: Path | None = None, **overrides: Any) -> Settings:
    """Load settings; ``overrides`` are flag values (None means "not given"). ConfigError on any
    problem, with one line naming the key and what is wrong."""
    global _toml_path
    path = config_path_find(config)
    given = {k: v for k, v in overrides.items() if v is not None}
    _toml_path = path
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_validation_line(exc, path)) from None
    except SettingsError as exc:  # an ENRICHCTL_* value that is not the JSON the setting needs
        raise ConfigError(_env_parse_line(exc)) from None
    except (OSError, ValueError) as exc:  # unreadable file, TOML syntax error
        where = f" in {path}" if path else ""
        raise ConfigError(f"cannot read settings{where}: {exc}") from None
    finally:
        _toml_path = None


def _env_parse_line(exc: SettingsError) -> str:
    match = re.search(r'field "(\w+)"', str(exc))
    if match is None:
        return f"cannot read settings from the environment: {exc}"
    field = match.group(1)
    example = _JSON_EXAMPLES.get(field, '{"key": "value"}')
    kind = "JSON list" if example.startswith("[") else "JSON object"
    return (f"{ENV_PREFIX}{field.upper()}: expected a {kind}, e.g. "
            f"{ENV_PREFIX}{field.upper()}='{example}'")


def _validation_line(exc: ValidationError, path: Path | None) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}")
    where = f" ({path})" if path else ""
    return f"invalid settings{where}: " + "; ".join(parts)


def settings_redacted(settings: Settings) -> dict[str, Any]:
    """Settings as a JSON-able dict with every secret replaced by '***' (or null when unset)."""
    data = settings.model_dump(mode="json")
    data["database_url"] = redact_url(settings.database_url_resolved())
    if settings.notify.ping_url:  # a healthchecks URL carries its secret in the path
        from yarl import URL

        ping = URL(settings.notify.ping_url)
        data["notify"]["ping_url"] = f"{ping.scheme}://{ping.host}/***"
    return data


def redact_url(url: str) -> str:
    """Hide a password in a database URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.password:
        return parsed.render_as_string(hide_password=True)
    return url
