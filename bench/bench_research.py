"""Research access: ``enrichctl.open().bars()`` and ``export --all --format parquet`` on a million bars.

Builds SQLite databases through the store (the real schema) and fills them with raw ``sqlite3``:
one 1m series of N bars with an indicator column (default 1,000,000), and the same number of
bars spread over S hourly series (default 20 x 50,000). Then, in this process, best of R:

- ``bars()`` of the N-bar series (the reader already open, as in a notebook), against the floor
  the issue names: stdlib ``sqlite3`` fetching the same rows and
  ``pandas.DataFrame.from_records``. Target: within 1.5x.
- ``export --all --format parquet`` (``exports_parquet.export_dataset`` into an empty directory:
  reading every series and writing the zstd dataset), against pyarrow writing the same table
  (the rows the export writes, read beforehand and not timed) as the same hive-partitioned zstd
  dataset with ``pyarrow.dataset.write_dataset``. Target: within 2x. Also shown: the bare
  ``pyarrow.parquet.write_table`` of each series' file, a re-run with nothing changed (the
  manifest), and the installed CLI as a process (start-up included).

Timings are printed, never asserted.

    python bench/bench_research.py [--bars 1000000] [--series 20] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from bench_bars import fill as fill_minutes
from bench_serve import _env, config_write, data_fill, schema_create

import enrichctl
from enrichctl import exports_parquet
from enrichctl.settings import settings_load
from enrichctl.store.reads import reads_open

FRAME_TARGET = 1.5
EXPORT_TARGET = 2.0
COLUMNS = ["ts", "open", "high", "low", "close", "volume", "vwap", "trades"]
FLOOR_SQL = ("SELECT ts, open, high, low, close, volume, vwap, trades FROM bars "
             "WHERE symbol = 'X:BTCUSD' AND timeframe = '1m' ORDER BY ts")


def best(repeat: int, work: Callable[[], Any], before: Callable[[], None] | None = None) -> float:
    seconds = float("inf")
    for _ in range(repeat):
        if before is not None:
            before()
        began = time.perf_counter()
        work()
        seconds = min(seconds, time.perf_counter() - began)
    return seconds


def database(directory: Path, fill: Callable[[Path], Any], symbols: list[str]) -> Path:
    directory.mkdir()
    db = directory / "bench.db"
    config = config_write(directory, db, symbols)
    schema_create(config)
    fill(db)
    return config


def frame_figures(config: Path, repeat: int) -> dict[str, float]:
    db = settings_load(config).database_url_resolved().removeprefix("sqlite:///")

    def floor() -> pd.DataFrame:
        conn = sqlite3.connect(db)
        try:
            return pd.DataFrame.from_records(conn.execute(FLOOR_SQL).fetchall(), columns=COLUMNS)
        finally:
            conn.close()

    with enrichctl.open(config=config) as reader:
        rows = len(reader.bars("X:BTCUSD", "1m"))
        figures = {
            "rows": rows,
            "floor": best(repeat, floor),
            "bars": best(repeat, lambda: reader.bars("X:BTCUSD", "1m")),
            "bars_indicators": best(repeat, lambda: reader.bars("X:BTCUSD", "1m", indicators=True)),
        }
    figures["open_and_bars"] = best(repeat, lambda: _open_and_read(config))
    return figures


def _open_and_read(config: Path) -> None:
    with enrichctl.open(config=config) as reader:
        reader.bars("X:BTCUSD", "1m")


def export_figures(config: Path, work: Path, repeat: int) -> dict[str, float]:
    settings = settings_load(config)
    request = exports_parquet.ParquetRequest(None, None, indicators=False)
    with reads_open(settings.database_url_resolved()) as reads:
        rows = [r for r in reads.series_read().to_pylist() if r["bar_count"]]
        tables = [exports_parquet.parquet_table(reads, r, request, keyed=False) for r in rows]
    keyed = pa.concat_tables([
        t.append_column("timeframe", pa.array([r["timeframe"]] * t.num_rows)).append_column(
            "symbol", pa.array([r["symbol"]] * t.num_rows))
        for r, t in zip(rows, tables, strict=True)])
    out = work / "out"
    fresh = lambda: shutil.rmtree(out, ignore_errors=True)  # noqa: E731
    zstd = pads.ParquetFileFormat().make_write_options(compression="zstd")

    def pyarrow_dataset() -> None:
        pads.write_dataset(keyed, out, format="parquet", file_options=zstd, partitioning=["timeframe", "symbol"],
                           partitioning_flavor="hive", existing_data_behavior="overwrite_or_ignore")

    def pyarrow_files() -> None:
        for r, t in zip(rows, tables, strict=True):
            path = out / exports_parquet.part_path(r)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, path, compression="zstd")

    figures = {
        "bars": keyed.num_rows,
        "series": len(rows),
        "pyarrow_write_dataset": best(repeat, pyarrow_dataset, fresh),
        "pyarrow_write_table": best(repeat, pyarrow_files, fresh),
        "export": best(repeat, lambda: exports_parquet.export_dataset(settings, out, request), fresh),
        "export_unchanged": best(repeat, lambda: exports_parquet.export_dataset(settings, out, request)),
    }
    fresh()
    began = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("enrichctl")), "export", "--all", "--format", "parquet",
                    "-o", str(out)], env=_env(config), check=True, capture_output=True)
    figures["cli_export"] = time.perf_counter() - began
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="enrichctl-bench-research-") as tmp:
        root = Path(tmp)
        one = database(root / "one", lambda db: fill_minutes(db, args.bars), ["X:BTCUSD"])
        symbols = [f"S{i:03d}" for i in range(args.series)]
        many = database(root / "many", lambda db: data_fill(db, symbols, args.bars // args.series, 1,
                                                            int(time.time() * 1000)), symbols)
        doc = {
            "frame": frame_figures(one, args.repeat),
            "export_one_series": export_figures(one, root / "one", args.repeat),
            "export_many_series": export_figures(many, root / "many", args.repeat),
        }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    report(doc)
    return 0


def report(doc: dict[str, dict[str, float]]) -> None:
    f = doc["frame"]
    ratio = f["bars"] / f["floor"]
    print(f"bars() of one 1m series, {f['rows']:,} rows (SQLite)")
    print(f"  floor: sqlite3 fetchall + DataFrame.from_records  {f['floor'] * 1000:8.0f} ms")
    print(f"  bars()                                           {f['bars'] * 1000:8.0f} ms  {ratio:5.2f}x floor"
          f"  {'ok' if ratio <= FRAME_TARGET else 'OVER TARGET'} (target {FRAME_TARGET}x)")
    print(f"  bars(indicators=True)                            {f['bars_indicators'] * 1000:8.0f} ms  "
          f"{f['bars_indicators'] / f['floor']:5.2f}x floor")
    print(f"  open() + bars() + close()                        {f['open_and_bars'] * 1000:8.0f} ms  "
          f"{f['open_and_bars'] / f['floor']:5.2f}x floor")
    for key in ("export_one_series", "export_many_series"):
        e = doc[key]
        base = e["pyarrow_write_dataset"]
        ratio = e["export"] / base
        print(f"export --all --format parquet: {e['series']} series, {e['bars']:,} bars")
        print(f"  pyarrow write_dataset of the same table (hive, zstd) {base * 1000:8.0f} ms")
        print(f"  export (read the store + write the dataset)          {e['export'] * 1000:8.0f} ms  {ratio:5.2f}x"
              f"  {'ok' if ratio <= EXPORT_TARGET else 'OVER TARGET'} (target {EXPORT_TARGET}x)")
        print(f"  pyarrow write_table of each series' file            {e['pyarrow_write_table'] * 1000:8.0f} ms  "
              f"(export {e['export'] / e['pyarrow_write_table']:4.2f}x)")
        print(f"  export again, nothing changed (manifest)            {e['export_unchanged'] * 1000:8.0f} ms")
        print(f"  the CLI as a process (start-up included, once)      {e['cli_export'] * 1000:8.0f} ms  "
              f"{e['cli_export'] / base:5.2f}x")


if __name__ == "__main__":
    sys.exit(main())
