"""Where sessions live: a local directory (the embedded default) or S3 (shared by every worker).

A session is two objects, ``SYMBOL/YYYY-MM-DD.qrsdp`` and its manifest ``SYMBOL/YYYY-MM-DD.json``
(open, close, event count, configuration), optionally with a price plot ``YYYY-MM-DD.png``. The
manifest is written **last**: a session exists when its manifest does, and the next date reads its
opening price from it. On S3 the engine still writes to a local file (the worker's own folder) and
:meth:`S3SessionStore.publish` uploads the file, then the plot, then the manifest; a reader on
another worker fetches the file into its own folder when it needs the records
(:meth:`S3SessionStore.fetch`). Objects are named by symbol and date only, so publishing a session
again (a retry on another worker, a re-run) replaces it.

The S3 client is dagster-aws's (``dagster_aws.s3.S3Resource``), configured like the lake.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any, Protocol

from qrsdp_sim.engine.runner import session_path

MANIFEST_SUFFIX = ".json"
PLOT_SUFFIX = ".png"
MAX_MANIFEST_BYTES = 1 << 20
"""A manifest is a few kB; a larger object under a manifest's name is not read (bounded memory)."""


class SessionStoreError(RuntimeError):
    """A session object is unreadable (not JSON, too large) or cannot be fetched."""


class SessionStore(Protocol):
    def read_manifest(self, symbol: str, date: dt.date) -> dict[str, Any] | None: ...

    def publish(self, symbol: str, date: dt.date, manifest: dict[str, Any], plot: Path | None) -> None: ...

    def fetch(self, symbol: str, date: dt.date) -> Path: ...

    def location(self, symbol: str, date: dt.date, suffix: str = ".qrsdp") -> str: ...


def _parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise SessionStoreError(
            f"{where}: {len(raw):,} bytes is not a session manifest (limit {MAX_MANIFEST_BYTES:,})"
        )
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise SessionStoreError(
            f"{where}: not a JSON manifest ({exc}); re-materialise that session"
        ) from None
    if not isinstance(manifest, dict) or "close_ticks" not in manifest:
        raise SessionStoreError(
            f"{where}: not a session manifest (no close_ticks); re-materialise that session"
        )
    return manifest


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)


class LocalSessionStore:
    """Sessions in a directory: the engine writes the file in place; the manifest is renamed in last."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def local_file(self, symbol: str, date: dt.date) -> Path:
        return session_path(self.root, symbol, date)

    def location(self, symbol: str, date: dt.date, suffix: str = ".qrsdp") -> str:
        return str(self.local_file(symbol, date).with_suffix(suffix))

    def read_manifest(self, symbol: str, date: dt.date) -> dict[str, Any] | None:
        path = self.local_file(symbol, date).with_suffix(MANIFEST_SUFFIX)
        if not path.is_file():
            return None
        return _parse_manifest(path.read_bytes(), str(path))

    def publish(self, symbol: str, date: dt.date, manifest: dict[str, Any], plot: Path | None) -> None:
        write_json_atomically(self.local_file(symbol, date).with_suffix(MANIFEST_SUFFIX), manifest)

    def fetch(self, symbol: str, date: dt.date) -> Path:
        return self.local_file(symbol, date)


class S3SessionStore:
    """Sessions under ``s3://bucket/prefix/SYMBOL/YYYY-MM-DD.*``; local copies under ``cache_dir``."""

    def __init__(self, client: Any, bucket: str, prefix: str, cache_dir: Path):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache_dir = Path(cache_dir)

    @classmethod
    def from_uri(cls, uri: str, client: Any, cache_dir: Path) -> S3SessionStore:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"sessions URI {uri!r}: expected s3://bucket[/prefix]")
        return cls(client, bucket, prefix, cache_dir)

    def key(self, symbol: str, date: dt.date, suffix: str = ".qrsdp") -> str:
        name = session_path("", symbol, date).with_suffix(suffix).as_posix()
        return f"{self.prefix}/{name}" if self.prefix else name

    def location(self, symbol: str, date: dt.date, suffix: str = ".qrsdp") -> str:
        return f"s3://{self.bucket}/{self.key(symbol, date, suffix)}"

    def local_file(self, symbol: str, date: dt.date) -> Path:
        return session_path(self.cache_dir, symbol, date)

    def read_manifest(self, symbol: str, date: dt.date) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        key = self.key(symbol, date, MANIFEST_SUFFIX)
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        if int(obj.get("ContentLength", 0)) > MAX_MANIFEST_BYTES:
            obj["Body"].close()
            raise SessionStoreError(
                f"s3://{self.bucket}/{key}: {obj['ContentLength']:,} bytes is not a manifest"
            )
        return _parse_manifest(obj["Body"].read(), f"s3://{self.bucket}/{key}")

    def publish(self, symbol: str, date: dt.date, manifest: dict[str, Any], plot: Path | None) -> None:
        """Upload the file (and plot), then the manifest: a reader that sees the manifest finds the file."""
        local = self.local_file(symbol, date)
        self.client.upload_file(str(local), self.bucket, self.key(symbol, date))
        if plot is not None and plot.is_file():
            self.client.upload_file(str(plot), self.bucket, self.key(symbol, date, PLOT_SUFFIX))
        body = (json.dumps(manifest, indent=2) + "\n").encode()
        self.client.put_object(Bucket=self.bucket, Key=self.key(symbol, date, MANIFEST_SUFFIX), Body=body)
        write_json_atomically(local.with_suffix(MANIFEST_SUFFIX), manifest)

    def fetch(self, symbol: str, date: dt.date) -> Path:
        """A local copy of the session's file: kept when it has the manifest's size, else downloaded
        (to a temporary name, then renamed). A missing session gives a path that does not exist."""
        local = self.local_file(symbol, date)
        manifest = self.read_manifest(symbol, date)
        if manifest is None:
            return local
        if local.is_file() and local.stat().st_size == int(manifest.get("file_bytes", -1)):
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.part")
        try:
            self.client.download_file(self.bucket, self.key(symbol, date), str(tmp))
            os.replace(tmp, local)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise SessionStoreError(f"could not fetch {self.location(symbol, date)}: {exc}") from exc
        return local
