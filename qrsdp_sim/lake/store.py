"""The Parquet lake: where it is (local directory or S3 bucket) and how partitions are laid out.

One code path for both: a :class:`Lake` is a ``pyarrow.fs`` filesystem plus a root
path inside it, resolved from a URI:

* ``file:///abs/dir``, ``/abs/dir`` or ``rel/dir`` -> ``LocalFileSystem``
* ``s3://bucket/prefix`` -> ``S3FileSystem`` (endpoint, keys and region from :class:`S3Options`,
  e.g. a local MinIO at ``http://127.0.0.1:9000``)

Layout (hive partitioning, one directory per symbol and trading date)::

    <root>/raw/<table>/symbol=<SYM>/date=<YYYY-MM-DD>/part-00000.parquet
                                                    /part-00001.parquet ...
                                                    /_SUCCESS

Object names are deterministic, so landing a partition again replaces it. A partition
is *complete* once its ``_SUCCESS`` marker (a small JSON document with the row count)
exists; the marker is deleted first and written last by every landing, so a reader
that trusts only marked partitions never sees a half-landed one.

Every marker is also *announced* once written: a copy goes to an append-only landing log,
``<root>/raw/_landings/<table>/<YYYY-MM-DDTHH>/<landed_at>_<symbol>_<date>.json`` (the hour of
``landed_at``, UTC). A watcher (the Dagster landing sensor) lists only the hours since its
cursor, so its work per check is proportional to what was landed since, not to the lake.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

MARKER_NAME = "_SUCCESS"
TABLES = ("events", "book_states", "sessions")
LANDINGS_DIR = "_landings"
_log = logging.getLogger(__name__)
# Parquet layout of every table the lake writes (and the Kafka consumer's objects): columns that
# grow along the session (seq, timestamps, order ids) delta-encoded, every other column (symbol,
# date, types, prices, sizes, flags, _landed_at: few distinct values) dictionary-encoded, LZ4
# pages. Measured on a full realistic session (2.6 M events): half the writer's CPU of the
# default (dictionary everywhere, zstd), files 20-30 % smaller, DuckDB and pyarrow read them
# 40 % faster (docs/data-platform.md, issue 13 third pass).
PARQUET_COMPRESSION = "lz4"
DELTA_COLUMNS = ("seq", "ts_ns", "order_id")


def parquet_encoding(column_names: list[str]) -> dict:
    """``pq.write_table`` keywords of the lake's layout for a table with these columns."""
    return {
        "use_dictionary": [c for c in column_names if c not in DELTA_COLUMNS],
        "column_encoding": {c: "DELTA_BINARY_PACKED" for c in column_names if c in DELTA_COLUMNS},
    }


_PART_RE = re.compile(r"symbol=([^/]+)/date=(\d{4}-\d{2}-\d{2})$")


class LakeError(RuntimeError):
    """A lake partition is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class S3Options:
    """Connection settings for an ``s3://`` lake (ignored for local lakes)."""

    endpoint: str | None = None  # e.g. "http://127.0.0.1:9000"; None = AWS
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    region: str = "us-east-1"

    def _parsed(self):
        text = self.endpoint or ""
        return urlparse(text if "://" in text else f"https://{text}")

    @property
    def scheme(self) -> str:
        """``http`` or ``https`` (an endpoint without a scheme means https)."""
        return self._parsed().scheme if self.endpoint else "https"

    @property
    def host(self) -> str | None:
        """``host:port`` of the endpoint, without the scheme (None: the AWS default)."""
        return self._parsed().netloc if self.endpoint else None


