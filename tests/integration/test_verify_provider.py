"""``verify --against-provider`` and ``verify --recompute`` against the fake Polygon over
loopback, on SQLite and PostgreSQL: a corrupted stored open, volume, vwap or trades value is
named (symbol, timeframe, time, field, both values), recorded as a quality issue that status,
the score and the job-status document show, and cleared by the next run, which refetches the
series."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from fake_polygon import FakePolygon
from test_trust import AS_OF, KEY, assert_store_equals_fresh_fetch, hold, settings_for

from enrichctl import service
from enrichctl.domain import AssetClass, Series, Timeframe, ms_to_iso
from enrichctl.errors import EXIT_OK
from enrichctl.verify import VerifyOptions, verify
from enrichctl.web import server as web

S00 = Series("S00", AssetClass.STOCK, Timeframe.D1)
AGAINST = VerifyOptions(against_provider=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakePolygon]:
    async with FakePolygon(api_key=KEY, page_size=5000) as server:
        yield server


async def stored_run(fake: FakePolygon, db, symbols=("S00", "S01"), **polygon):
    settings = settings_for(fake, db.url, list(symbols))
    if polygon:
        settings = settings.model_copy(update={"polygon": settings.polygon.model_copy(update=polygon)})
    await hold(fake, list(symbols), AS_OF)
    report = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    return settings


def execute(db, sql: str, **params) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def corrupt(db, ts: int, column: str, value) -> None:
    execute(db, f"UPDATE bars SET {column} = :v WHERE symbol = 'S00' AND timeframe = '1d' AND ts = :ts",
            v=value, ts=ts)


def series_doc(doc: dict, name: str) -> dict:
    return next(s for s in doc["series"] if s["series"] == name)


async def test_a_corrupted_field_is_named_recorded_and_repaired_by_the_next_run(fake, db):
    settings = await stored_run(fake, db)
    held = db.bars(S00)  # as the provider holds them
    ts = [int(t) for t in held.ts[[5, 10, 15, 20]]]
    corrupt(db, ts[0], "open", float(held.open[5]) + 0.01)
    corrupt(db, ts[1], "volume", float(held.volume[10]) + 1)
    corrupt(db, ts[2], "vwap", float(held.vwap[15]) * 2)
    corrupt(db, ts[3], "trades", int(held.trades[20]) + 7)
    score_before = db.scalar("SELECT quality_score FROM series WHERE symbol = 'S00'")
    before = len(fake.paths("/v2/aggs/ticker/"))

    doc = await verify(settings, None, AGAINST)

    assert not doc["ok"] and doc["provider"] == "polygon"
    s00, s01 = series_doc(doc, "S00/1d"), series_doc(doc, "S01/1d")
    assert s01["ok"] and s01["compared"] and s01["mismatches"] == []
    assert not s00["ok"] and s00["mismatched_bars"] == 4
    assert [(m["at"], m["field"]) for m in s00["mismatches"]] == [
        (ms_to_iso(ts[0]), "open"), (ms_to_iso(ts[1]), "volume"),
        (ms_to_iso(ts[2]), "vwap"), (ms_to_iso(ts[3]), "trades")]
    first = s00["mismatches"][0]
    assert (first["stored"], first["polygon"]) == (float(held.open[5]) + 0.01, float(held.open[5]))
    assert s00["mismatches"][3]["polygon"] == int(held.trades[20])
    # One request per stored series, through the provider's HTTP endpoint.
    assert len(fake.paths("/v2/aggs/ticker/")) - before == 2

    issues = db.dicts("SELECT symbol, timeframe, kind, severity, ts, detail FROM quality_issues "
                      "WHERE kind = 'provider_mismatch' ORDER BY ts")
    assert [(i["symbol"], i["timeframe"], i["ts"]) for i in issues] == [("S00", "1d", t) for t in ts]
    assert f"open stored {float(held.open[5]) + 0.01!r}, polygon {float(held.open[5])!r}" in issues[0]["detail"]
    assert all(i["severity"] == "error" for i in issues)
    # The score and the status documents show it.
    score_after = db.scalar("SELECT quality_score FROM series WHERE symbol = 'S00'")
    assert score_after < score_before
    print(f"S00: {len(held)} bars, score {score_before:.4f} -> {score_after:.4f} with 4 mismatching bars")
    async with service.session_open(settings) as session:
        overview = await session.overview(AS_OF)
        status = next(s for s in overview["processing_symbols"] if s["symbol"] == "S00")
        assert status["series"][0]["issues"] >= 4 and status["quality_score"] < score_before
        job = await session.job_status("S00", AS_OF)
        assert {i["kind"] for i in job["recent_issues"]} >= {"provider_mismatch"}
    async with TestClient(TestServer(web.app_create(settings))) as client:  # what serve answers
        response = await client.get("/api/v1/enrichment/dashboard/job-status/S00")
        served = await response.json()
        assert response.status == 200 and served["quality_score"] == pytest.approx(score_after, abs=1e-4)
        assert sum(i["kind"] == "provider_mismatch" for i in served["recent_issues"]) == 4

    # Verifying again records nothing twice.
    await verify(settings, "S00", AGAINST)
    assert db.scalar("SELECT count(*) FROM quality_issues WHERE kind = 'provider_mismatch'") == 4
    assert db.scalar("SELECT quality_score FROM series WHERE symbol = 'S00'") == pytest.approx(score_after)

    # The next run refetches the series whole: the values are repaired and the issues gone.
    report = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    assert {t.series.symbol: t.mode.value for t in report.plan.tasks} == {"S00": "full", "S01": "up_to_date"}
    assert db.scalar("SELECT count(*) FROM quality_issues WHERE kind = 'provider_mismatch'") == 0
    assert db.scalar("SELECT quality_score FROM series WHERE symbol = 'S00'") >= score_before
    assert await assert_store_equals_fresh_fetch(fake, db) == 2
    assert (await verify(settings, None, AGAINST))["ok"]


async def test_a_sample_refetches_n_ranges_through_the_shared_limiter(fake, db):
    settings = await stored_run(fake, db, ("S00", "S01", "S02", "S03"), requests_per_minute=1000)
    events = db.scalar("SELECT count(*) FROM rate_events")
    before = len(fake.paths("/v2/aggs/ticker/"))

    doc = await verify(settings, None, VerifyOptions(against_provider=True, sample=2, seed=7))

    assert doc["ok"] and doc["sample"] == {"ranges": 2, "of": 4, "seed": 7}
    compared = [s["series"] for s in doc["series"] if s["compared"]]
    assert len(compared) == 2
    assert len(fake.paths("/v2/aggs/ticker/")) - before == 2
    # Each refetch was admitted by the run's rate limiter (its window lives in the database).
    assert db.scalar("SELECT count(*) FROM rate_events") - events == 2
    assert db.scalar("SELECT count(*) FROM requests WHERE run_id IS NULL") == 2
    # The same seed picks the same ranges.
    again = await verify(settings, None, VerifyOptions(against_provider=True, sample=2, seed=7))
    assert [s["series"] for s in again["series"] if s["compared"]] == compared


async def test_a_bar_the_provider_no_longer_has_is_a_mismatch(fake, db):
    settings = await stored_run(fake, db, ("S00",))
    held = fake.held(S00)
    gone = int(held.ts[30])
    fake.hold(S00, held.take(held.ts != gone))

    doc = await verify(settings, "S00", AGAINST)

    mismatch = series_doc(doc, "S00/1d")["mismatches"]
    assert mismatch == [{"at": ms_to_iso(gone), "field": "bar", "stored": "present", "polygon": "missing"}]
    assert not doc["ok"]


async def test_recompute_mismatches_are_recorded_until_a_run_repairs_them(fake, db):
    settings = await stored_run(fake, db, ("S00",))
    ts = int(db.bars(S00).ts[-1])
    execute(db, "UPDATE indicators SET sma_20 = sma_20 + 1 WHERE symbol = 'S00' AND ts = :ts", ts=ts)

    doc = await verify(settings, "S00", VerifyOptions(recompute=True))

    assert not doc["ok"]
    issues = db.dicts("SELECT kind, ts, detail FROM quality_issues WHERE kind = 'indicator_mismatch'")
    assert len(issues) == 1 and issues[0]["ts"] == ts
    assert f"sma_20 at {ms_to_iso(ts)}: stored" in issues[0]["detail"]
    await verify(settings, "S00", VerifyOptions(recompute=True))
    assert db.scalar("SELECT count(*) FROM quality_issues WHERE kind = 'indicator_mismatch'") == 1

    report = await service.run(settings, service.RunOptions(as_of=AS_OF))
    assert service.exit_code_of(report) == EXIT_OK, report.doc()
    assert db.scalar("SELECT count(*) FROM quality_issues WHERE kind = 'indicator_mismatch'") == 0
    assert (await verify(settings, "S00", VerifyOptions(recompute=True)))["ok"]
    db.assert_indicators_are_full_compute(settings, S00)
