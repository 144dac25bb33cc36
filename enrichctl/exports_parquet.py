"""``export --format parquet``: one series to a file, or every stored series to a hive-partitioned
dataset, ``DIR/timeframe=1d/symbol=AAPL/part.parquet``, that pyarrow, polars and DuckDB
(``read_parquet('DIR/**/*.parquet', hive_partitioning=1)``) read back.

Columns: ``time`` (timestamp[us, UTC], the bar's start), float64 open, high, low, close, volume,
vwap, int64 trades, the indicator columns with ``--indicators``, then ``provider`` and
``synthetic``; a single file also has ``symbol`` and ``timeframe`` (in a dataset they are the
partition keys). zstd. Each file's key-value metadata ``enrichctl`` is a JSON document naming the
series, provider, first and last bar and when it was exported.

The dataset keeps ``DIR/_enrichctl_manifest.json`` (pyarrow skips files named ``_*``): each
series' stored version (``series_version``) and file. A re-run rewrites only series whose
version changed, whose file is gone or differs from what it wrote, or all of them when the
options changed; it removes the files of series no longer selected. Files are written under a
hidden name and renamed into place, the manifest last, so an interrupted export leaves a
readable dataset and the next run redoes what was missing.
"""

from __future__ import annotations

import functools
import json
import os
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from enrichctl.domain import Timeframe, ms_to_iso
from enrichctl.errors import ConfigError
from enrichctl.settings import Settings
from enrichctl.store.reads import StoreReads, reads_open

MANIFEST = "_enrichctl_manifest.json"
MANIFEST_FORMAT = 1
PART = "part.parquet"
TIME = pa.timestamp("us", tz="UTC")
# What changes whenever a series' stored data does: every write of bars or indicators goes
# through Store.series_commit, which moves last_success_at (and the counts, ends, provider).
VERSION_FIELDS = ("provider", "synthetic", "bar_count", "first_ts", "watermark", "last_success_at", "indicator_set")


@dataclass(frozen=True, slots=True)
class ParquetRequest:
    start: int | None
    end: int | None
    indicators: bool
    timeframe: Timeframe | None = None  # the dataset: only this timeframe (default: all)


@dataclass(slots=True)
class DatasetReport:
    written: list[str] = field(default_factory=list)  # "AAPL/1d"
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bars_written: int = 0

    def line(self, directory: Path) -> str:
        return (f"wrote {len(self.written)} series ({self.bars_written} bars) to {directory}; "
                f"{len(self.unchanged)} unchanged, {len(self.removed)} removed")


def series_version(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in VERSION_FIELDS}


def parquet_table(
    reads: StoreReads, row: dict[str, Any], request: ParquetRequest, *, keyed: bool
) -> pa.Table:
    """The series' rows as written: time first, provider and synthetic last (and, ``keyed``,
    symbol and timeframe first)."""
    bars = reads.bars_read(row["symbol"], row["timeframe"], request.start, request.end, request.indicators)
    n = bars.num_rows
    table = bars.set_column(0, pa.field("time", TIME, nullable=False),
                            pc.cast(bars.column("ts"), pa.timestamp("ms", tz="UTC")).cast(TIME))
    table = table.append_column("provider", pa.array([row["provider"]] * n, pa.string()))
    table = table.append_column("synthetic", pa.array([bool(row["synthetic"])] * n, pa.bool_()))
    if keyed:
        table = table.add_column(0, "timeframe", pa.array([row["timeframe"]] * n, pa.string()))
        table = table.add_column(0, "symbol", pa.array([row["symbol"]] * n, pa.string()))
    meta = {
        "symbol": row["symbol"], "timeframe": row["timeframe"], "asset_class": row["asset_class"],
        "provider": row["provider"], "synthetic": bool(row["synthetic"]), "bars": n,
        "first_bar": ms_to_iso(int(bars.column("ts")[0].as_py())) if n else None,
        "last_bar": ms_to_iso(int(bars.column("ts")[-1].as_py())) if n else None,
        "indicator_set": row["indicator_set"] if request.indicators else None,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "enrichctl": _version(),
    }
    return table.replace_schema_metadata({"enrichctl": json.dumps(meta)})


@functools.cache
def _version() -> str:
    return package_version("enrichctl")


