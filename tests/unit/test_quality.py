"""Quality checks on synthetic bars laid on the real NYSE calendar."""

from __future__ import annotations

import itertools
import re
import time

import numpy as np
import pytest

from enrichctl.calendar import SessionCalendar, calendar_days, utc_date_ms
from enrichctl.domain import (
    MS_PER_DAY,
    AssetClass,
    Bars,
    IssueKind,
    QualityIssue,
    Series,
    Severity,
    Timeframe,
)
from enrichctl.pipeline.quality import (
    MAX_ISSUES_PER_KIND,
    CheckResult,
    check_batch,
    check_stale,
    check_stored,
    quality_score,
)
from enrichctl.settings import QualitySettings

HOUR = 3_600_000
AAPL_D1 = Series("AAPL", AssetClass.STOCK, Timeframe.D1)
AAPL_H1 = Series("AAPL", AssetClass.STOCK, Timeframe.H1)
AAPL_W1 = Series("AAPL", AssetClass.STOCK, Timeframe.W1)
SPX_D1 = Series("I:SPX", AssetClass.INDEX, Timeframe.D1)
BTC_D1 = Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.D1)
BTC_H1 = Series("X:BTCUSD", AssetClass.CRYPTO, Timeframe.H1)
CONFIG = QualitySettings()


@pytest.fixture(scope="module")
def calendar() -> SessionCalendar:
    return SessionCalendar()


def ny_day(calendar: SessionCalendar, date: str) -> int:
    """The NY-midnight day start of a session date."""
    return int(calendar.sessions(utc_date_ms(date), utc_date_ms(date) + MS_PER_DAY).day[0])


def session_days(calendar: SessionCalendar, first: str, last: str) -> np.ndarray:
    return calendar.sessions(utc_date_ms(first), utc_date_ms(last) + MS_PER_DAY - 1).day


def make_bars(ts: np.ndarray, *, seed: int = 0, vol: float = 0.01, log_returns=None) -> Bars:
    """A consistent OHLCV random walk on the given bar starts."""
    rng = np.random.default_rng(seed)
    n = len(ts)
    r = rng.normal(0.0, vol, n) if log_returns is None else np.asarray(log_returns)
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * 1.005
    low = np.minimum(open_, close) * 0.995
    volume = rng.uniform(1e6, 2e6, n)
    return Bars.from_columns(ts, open_, high, low, close, volume, (high + low) / 2, volume / 100)


def check(
    series: Series,
    bars: Bars,
    calendar: SessionCalendar,
    *,
    context: Bars | None = None,
    start: int | None = None,
    end: int | None = None,
) -> CheckResult:
    start = int(bars.ts.min()) if start is None else start
    end = int(bars.ts.max()) if end is None else end
    return check_batch(series, bars, start, end, calendar, CONFIG, context=context)


def kinds(issues: list[QualityIssue]) -> list[IssueKind]:
    return [issue.kind for issue in issues]


def of_kind(result: CheckResult, kind: IssueKind) -> list[QualityIssue]:
    return [issue for issue in result.issues if issue.kind is kind]


# --- clean data, calendar-aware gaps -------------------------------------------------------


def test_clean_daily_series_over_holidays_and_early_close_has_no_issues(calendar):
    days = session_days(calendar, "2024-01-01", "2024-12-31")
    assert ny_day(calendar, "2024-07-03") in days  # the early close is a normal daily bar
    assert ny_day(calendar, "2024-07-03") + MS_PER_DAY not in days  # 07-04 holiday: not a gap
    bars = make_bars(days)
    start, end = utc_date_ms("2024-01-01"), utc_date_ms("2025-01-01")
    result = check(AAPL_D1, bars, calendar, start=start, end=end)
    assert result.issues == []
    assert len(result.bars) == len(days)
    np.testing.assert_array_equal(result.bars.close, bars.close)
    assert quality_score(len(result.bars), result.issues) == 1.0


def test_late_start_and_early_end_are_not_gaps(calendar):
    # An IPO in June, asked from January; the newest days missing are staleness, not gaps.
    days = session_days(calendar, "2024-06-03", "2024-11-29")
    result = check(
        AAPL_D1,
        make_bars(days),
        calendar,
        start=utc_date_ms("2024-01-01"),
        end=utc_date_ms("2024-12-31"),
    )
    assert result.issues == []