@dataclass(frozen=True)
class PartitionMarker:
    """The ``_SUCCESS`` document of one complete partition."""

    table: str
    symbol: str
    date: dt.date
    rows: int
    files: tuple[str, ...]
    landed_at: str  # ISO-8601 UTC
    extra: dict = field(default_factory=dict)

    @property
    def partition_key(self) -> tuple[str, str]:
        return self.symbol, self.date.isoformat()

    def to_json(self) -> str:
        return json.dumps(
            {
                "table": self.table,
                "symbol": self.symbol,
                "date": self.date.isoformat(),
                "rows": self.rows,
                "files": list(self.files),
                "landed_at": self.landed_at,
                **self.extra,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> PartitionMarker:
        d = json.loads(text)
        known = {"table", "symbol", "date", "rows", "files", "landed_at"}
        return cls(
            table=d["table"],
            symbol=d["symbol"],
            date=dt.date.fromisoformat(d["date"]),
            rows=int(d["rows"]),
            files=tuple(d["files"]),
            landed_at=d["landed_at"],
            extra={k: v for k, v in d.items() if k not in known},
        )


class Lake:
    """A Parquet lake rooted at ``root`` inside ``fs``."""

    def __init__(self, fs: pafs.FileSystem, root: str, uri: str, s3: S3Options | None = None) -> None:
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.uri = uri
        self.s3 = s3

    @classmethod
    def from_uri(cls, uri: str | os.PathLike[str], s3: S3Options | None = None) -> Lake:
        text = os.fspath(uri)
        parsed = urlparse(text)
        if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
            path = unquote(parsed.path) if parsed.scheme == "file" else text
            if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
                raise ValueError(f"file URI with a host is not supported: {text!r}")
            local = Path(path).expanduser().resolve()
            return cls(pafs.LocalFileSystem(), local.as_posix(), local.as_uri())
        if parsed.scheme in ("s3", "s3a"):
            if not parsed.netloc:
                raise ValueError(f"S3 lake URI needs a bucket: {text!r}")
            opts = s3 or S3Options()
            fs = pafs.S3FileSystem(
                access_key=opts.access_key,
                secret_key=opts.secret_key,
                region=opts.region,
                endpoint_override=opts.host,
                scheme=opts.scheme,
                allow_bucket_creation=True,
            )
            root = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
            return cls(fs, root, f"s3://{root}", opts)
        raise ValueError(
            f"unsupported lake URI {text!r}: use file://..., a local path, or s3://bucket/prefix"
        )

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def query_root(self) -> str:
        """The root as DuckDB (or any engine) addresses it: a local path or ``s3://bucket/prefix``."""
        return self.root if self.is_local else f"s3://{self.root}"

    # -- layout -----------------------------------------------------------
    def table_dir(self, table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown lake table {table!r} (known: {', '.join(TABLES)})")
        return posixpath.join(self.root, "raw", table)

    def partition_dir(self, table: str, symbol: str, date: dt.date | str) -> str:
        day = date if isinstance(date, str) else date.isoformat()
        return posixpath.join(self.table_dir(table), f"symbol={symbol}", f"date={day}")

    def marker_path(self, table: str, symbol: str, date: dt.date | str) -> str:
        return posixpath.join(self.partition_dir(table, symbol, date), MARKER_NAME)

    # -- writing ----------------------------------------------------------
    def write_partition(
        self,
        table: str,
        symbol: str,
        date: dt.date,
        data: pa.Table,
        *,
        rows_per_file: int = 4_000_000,
        row_group_size: int = 1_048_576,
        compression: str = PARQUET_COMPRESSION,
        marker_extra: dict | None = None,
        landed_at: str | None = None,
    ) -> PartitionMarker:
        """Replace the partition's files with ``data`` and mark it complete.

        Steps: delete the marker; delete every existing file in the partition;
        write ``part-00000.parquet``, ``part-00001.parquet`` ... (``rows_per_file`` rows
        each); write the marker. Re-landing the same data yields the same objects.
        """
        if rows_per_file < 1:
            raise ValueError("rows_per_file must be >= 1")
        pdir = self.partition_dir(table, symbol, date)
        self._delete_file(posixpath.join(pdir, MARKER_NAME))
        self.fs.create_dir(pdir, recursive=True)
        for info in self.fs.get_file_info(pafs.FileSelector(pdir, allow_not_found=True)):
            if info.type == pafs.FileType.File:
                self.fs.delete_file(info.path)
        names: list[str] = []
        n = data.num_rows
        for k, lo in enumerate(range(0, max(n, 1), rows_per_file)):
            name = f"part-{k:05d}.parquet"
            self._write_parquet(
                data.slice(lo, rows_per_file), posixpath.join(pdir, name), row_group_size, compression
            )
            names.append(name)
        marker = PartitionMarker(
            table=table,
            symbol=symbol,
            date=date,
            rows=n,
            files=tuple(names),
            landed_at=landed_at or utc_now_iso(),
            extra=marker_extra or {},
        )
        self._write_bytes(posixpath.join(pdir, MARKER_NAME), marker.to_json().encode())
        self.announce(marker)
        return marker

    # -- landing log ------------------------------------------------------
    def landings_dir(self, table: str, hour: str | None = None) -> str:
        """``raw/_landings/<table>`` (or one hour of it, ``YYYY-MM-DDTHH``)."""
        base = posixpath.join(self.table_dir(table).rsplit("/", 1)[0], LANDINGS_DIR, table)
        return base if hour is None else posixpath.join(base, hour)

    def announce(self, marker: PartitionMarker) -> str:
        """Add a written marker to the landing log (call right after writing the marker)."""
        stamp = dt.datetime.fromisoformat(marker.landed_at).astimezone(dt.UTC)
        name = f"{stamp.strftime('%Y%m%dT%H%M%S%f')}_{marker.symbol}_{marker.date.isoformat()}.json"
        path = posixpath.join(self.landings_dir(marker.table, landing_hour(stamp)), name)
        if self.is_local:  # on S3 the prefix is the directory: no directory objects
            self.fs.create_dir(posixpath.dirname(path), recursive=True)
        self._write_bytes(path, marker.to_json().encode())
        return path

    def landings(self, table: str, hour: str, after: str = "") -> list[tuple[str, PartitionMarker]]:
        """(name, marker) of the landing log entries of ``hour`` whose name sorts after ``after``,
        in name (= landing time) order. Unreadable entries are skipped (and named in the log)."""
        selector = pafs.FileSelector(self.landings_dir(table, hour), allow_not_found=True)
        names = sorted(
            i.base_name
            for i in self.fs.get_file_info(selector)
            if i.type == pafs.FileType.File and i.base_name.endswith(".json") and i.base_name > after
        )
        out = []
        for name in names:
            try:
                with self.fs.open_input_stream(posixpath.join(self.landings_dir(table, hour), name)) as fh:
                    out.append((name, PartitionMarker.from_json(fh.read())))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                _log.warning("landing log %s/%s/%s unreadable, skipped: %s", table, hour, name, exc)
        return out

    def delete_partition(self, table: str, symbol: str, date: dt.date | str) -> None:
        pdir = self.partition_dir(table, symbol, date)
        self._delete_file(posixpath.join(pdir, MARKER_NAME))
        if self.fs.get_file_info(pdir).type == pafs.FileType.Directory:
            self.fs.delete_dir(pdir)

    def _write_parquet(self, data: pa.Table, path: str, row_group_size: int, compression: str) -> None:
        options = {
            "filesystem": self.fs,
            "row_group_size": row_group_size,
            "compression": compression,
            **parquet_encoding(data.column_names),
        }
        if self.is_local:
            # publish by rename so a reader never sees a half-written file under its final name
            tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp")
            pq.write_table(data, tmp, **options)
            self.fs.move(tmp, path)
        else:
            pq.write_table(data, path, **options)

    def _write_bytes(self, path: str, payload: bytes) -> None:
        if self.is_local:
            tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp")
            with self.fs.open_output_stream(tmp) as out:
                out.write(payload)
            self.fs.move(tmp, path)
        else:
            with self.fs.open_output_stream(path) as out:
                out.write(payload)

    def _delete_file(self, path: str) -> None:
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)

    # -- reading ----------------------------------------------------------
    def read_marker(self, table: str, symbol: str, date: dt.date | str) -> PartitionMarker | None:
        path = self.marker_path(table, symbol, date)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as fh:
            return PartitionMarker.from_json(fh.read())

    def complete_partitions(self, table: str) -> list[PartitionMarker]:
        """Every partition of ``table`` whose ``_SUCCESS`` marker exists, sorted by (symbol, date)."""
        base = self.table_dir(table)
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        out = []
        for info in infos:
            if info.type != pafs.FileType.File or info.base_name != MARKER_NAME:
                continue
            m = _PART_RE.search(posixpath.dirname(info.path))
            if not m:
                continue
            with self.fs.open_input_stream(info.path) as fh:
                out.append(PartitionMarker.from_json(fh.read()))
        return sorted(out, key=lambda mk: (mk.symbol, mk.date))

    def read_partition(
        self,
        table: str,
        symbol: str,
        date: dt.date | str,
        *,
        require_marker: bool = True,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """All rows of one partition (every ``*.parquet`` file in it; only ``columns`` if given)."""
        if require_marker and self.read_marker(table, symbol, date) is None:
            raise LakeError(
                f"lake partition {table} symbol={symbol} date={date} is not complete "
                f"(no {MARKER_NAME} under {self.partition_dir(table, symbol, date)}): land it first"
            )
        pdir = self.partition_dir(table, symbol, date)
        files = sorted(
            i.path
            for i in self.fs.get_file_info(pafs.FileSelector(pdir, allow_not_found=True))
            if i.type == pafs.FileType.File
            and i.base_name.endswith(".parquet")
            and not i.base_name.startswith(".")
        )
        if not files:
            raise LakeError(f"lake partition {table} symbol={symbol} date={date} has no Parquet files")
        return pa.concat_tables([pq.read_table(f, filesystem=self.fs, columns=columns) for f in files])

    def partition_bytes(self, table: str, symbol: str, date: dt.date | str) -> int:
        pdir = self.partition_dir(table, symbol, date)
        return sum(
            i.size or 0
            for i in self.fs.get_file_info(pafs.FileSelector(pdir, allow_not_found=True))
            if i.type == pafs.FileType.File
        )


def landing_hour(moment: dt.datetime) -> str:
    """The landing log's bucket of a UTC moment: ``YYYY-MM-DDTHH``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H")


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
