"""Keep numba's on-disk cache in step with the source: one cache folder per source digest.

numba caches a compiled function next to its source file and invalidates it only when *that*
file changes. The event loop inlines functions from several modules (book, models, sizes,
decorators), so an edit to one of them would silently keep running the old machine code from a
stale cache. Pointing ``NUMBA_CACHE_DIR`` at a folder named after a digest of every module of the
package makes any source change start from a fresh cache, while an unchanged installation keeps
loading its compiled code from disk (start-up stays fast).

An explicit ``NUMBA_CACHE_DIR`` in the environment is respected.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@functools.cache
def source_digest() -> str:
    """A digest of every ``.py`` file of the package: names, sizes and modification times (a stat
    per file, no reads, so import stays cheap; any edit changes the time)."""
    h = hashlib.blake2b(digest_size=8)
    for path in sorted(_PACKAGE.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(_PACKAGE).as_posix()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def configure() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qrsdp" / "numba"
    target = str(base / source_digest())
    os.environ["NUMBA_CACHE_DIR"] = target
    numba = sys.modules.get("numba")
    if numba is not None:  # already imported: its config read the environment then
        numba.config.CACHE_DIR = target