def test_missing_week_is_one_gap_of_five_sessions(calendar):
    days = session_days(calendar, "2024-06-01", "2024-07-31")
    week = (days >= ny_day(calendar, "2024-07-08")) & (days <= ny_day(calendar, "2024-07-12"))
    result = check(AAPL_D1, make_bars(days[~week]), calendar)
    assert kinds(result.issues) == [IssueKind.GAP]
    gap = result.issues[0]
    assert gap.severity is Severity.WARNING
    assert gap.ts == ny_day(calendar, "2024-07-08")
    assert gap.detail == "5 sessions missing from 2024-07-08 to 2024-07-12"


def test_gap_between_stored_tail_and_batch_skips_the_holiday(calendar):
    context = make_bars(session_days(calendar, "2024-06-03", "2024-06-28"))
    batch = make_bars(session_days(calendar, "2024-07-09", "2024-07-31"), seed=1)
    result = check(AAPL_D1, batch, calendar, context=context, start=utc_date_ms("2024-07-01"))
    assert [i.detail for i in result.issues] == ["5 sessions missing from 2024-07-01 to 2024-07-08"]


def test_refetched_overlap_with_the_stored_tail_is_not_an_issue(calendar):
    days = session_days(calendar, "2024-01-01", "2024-07-31")
    bars = make_bars(days)
    context, batch = bars.take(slice(0, 120)), bars.take(slice(110, None))
    result = check(AAPL_D1, batch, calendar, context=context)
    assert result.issues == []
    assert len(result.bars) == len(batch)


def test_crypto_daily_expects_weekends(calendar):
    days = calendar_days(utc_date_ms("2024-07-01"), utc_date_ms("2024-07-31"))
    clean = check(BTC_D1, make_bars(days), calendar)
    assert clean.issues == []  # Saturdays are not non-session bars for crypto
    weekend = (days >= utc_date_ms("2024-07-06")) & (days < utc_date_ms("2024-07-08"))
    result = check(BTC_D1, make_bars(days[~weekend]), calendar)
    assert [i.detail for i in result.issues] == ["2 days missing from 2024-07-06 to 2024-07-07"]


