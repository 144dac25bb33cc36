"""A provider stricter than configured (issue 10, item 8), at the command line: the installed
``enrichctl run`` is told 60 requests a window while the fake Polygon allows 10 and answers the
rest 429 *without* ``Retry-After``. The run finishes with no failed job and few 429s, and
``metrics``, ``status`` and the Prometheus textfile then say the provider refused and the rate
the run settled on.

The window is one second standing for Polygon's minute (``polygon.rate_window_seconds``), and
the retry delays are scaled the same, so the run meets the provider as it would with a minute.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from enrichctl.calendar import SessionCalendar, utc_date_ms
from enrichctl.domain import MS_PER_DAY, AssetClass, Series, Timeframe
from enrichctl.providers.demo import DemoProvider

from .fake_polygon_thread import API_KEY, fake_polygon
from .workspace import AS_OF, Workspace

SYMBOLS = ("AAPL", "MSFT", "NVDA", "KO")
REAL, CONFIGURED, WINDOW_S = 10, 60, 1.0
# The first refusals cost what was in flight when the provider first said no (a handful), and
# a recovery probe now and then another; a limiter that only paused on Retry-After had 150 of
# 190 refused.
REFUSED_SHARE_MAX = 0.10


def _config(url: str, textfile: Path) -> str:
    universe = ", ".join(f'{{ symbol = "{s}" }}' for s in SYMBOLS)
    scale = WINDOW_S / 60
    return (f'provider = "polygon"\ntimeframes = ["1d", "1h"]\nuniverse = [{universe}]\n'
            f'retry_delay_seconds = {2.0 * scale}\n'
            f'[history_days]\n"1d" = 400\n"1h" = 30\n'
            f'[polygon]\nbase_url = "{url}"\napi_key = "{API_KEY}"\n'
            f'requests_per_minute = {CONFIGURED}\nrate_window_seconds = {WINDOW_S}\n'
            f'[resilience]\nretry_initial_delay = {1.0 * scale}\nretry_max_delay = {60.0 * scale}\n'
            f'[metrics]\ntextfile_path = "{textfile}"\n')


def _gauges(path: Path) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(path.read_text()) for s in f.samples}


def test_a_run_against_a_stricter_provider_finishes_with_few_429s_and_says_so(workspace: Workspace) -> None:
    as_of = utc_date_ms(AS_OF[:10])
    demo = DemoProvider(SessionCalendar(), clock=lambda: as_of)
    textfile = workspace.root / "enrichctl.prom"
    with fake_polygon(budget=REAL, window=WINDOW_S, retry_after=False, page_size=30) as fake:
        for symbol in SYMBOLS:
            for tf in (Timeframe.D1, Timeframe.H1):
                asyncio.run(fake.hold_from(demo, Series(symbol, AssetClass.STOCK, tf),
                                           as_of - 450 * MS_PER_DAY, as_of))
        config = workspace.write("strict.toml", _config(fake.url, textfile))
        run = workspace("--config", str(config), "run", "--as-of", AS_OF, "--json")
        requests, refused = len(fake.requests), fake.rejected_429
        most_in_a_window = fake.max_in_window()
    print(f"{requests} requests, {refused} refused ({refused / requests:.1%}), "
          f"at most {most_in_a_window} answered in a window")
    assert run.code == 0, run
    doc = json.loads(run.out)
    assert (doc["jobs_failed"], doc["jobs_succeeded"]) == (0, len(SYMBOLS)), run
    assert refused >= 1, "the provider never refused: the test tests nothing"
    assert refused <= REFUSED_SHARE_MAX * requests, f"{refused} of {requests} requests refused"
    assert most_in_a_window <= REAL

    base = ("--config", str(config))
    fetch = json.loads(workspace(*base, "metrics", "--json").out)["fetch_pipeline"]
    assert fetch["api_quota_refused"] == refused
    assert fetch["api_quota_last_refused_at"] is not None
    effective = fetch["api_quota_effective_rate"]
    assert fetch["api_quota_limit"] == CONFIGURED and 1 <= effective < CONFIGURED
    # Never counted from the configured quota: the provider has shown it allows less.
    assert 0 <= fetch["api_quota_remaining"] <= effective, {k: v for k, v in fetch.items() if "quota" in k}
    assert f"{effective} per rolling 1 s, the rate the last run settled on" in fetch["api_quota_basis"] \
        or "the provider refused" in fetch["api_quota_basis"], fetch["api_quota_basis"]

    table = workspace(*base, "metrics", env={"COLUMNS": "200"})
    assert table.code == 0, table
    assert f"the provider refused {refused} requests (HTTP 429) in the last 24 h" in table.out, table
    assert f"set polygon.requests_per_minute = {effective}" in table.out, table

    status = workspace(*base, "status", env={"COLUMNS": "200"})
    assert status.code == 0, status
    assert f"polygon refused {refused} requests (HTTP 429) in the last run" in status.out, status
    assert f"it slowed to {effective} of the {CONFIGURED} requests configured per window" in status.out

    gauges = _gauges(textfile)
    polygon = (("limiter", "polygon"),)
    assert gauges[("enrichctl_rate_limiter_refused", polygon)] == refused
    assert gauges[("enrichctl_rate_limiter_refused_without_retry_after", polygon)] == refused
    assert gauges[("enrichctl_rate_limiter_effective_rate", polygon)] == effective
    assert gauges[("enrichctl_rate_limiter_rate", polygon)] == CONFIGURED
    assert ("enrichctl_rate_limiter_last_refused_timestamp_seconds", polygon) in gauges