def parquet_write(table: pa.Table, path: Path) -> int:
    """Write atomically (a hidden temporary name renamed into place); returns the file's size."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path.stat().st_size


def export_file(settings: Settings, symbol: str, timeframe: Timeframe, request: ParquetRequest, output: Path) -> int:
    """One series to one Parquet file; returns how many bars."""
    with reads_open(settings.database_url_resolved()) as reads:
        row = reads.series_row(symbol, timeframe.value)
        table = parquet_table(reads, row, request, keyed=True)
    parquet_write(table, output)
    return table.num_rows


def export_dataset(settings: Settings, directory: Path, request: ParquetRequest) -> DatasetReport:
    """Every stored series (of ``request.timeframe``) into the hive-partitioned dataset."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {directory}: {exc.strerror}") from None
    report = DatasetReport()
    with reads_open(settings.database_url_resolved()) as reads:
        options = _options(reads, request)
        before = _manifest_read(directory)
        previous = before["series"] if before.get("options") == options else {}
        rows = [r for r in reads.series_read().to_pylist()
                if r["bar_count"] and (request.timeframe is None or r["timeframe"] == request.timeframe.value)]
        entries: dict[str, dict[str, Any]] = {}
        with ThreadPoolExecutor(1, thread_name_prefix="enrichctl-parquet") as writer:
            # Read the next series while the previous one is compressed and written.
            pending: tuple[str, Future[int], dict[str, Any]] | None = None
            for row in rows:
                key, relative = f"{row['symbol']}/{row['timeframe']}", part_path(row)
                entry = {"path": relative, "version": series_version(row)}
                if _unchanged(previous.get(key), entry, directory):
                    entries[key] = previous[key]
                    report.unchanged.append(key)
                    continue
                table = parquet_table(reads, row, request, keyed=False)
                (directory / relative).parent.mkdir(parents=True, exist_ok=True)
                _finish(pending, entries, report)
                pending = (key, writer.submit(parquet_write, table, directory / relative),
                           {**entry, "bars": table.num_rows})
            _finish(pending, entries, report)
    for key, old in before.get("series", {}).items():
        if key not in entries:
            _remove_part(directory, old["path"])
            report.removed.append(key)
    _manifest_write(directory, {"format": MANIFEST_FORMAT, "options": options, "series": entries})
    return report


def _finish(pending: tuple[str, Future[int], dict[str, Any]] | None, entries: dict[str, dict[str, Any]],
            report: DatasetReport) -> None:
    if pending is None:
        return
    key, future, entry = pending
    entries[key] = {**entry, "size": future.result()}
    report.written.append(key)
    report.bars_written += entry["bars"]


def _unchanged(old: dict[str, Any] | None, entry: dict[str, Any], directory: Path) -> bool:
    if old is None or old.get("version") != entry["version"] or old.get("path") != entry["path"]:
        return False
    try:
        return (directory / old["path"]).stat().st_size == old.get("size")
    except OSError:
        return False


def part_path(row: dict[str, Any]) -> str:
    """``timeframe=1d/symbol=X%3ABTCUSD/part.parquet``: values URI-encoded, as pyarrow and
    DuckDB decode hive partition values."""
    quote = lambda v: urllib.parse.quote(v, safe="")  # noqa: E731
    return f"timeframe={quote(row['timeframe'])}/symbol={quote(row['symbol'])}/{PART}"


def _remove_part(directory: Path, relative: str) -> None:
    path = directory / relative
    path.unlink(missing_ok=True)
    for parent in (path.parent, path.parent.parent):  # symbol=, then timeframe= when empty
        try:
            parent.rmdir()
        except OSError:
            break


def _options(reads: StoreReads, request: ParquetRequest) -> dict[str, Any]:
    return {
        "start": request.start, "end": request.end,
        "timeframe": request.timeframe.value if request.timeframe else None,
        "indicators": list(reads.indicator_names) if request.indicators else None,
    }


def _manifest_read(directory: Path) -> dict[str, Any]:
    try:
        doc = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: everything is written again
    return doc if isinstance(doc, dict) and doc.get("format") == MANIFEST_FORMAT else {}


def _manifest_write(directory: Path, doc: dict[str, Any]) -> None:
    path = directory / MANIFEST
    temporary = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