def hourly_stock_bars(calendar: SessionCalendar, first: str, last: str) -> np.ndarray:
    s = calendar.sessions(utc_date_ms(first), utc_date_ms(last) + MS_PER_DAY - 1)
    return np.concatenate(
        [np.arange(o // HOUR * HOUR, c, HOUR) for o, c in zip(s.open, s.close, strict=True)]
    )


def test_intraday_stock_gap_is_a_session_day_without_bars(calendar):
    ts = hourly_stock_bars(calendar, "2024-07-01", "2024-07-12")

    def day_of(date: str) -> np.ndarray:
        return (ts >= ny_day(calendar, date)) & (ts < ny_day(calendar, date) + MS_PER_DAY)

    sparse_day = day_of("2024-07-10")
    sparse_day[np.flatnonzero(sparse_day)[0]] = False  # one bar left on 07-10 is enough
    keep = ~day_of("2024-07-09") & ~sparse_day
    result = check(AAPL_H1, make_bars(ts[keep]), calendar)
    gaps = [i for i in result.issues if i.kind is IssueKind.GAP]
    assert [i.detail for i in gaps] == ["1 session day missing: 2024-07-09"]
    assert gaps[0].ts == ny_day(calendar, "2024-07-09")
    # The day with only its opening bar is not missing, but the rest of its session is.
    assert [i.detail for i in result.issues if i.kind is IssueKind.INTRADAY_HOLE] == [
        "6 bars missing inside the session from 2024-07-10T14:00:00Z to 2024-07-10T19:00:00Z"]


def test_crypto_intraday_gap_groups_consecutive_missing_hours(calendar):
    start = utc_date_ms("2024-07-06")
    ts = np.arange(start, start + 3 * MS_PER_DAY, HOUR)
    result = check(BTC_H1, make_bars(np.delete(ts, [30, 31, 32])), calendar)
    assert [i.detail for i in result.issues] == [
        "3 bars missing from 2024-07-07T06:00:00Z to 2024-07-07T08:00:00Z"
    ]


def test_weekly_series_are_checked_on_the_exchange_calendars_weeks(calendar):
    mondays = calendar.week_starts(AssetClass.STOCK, ny_day(calendar, "2024-01-08"), ny_day(calendar, "2024-12-30"))
    assert len(mondays) == 52  # Monday midnight New York, across both DST changes
    assert check(AAPL_W1, make_bars(mondays), calendar).issues == []
    result = check(AAPL_W1, make_bars(np.delete(mondays, [5, 6, 7])), calendar)
    gaps = of_kind(result, IssueKind.GAP)
    assert [g.detail for g in gaps] == ["3 weeks missing from 2024-02-12 to 2024-02-26"]


def test_many_gaps_are_capped_with_a_summary(calendar):
    days = session_days(calendar, "2023-01-01", "2024-12-31")
    kept = days[::2]  # every other session: one single-session gap between each pair
    result = check(AAPL_D1, make_bars(kept), calendar)
    gaps = of_kind(result, IssueKind.GAP)
    assert len(gaps) == MAX_ISSUES_PER_KIND + 1
    assert gaps[-1].detail.startswith(f"{len(kept) - 1 - MAX_ISSUES_PER_KIND} more gap issues")


# --- what may be stored ------------------------------------------------------------------------


def test_out_of_range_bars_are_dropped_and_reported(calendar):
    days = session_days(calendar, "2024-06-03", "2024-07-31")
    bars = make_bars(days)
    start, end = int(days[2]), int(days[-2])
    result = check(AAPL_D1, bars, calendar, start=start, end=end)
    out = of_kind(result, IssueKind.OUT_OF_RANGE)
    assert [i.ts for i in out] == [days[0], days[1], days[-1]]
    assert all(i.severity is Severity.WARNING and "dropped" in i.detail for i in out)
    assert result.bars.ts.min() == start and result.bars.ts.max() == end
    assert kinds(result.issues) == [IssueKind.OUT_OF_RANGE] * 3  # the dropped edges are no gap


def test_hundreds_of_out_of_range_bars_give_fifty_issues_and_a_summary(calendar):
    days = session_days(calendar, "2023-01-01", "2024-07-31")
    bars = make_bars(days)
    result = check(AAPL_D1, bars, calendar, start=int(days[200]))
    out = of_kind(result, IssueKind.OUT_OF_RANGE)
    assert len(out) == MAX_ISSUES_PER_KIND + 1
    assert out[-1].detail.startswith("150 more out of range issues")
    assert len(result.bars) == len(days) - 200


def test_unsorted_input_comes_out_sorted_without_issues(calendar):
    days = session_days(calendar, "2024-06-03", "2024-07-31")
    bars = make_bars(days)
    shuffled = bars.take(np.random.default_rng(3).permutation(len(bars)))
    result = check(AAPL_D1, shuffled, calendar)
    assert result.issues == []
    np.testing.assert_array_equal(result.bars.ts, days)
    np.testing.assert_array_equal(result.bars.close, bars.close)


def test_identical_duplicates_keep_one_with_a_warning(calendar):
    days = session_days(calendar, "2024-06-03", "2024-07-31")
    bars = make_bars(days)
    raw = Bars.concat([bars, bars.take([5])])
    result = check(AAPL_D1, raw, calendar)
    assert [(i.kind, i.severity, i.ts) for i in result.issues] == [
        (IssueKind.DUPLICATE, Severity.WARNING, days[5])
    ]
    assert len(result.bars) == len(days)


@pytest.mark.parametrize("first_sent_close, last_sent_close", [(101.0, 105.0), (105.0, 101.0)])
def test_differing_duplicates_keep_the_last_sent_with_an_error(
    calendar, first_sent_close, last_sent_close
):
    ts = session_days(calendar, "2024-07-01", "2024-07-03")

    def one(close: float) -> Bars:
        return Bars.from_columns([ts[1]], [100.0], [110.0], [99.0], [close], [1e6])

    raw = Bars.concat([one(first_sent_close), make_bars(ts).take([0, 2]), one(last_sent_close)])
    result = check(AAPL_D1, raw, calendar)
    dup = of_kind(result, IssueKind.DUPLICATE)
    assert [(i.severity, i.ts) for i in dup] == [(Severity.ERROR, ts[1])]
    assert "2 different bars" in dup[0].detail
    np.testing.assert_array_equal(result.bars.ts, ts)
    assert result.bars.close[1] == last_sent_close


def test_unusable_prices_are_dropped_as_ohlc_errors(calendar):
    days = session_days(calendar, "2024-06-03", "2024-07-31")
    bars = make_bars(days)
    bars.close[3] = np.nan
    bars.open[4] = 0.0
    bars.low[5] = -1.0
    bars.high[6] = np.inf
    result = check(AAPL_D1, bars, calendar)
    ohlc = of_kind(result, IssueKind.OHLC)
    assert [(i.severity, i.ts) for i in ohlc] == [(Severity.ERROR, t) for t in days[3:7]]
    assert "dropped" in ohlc[0].detail
    assert len(result.bars) == len(days) - 4
    assert np.all(np.isfinite(result.bars.close)) and np.all(result.bars.low > 0)


def test_a_broken_copy_does_not_displace_a_valid_duplicate(calendar):
    days = session_days(calendar, "2024-07-01", "2024-07-31")
    bars = make_bars(days)
    broken = bars.take([2])
    broken.close[0] = np.nan
    result = check(AAPL_D1, Bars.concat([bars, broken]), calendar)
    assert kinds(result.issues) == [IssueKind.OHLC]
    assert result.bars.close[2] == bars.close[2]


def test_inconsistent_ohlc_is_kept_and_flagged(calendar):
    days = session_days(calendar, "2024-06-03", "2024-07-31")
    bars = make_bars(days)
    bars.low[3] = bars.open[3] * 1.02  # above the open (and maybe the high)
    bars.volume[8] = -5.0
    bars.low[12] = min(bars.open[12], bars.close[12]) * (1 + 1e-9)  # provider rounding: fine
    result = check(AAPL_D1, bars, calendar)
    ohlc = of_kind(result, IssueKind.OHLC)
    assert [(i.severity, i.ts) for i in ohlc] == [(Severity.ERROR, t) for t in days[[3, 8]]]
    assert "low above min(open, close)" in ohlc[0].detail
    assert "negative volume" in ohlc[1].detail
    assert len(result.bars) == len(days)
    assert result.bars.low[3] == bars.low[3]


def test_daily_bar_on_a_holiday_or_weekend_is_a_kept_non_session_warning(calendar):
    days = session_days(calendar, "2024-07-01", "2024-07-31")
    holiday = ny_day(calendar, "2024-07-03") + MS_PER_DAY
    saturday = ny_day(calendar, "2024-07-05") + MS_PER_DAY
    ts = np.sort(np.concatenate([days, [holiday, saturday]]))
    result = check(AAPL_D1, make_bars(ts), calendar)
    issues = of_kind(result, IssueKind.NON_SESSION)
    assert [(i.severity, i.ts) for i in issues] == [
        (Severity.WARNING, holiday),
        (Severity.WARNING, saturday),
    ]
    assert kinds(result.issues) == [IssueKind.NON_SESSION] * 2
    assert len(result.bars) == len(ts)


def test_empty_batch_is_clean(calendar):
    result = check_batch(AAPL_D1, Bars.empty(), 0, 10**13, calendar, CONFIG, context=None)
    assert len(result.bars) == 0 and result.issues == []


# --- spikes and volume -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_walk_of_ten_years_raises_no_spike(calendar, seed):
    days = session_days(calendar, "2014-01-01", "2024-12-31")[:2500]
    result = check(AAPL_D1, make_bars(days, seed=seed, vol=0.02), calendar)
    assert result.issues == []


def test_forty_percent_jump_is_a_spike(calendar):
    days = session_days(calendar, "2014-01-01", "2024-12-31")[:2500]
    returns = np.random.default_rng(0).normal(0.0, 0.02, len(days))
    returns[1700] = np.log(1.4)
    result = check(AAPL_D1, make_bars(days, log_returns=returns), calendar)
    spikes = of_kind(result, IssueKind.PRICE_SPIKE)
    assert [(i.severity, i.ts) for i in spikes] == [(Severity.WARNING, days[1700])]
    assert "+40.0%" in spikes[0].detail
    assert len(result.bars) == len(days)  # a spike is reported, not removed


def test_jump_on_the_first_new_bar_is_measured_from_the_stored_close(calendar):
    days = session_days(calendar, "2024-01-01", "2024-07-31")
    returns = np.random.default_rng(5).normal(0.0, 0.01, len(days))
    returns[100] = np.log(0.6)
    bars = make_bars(days, log_returns=returns)
    result = check(AAPL_D1, bars.take(slice(100, None)), calendar, context=bars.take(slice(0, 100)))
    spikes = of_kind(result, IssueKind.PRICE_SPIKE)
    assert [i.ts for i in spikes] == [days[100]]
    assert "-40.0%" in spikes[0].detail


def test_volume_far_above_the_median_is_an_anomaly(calendar):
    days = session_days(calendar, "2024-01-01", "2024-07-31")
    bars = make_bars(days)
    median = np.median(bars.volume)
    bars.volume[10] = 15 * median  # busy, not anomalous
    bars.volume[20] = 30 * median
    result = check(AAPL_D1, bars, calendar)
    issues = of_kind(result, IssueKind.VOLUME_ANOMALY)
    assert [(i.severity, i.ts) for i in issues] == [(Severity.WARNING, days[20])]
    assert re.search(r"is (29|30)\.\dx the median", issues[0].detail)


def test_zero_volume_matters_for_stocks_only_and_missing_volume_never(calendar):
    days = session_days(calendar, "2024-01-01", "2024-07-31")
    bars = make_bars(days)
    bars.volume[7] = 0.0
    stock = check(AAPL_D1, bars, calendar)
    assert [(i.kind, i.ts) for i in stock.issues] == [(IssueKind.VOLUME_ANOMALY, days[7])]
    crypto_days = calendar_days(utc_date_ms("2024-01-01"), utc_date_ms("2024-03-31"))
    crypto = make_bars(crypto_days)
    crypto.volume[7] = 0.0
    assert check(BTC_D1, crypto, calendar).issues == []
    index = make_bars(days)
    index.volume[:] = np.nan
    assert check(SPX_D1, index, calendar).issues == []


# --- staleness ---------------------------------------------------------------------------------


def test_daily_stale_counts_sessions_after_the_watermark(calendar):
    now = utc_date_ms("2024-07-10") + 15 * HOUR  # Wednesday; Tuesday's bar is the last complete
    fresh = [ny_day(calendar, d) for d in ("2024-07-09", "2024-07-08")]
    for watermark in fresh:
        assert check_stale(AAPL_D1, watermark, now, calendar, CONFIG) is None
    stale = check_stale(AAPL_D1, ny_day(calendar, "2024-07-05"), now, calendar, CONFIG)
    assert stale is not None and stale.kind is IssueKind.STALE
    assert stale.severity is Severity.WARNING
    assert "2 bars behind" in stale.detail
    over_holiday = check_stale(AAPL_D1, ny_day(calendar, "2024-07-03"), now, calendar, CONFIG)
    assert over_holiday is not None and "3 bars behind" in over_holiday.detail  # 07-04 not counted


def test_no_data_is_stale_and_weekly_counts_complete_weeks(calendar):
    now = utc_date_ms("2024-07-10") + 15 * HOUR  # a Wednesday: the last complete week began 1 July
    empty = check_stale(AAPL_D1, None, now, calendar, CONFIG)
    assert empty is not None and empty.kind is IssueKind.STALE and "no bars" in empty.detail
    assert check_stale(AAPL_W1, None, now, calendar, CONFIG) is not None
    july_1 = ny_day(calendar, "2024-07-01")
    assert calendar.last_complete_bar_start(AAPL_W1, now) == july_1
    assert check_stale(AAPL_W1, july_1, now, calendar, CONFIG) is None
    assert check_stale(AAPL_W1, ny_day(calendar, "2024-06-17"), now, calendar, CONFIG) is not None


def test_intraday_stock_stale_counts_session_bars_not_the_night(calendar):
    now = utc_date_ms("2024-07-10") + 18 * HOUR  # 14:00 New York; the 17:00 UTC bar is complete
    assert check_stale(AAPL_H1, now - 2 * HOUR, now, calendar, CONFIG) is None
    stale = check_stale(AAPL_H1, now - 3 * HOUR, now, calendar, CONFIG)
    assert stale is not None and "2 bars behind" in stale.detail
    before_open = utc_date_ms("2024-07-10") + 12 * HOUR
    last_bar_yesterday = utc_date_ms("2024-07-09") + 19 * HOUR
    assert check_stale(AAPL_H1, last_bar_yesterday, before_open, calendar, CONFIG) is None


def test_crypto_hourly_stale(calendar):
    day = utc_date_ms("2024-07-06")  # a Saturday: crypto has no night or weekend off
    now = day + 18 * HOUR + 30 * 60_000  # the 17:00 bar is the last complete one
    assert check_stale(BTC_H1, day + 16 * HOUR, now, calendar, CONFIG) is None
    stale = check_stale(BTC_H1, day + 15 * HOUR, now, calendar, CONFIG)
    assert stale is not None and "2 bars behind" in stale.detail


# --- a whole stored series ---------------------------------------------------------------------


def test_check_stored_clean_series_has_no_issues(calendar):
    days = session_days(calendar, "2020-01-01", "2024-12-31")
    assert check_stored(AAPL_D1, make_bars(days), calendar, CONFIG) == []


def test_check_stored_finds_every_kind_of_damage(calendar):
    days = session_days(calendar, "2024-01-01", "2024-07-31")
    bars = make_bars(np.delete(days, [40, 41]))  # a two-session hole
    bars.high[10] = bars.low[10] * 0.9  # low above high
    holiday = make_bars(np.array([ny_day(calendar, "2024-07-03") + MS_PER_DAY]))
    damaged = Bars.concat([bars, bars.take([20]), holiday])  # a duplicate; out of order
    issues = check_stored(AAPL_D1, damaged, calendar, CONFIG)
    by_kind = {kind: [i for i in issues if i.kind is kind] for kind in kinds(issues)}
    assert set(by_kind) == {
        IssueKind.DUPLICATE,
        IssueKind.OHLC,
        IssueKind.NON_SESSION,
        IssueKind.GAP,
        IssueKind.BAD_PRINT,  # the holiday bar's price is far from both its neighbours
        IssueKind.VWAP,  # the damaged bar's high is below its vwap
    }
    assert [i.ts for i in by_kind[IssueKind.BAD_PRINT]] == [holiday.ts[0]]
    assert any("not in timestamp order" in i.detail for i in by_kind[IssueKind.DUPLICATE])
    assert [i.detail for i in by_kind[IssueKind.GAP]] == [
        f"2 sessions missing from {_date(days[40])} to {_date(days[41])}"
    ]
    assert [i.ts for i in by_kind[IssueKind.OHLC]] == [bars.ts[10]]


def _date(ms: int) -> str:
    return np.datetime64(int(ms) + 12 * HOUR, "ms").astype("datetime64[D]").astype(str)


# --- score and speed ---------------------------------------------------------------------------


def test_quality_score_falls_with_each_issue_and_errors_weigh_more():
    warning = QualityIssue(IssueKind.GAP, Severity.WARNING, "1 session missing")
    error = QualityIssue(IssueKind.OHLC, Severity.ERROR, "low above high")
    assert quality_score(100, []) == 1.0
    assert quality_score(0, []) == 1.0
    scores = [quality_score(100, [warning] * n) for n in range(10)]
    assert all(a > b for a, b in itertools.pairwise(scores))
    assert quality_score(100, [error]) < quality_score(100, [warning])
    assert quality_score(10, [error] * 50) == 0.0
    assert 0.0 <= quality_score(3, [warning, error]) <= 1.0


def test_ten_years_of_daily_bars_are_checked_in_milliseconds(calendar):
    days = session_days(calendar, "2014-01-01", "2024-12-31")[:2520]
    bars = make_bars(days, vol=0.02)
    context = make_bars(session_days(calendar, "2013-06-01", "2013-12-31"))
    timings = []
    for _ in range(5):
        t0 = time.perf_counter()
        check(AAPL_D1, bars, calendar, context=context)
        timings.append(time.perf_counter() - t0)
    assert min(timings) < 0.02  # measured ~1 ms; generous for a shared 2-core box


# --- neighbours: frozen prices, holes inside a session; forex intraday gaps ---------------------

EURUSD_H1 = Series("C:EURUSD", AssetClass.FOREX, Timeframe.H1)


def frozen_at(bars: Bars, first: int, length: int, volume: float | None = None) -> Bars:
    """``bars`` with ``length`` bars from index ``first`` all printing the same OHLC."""
    o, h, lo, c, v = (x.copy() for x in (bars.open, bars.high, bars.low, bars.close, bars.volume))
    span = slice(first, first + length)
    for x in (o, h, lo, c):
        x[span] = c[first]
    if volume is not None:
        v[span] = volume
    return Bars.from_columns(bars.ts, o, h, lo, c, v, np.clip(bars.vwap, lo, h), bars.trades)


def test_a_frozen_price_while_volume_trades_is_flagged_once(calendar):
    start = utc_date_ms("2024-07-08")
    bars = make_bars(np.arange(start, start + 2 * MS_PER_DAY, HOUR))
    result = check(BTC_H1, frozen_at(bars, 10, 6), calendar)
    frozen = of_kind(result, IssueKind.FROZEN)
    assert [i.detail for i in frozen] == [
        f"6 identical bars from 2024-07-08T10:00:00Z at {bars.close[10]:g} while volume trades"]
    assert frozen[0].ts == start + 10 * HOUR and frozen[0].severity is Severity.WARNING


def test_identical_bars_without_volume_or_too_few_are_not_frozen(calendar):
    start = utc_date_ms("2024-07-08")
    bars = make_bars(np.arange(start, start + 2 * MS_PER_DAY, HOUR))
    assert of_kind(check(BTC_H1, frozen_at(bars, 10, 4), calendar), IssueKind.FROZEN) == []
    # A quiet market prints the same price with no trades: not a frozen feed.
    assert of_kind(check(BTC_H1, frozen_at(bars, 10, 8, volume=0.0), calendar), IssueKind.FROZEN) == []


def test_hours_missing_inside_a_session_are_a_hole_one_is_not(calendar):
    ts = hourly_stock_bars(calendar, "2024-07-08", "2024-07-12")
    tuesday = ny_day(calendar, "2024-07-09")
    day = np.flatnonzero((ts >= tuesday) & (ts < tuesday + MS_PER_DAY))
    assert len(day) == 7  # 09:00 .. 15:00 New York
    four = np.delete(ts, day[1:5])  # 10:00 to 13:00 gone
    holes = of_kind(check(AAPL_H1, make_bars(four), calendar), IssueKind.INTRADAY_HOLE)
    assert [i.detail for i in holes] == [
        "4 bars missing inside the session from 2024-07-09T14:00:00Z to 2024-07-09T17:00:00Z"]
    assert holes[0].ts == int(ts[day[1]])
    one = np.delete(ts, day[3])
    assert of_kind(check(AAPL_H1, make_bars(one), calendar), IssueKind.INTRADAY_HOLE) == []
    # Nothing missing between sessions: the night and the weekend are no hole.
    assert check(AAPL_H1, make_bars(ts), calendar).issues == []


def test_forex_intraday_gaps_follow_the_sunday_to_friday_week(calendar):
    sunday = utc_date_ms("2024-07-07")
    grid = calendar.expected_bar_starts(EURUSD_H1, sunday, sunday + 13 * MS_PER_DAY)
    assert grid is not None and len(grid) == 2 * 5 * 24  # two weeks, Sunday 17:00 to Friday 17:00
    # The weekend between the two weeks is not a gap.
    assert check(EURUSD_H1, make_bars(grid), calendar).issues == []
    tuesday = int(np.flatnonzero(grid == utc_date_ms("2024-07-09") + 12 * HOUR)[0])
    result = check(EURUSD_H1, make_bars(np.delete(grid, range(tuesday, tuesday + 4))), calendar)
    assert [i.detail for i in of_kind(result, IssueKind.GAP)] == [
        "4 bars missing from 2024-07-09T12:00:00Z to 2024-07-09T15:00:00Z"]
