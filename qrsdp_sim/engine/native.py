"""The engine's native library: numba's machine code for the four Python-called compiled functions,
saved as shared libraries and loaded with ``ctypes``, so a run needs no numba at all.

Why: numba's import and the set-up of its registries before the first cached function loads cost
≈ 0.25-0.3 s per process, 7 % of the headline ``qrsdp run`` (46.6 M records in under 4 s). The code
itself is numba's: for each entry point (``entry_points.py``) a C-callable wrapper is compiled with
``numba.cfunc`` around the very dispatcher the engine uses, with the argument types numba inferred in
a warm-up session. The wrapper takes each array as a pointer and its shape and rebuilds the same array
type (layout, alignment) inside. LLVM turns the wrapper's whole module, the engine's code included,
into position-independent machine code for this CPU, and the system's C compiler links it into one
``.so`` per entry point, with a few lines of C standing in for numba's error-path helpers. Calls go
through ``ctypes``, which releases the GIL as numba's ``nogil`` does.

The libraries live in ``$XDG_CACHE_HOME/qrsdp/native/<key>`` (default ``~/.cache``); the key
covers the package's source digest (as numba's cache does, ``_numba_cache.py``), numba's and
llvmlite's installation, the Python version and the CPU, so any change builds afresh. ``warm_up``
builds them after its numba warm-up when they are missing (once per source and machine, a few
seconds); without a C compiler, or with ``QRSDP_NATIVE_KERNEL=0``, everything stays on numba. A
library that does not load (damaged, foreign) is reported once and numba is used instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 2  # 2: each library's digest in the manifest
ENV_SWITCH = "QRSDP_NATIVE_KERNEL"
MANIFEST = "manifest.json"
# name -> (module, attribute) of the numba dispatcher behind each entry point
ENTRY_POINTS: dict[str, tuple[str, str]] = {
    "open_book": ("qrsdp_sim.engine.book", "open_book"),
    "run_kernel": ("qrsdp_sim.engine.kernel", "run_kernel"),
    "count_types": ("qrsdp_sim.engine.kernel", "count_types"),
    "ar1": ("qrsdp_sim.engine.clock", "ar1"),
}
_RETURN_SLOTS = 2  # ret[0], ret[1]: the function's integer results; ret[2] = 1 once it returned

# numba's error-path helpers, which the compiled code references (they only run if the code raises,
# which the engine's functions do not; ``error_model="numpy"``, no bounds checks). They set a Python
# RuntimeError instead of rebuilding numba's exception; the wrapper then never sets its done flag
# and the Python side raises.
_SHIM_C = r"""
#include <stdlib.h>
typedef int PyGILState_STATE;
extern PyGILState_STATE PyGILState_Ensure(void);
extern void PyGILState_Release(PyGILState_STATE);
extern void PyErr_SetString(void *, const char *);
extern void *PyExc_RuntimeError;
static const char MSG[] = "qrsdp native kernel: the compiled code raised (run with QRSDP_NATIVE_KERNEL=0 for numba's message)";
void numba_gil_ensure(PyGILState_STATE *state) { *state = PyGILState_Ensure(); }
void numba_gil_release(PyGILState_STATE *state) { PyGILState_Release(*state); }
int numba_do_raise(void *exc) { (void)exc; PyErr_SetString(PyExc_RuntimeError, MSG); return 0; }
void *numba_unpickle(const char *d, int n, const char *h) { (void)d; (void)n; (void)h; PyErr_SetString(PyExc_RuntimeError, MSG); return NULL; }
void *numba_runtime_build_excinfo_struct(void *g, void *a) { (void)g; (void)a; PyErr_SetString(PyExc_RuntimeError, MSG); return NULL; }
void NRT_Free(void *p) { free(p); }
void NRT_MemInfo_call_dtor(void *mi) { (void)mi; }
"""


class NativeError(RuntimeError):
    """The native library could not be built or called."""


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip() not in ("0", "false", "no", "off")


def _installation(package: str) -> str:
    spec = find_spec(package)
    if spec is None or spec.origin is None:
        return f"{package}:missing"
    st = os.stat(spec.origin)
    return f"{package}:{spec.origin}:{st.st_mtime_ns}"


def _cpu() -> str:
    """The CPU model and feature flags (the code is compiled for this CPU)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        import platform

        return platform.machine()
    first = text.split("\n\n", 1)[0]
    return ";".join(
        line for line in first.splitlines() if line.startswith(("model name", "flags", "vendor_id"))
    )


def cache_key() -> str:
    from qrsdp_sim._numba_cache import source_digest

    parts = [
        f"format {FORMAT}",
        source_digest(),
        _installation("numba"),
        _installation("llvmlite"),
        sys.version,
        _cpu(),
    ]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=10).hexdigest()


def library_dir(key: str | None = None) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qrsdp" / "native"
    return base / (key or cache_key())


# ------------------------------------------------------------------------------ loading


_C_SCALARS = {"i": ctypes.c_int64, "u": ctypes.c_uint64, "f": ctypes.c_double}


@dataclass(frozen=True)
class _Arg:
    kind: str  # "a" array, "i" int64, "u" uint64, "f" float64
    dtype: np.dtype | None = None
    ndim: int = 0


_NO_BYTES = ctypes.c_char * 0


def _address(array: np.ndarray) -> int:
    """The data address of a C-contiguous array: through the buffer protocol where the array is
    writable (a structured array as bytes: numpy would build its format string), else numpy's ctypes
    helper, which is 2-3 times slower."""
    if array.flags.writeable:
        return ctypes.addressof(_NO_BYTES.from_buffer(array.view(np.uint8) if array.dtype.names else array))
    return array.ctypes.data


class _CallState(threading.local):
    """Per thread: the arrays of the previous call with their flattened form, and the result slots."""

    def __init__(self, n_args: int) -> None:
        self.arrays: list[Any] = [None] * n_args
        self.parts: list[tuple[int, ...]] = [()] * n_args
        self.ret = np.zeros(_RETURN_SLOTS + 1, dtype=np.int64)
        self.ret_address = self.ret.ctypes.data


class NativeFunction:
    """One entry point: checks and flattens the arguments, calls, returns what the function returned.

    An array that is the very object of this thread's previous call, with the same shape and dtype,
    reuses its flattened form (address and shape): the book, the generator and the parameters pass
    through every batch unchanged, so only the new output buffers are looked at again. The calls
    from Python then cost about what numba's dispatcher costs."""

    def __init__(self, name: str, fn: Any, args: list[_Arg], returns: int) -> None:
        self.name = name
        self._fn = fn
        self._args = args
        self._returns = returns  # -1: None, 0: one int, 2: a pair of ints
        self._state = _CallState(len(args))

    def _array(self, i: int, arg: _Arg, value: Any) -> tuple[int, ...]:
        if not (
            isinstance(value, np.ndarray)
            and value.dtype == arg.dtype
            and value.ndim == arg.ndim
            and value.flags.c_contiguous
        ):
            raise TypeError(
                f"{self.name}: argument {i} must be a C-contiguous {arg.ndim}-d array of {arg.dtype}, "
                f"got {type(value).__name__} {getattr(value, 'dtype', '')} {getattr(value, 'shape', '')}"
            )
        return (_address(value), *value.shape)

    def __call__(self, *values: Any) -> Any:
        args = self._args
        if len(values) != len(args):
            raise TypeError(f"{self.name}: expected {len(args)} arguments, got {len(values)}")
        state = self._state
        arrays, parts = state.arrays, state.parts
        flat: list[Any] = []
        for i, value in enumerate(values):
            arg = args[i]
            kind = arg.kind
            if kind == "a":
                seen = arrays[i]
                part = parts[i]
                if value is not seen or value.shape != part[1:] or value.dtype is not seen.dtype:
                    part = parts[i] = self._array(i, arg, value)
                    arrays[i] = value
                flat.extend(part)
            elif kind == "f":
                flat.append(float(value))
            else:
                flat.append(int(value))
        ret = state.ret
        ret[_RETURN_SLOTS] = 0
        flat.append(state.ret_address)
        self._fn(*flat)
        if ret[_RETURN_SLOTS] != 1:
            raise NativeError(f"{self.name}: the native code did not return (see the message above)")
        if self._returns == -1:
            return None
        if self._returns == 0:
            return int(ret[0])
        return int(ret[0]), int(ret[1])


class NativeEntryPoints:
    """The loaded library: one :class:`NativeFunction` attribute per entry point."""

    def __init__(self, directory: Path, functions: dict[str, NativeFunction]) -> None:
        self.directory = directory
        self.functions = functions
        for name, fn in functions.items():
            setattr(self, name, fn)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _parse_arg(spec: list[Any]) -> _Arg:
    kind = spec[0]
    if kind == "a":
        descr = spec[1]
        dtype = np.dtype([tuple(f) for f in descr]) if isinstance(descr, list) else np.dtype(descr)
        return _Arg("a", dtype, int(spec[2]))
    if kind not in _C_SCALARS:
        raise NativeError(f"unknown argument kind {kind!r}")
    return _Arg(kind)


def load(directory: Path | None = None) -> NativeEntryPoints | None:
    """The native entry points if they are built for this source and machine, else None (numba)."""
    if not enabled():
        return None
    try:
        directory = directory or library_dir()
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            return None
    except (OSError, RuntimeError) as exc:  # no home folder, an unreadable cache: numba, silently
        log.debug("no native kernel (%s)", exc)
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT or set(manifest["entries"]) != set(ENTRY_POINTS):
            raise NativeError(f"{manifest_path}: not a format-{FORMAT} manifest of {sorted(ENTRY_POINTS)}")
        functions = {}
        for name, entry in manifest["entries"].items():
            path = directory / entry["file"]
            # a damaged file must never reach dlopen: a truncated library kills the process (SIGBUS)
            if _digest(path.read_bytes()) != entry["digest"]:
                raise NativeError(f"{path.name} does not match its digest in the manifest (damaged)")
            lib = ctypes.CDLL(str(path))
            fn = getattr(lib, entry["symbol"])
            args = [_parse_arg(a) for a in entry["args"]]
            argtypes: list[Any] = []
            for a in args:
                if a.kind == "a":
                    argtypes.append(ctypes.c_void_p)
                    argtypes.extend([ctypes.c_int64] * a.ndim)
                else:
                    argtypes.append(_C_SCALARS[a.kind])
            argtypes.append(ctypes.c_void_p)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int64
            functions[name] = NativeFunction(name, fn, args, int(entry["returns"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, NativeError) as exc:
        log.warning("native kernel in %s not loaded (%s); using numba", directory, exc)
        return None
    return NativeEntryPoints(directory, functions)


# ------------------------------------------------------------------------------ building


def compiler() -> str | None:
    """The C compiler that links the libraries (``CC``, else ``cc``/``gcc``/``clang``), or None."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def _arg_spec(t: Any) -> list[Any]:
    from numba import types
    from numba.np.numpy_support import as_dtype

    if isinstance(t, types.Array):
        if t.layout != "C":
            raise NativeError(f"array argument of layout {t.layout} (only C-contiguous ones are supported)")
        dtype = as_dtype(t.dtype)
        descr: Any = [list(f) for f in dtype.descr] if dtype.names else dtype.str
        return ["a", descr, t.ndim]
    if t == types.float64:
        return ["f"]
    if t == types.uint64:
        return ["u"]
    if isinstance(t, types.Integer) and t.bitwidth <= 64:
        return ["i"]
    raise NativeError(f"argument type {t} is not supported")


def _returns(t: Any) -> int:
    from numba import types

    if t == types.none:
        return -1
    if isinstance(t, types.Integer):
        return 0
    if isinstance(t, types.BaseTuple) and len(t) == 2 and all(isinstance(x, types.Integer) for x in t):
        return 2
    raise NativeError(f"return type {t} is not supported")


def _view_intrinsic(array_type: Any) -> Any:
    """An intrinsic making ``array_type`` (exactly: layout, alignment) from a data pointer and a shape."""
    from numba.extending import intrinsic
    from numba.np.arrayobj import np_cfarray

    @intrinsic
    def view(typingctx, ptr, shape):
        return array_type(ptr, shape), np_cfarray

    return view


@contextlib.contextmanager
def _engine_code_kept_as_compiled() -> Iterator[None]:
    """numba optimizes a library's module again after linking in the code it calls; for the wrapper
    that would re-optimize the engine's already optimized functions, and the result ran ≈ 4 % slower
    than the JIT's code (thread CPU per record, in memory). With this, the engine's functions are
    linked in exactly as numba optimized them for the JIT; only the small wrapper is not optimized
    across them (it runs once per batch)."""
    from numba.core.codegen import CPUCodeLibrary

    saved = CPUCodeLibrary._optimize_final_module
    CPUCodeLibrary._optimize_final_module = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        CPUCodeLibrary._optimize_final_module = saved  # type: ignore[method-assign]


def _compile_entry(name: str, dispatcher: Any) -> tuple[Any, dict[str, Any]]:
    """numba's C-callable wrapper around ``dispatcher``'s one signature, and its manifest entry."""
    from numba import cfunc, types

    if len(dispatcher.signatures) != 1:
        raise NativeError(f"{name}: expected one compiled signature, found {len(dispatcher.signatures)}")
    sig = dispatcher.signatures[0]
    ret_type = dispatcher.overloads[sig].signature.return_type
    params: list[str] = []
    c_types: list[Any] = []
    lines: list[str] = []
    call: list[str] = []
    namespace: dict[str, Any] = {"fn": dispatcher}
    specs = []
    for i, t in enumerate(sig):
        specs.append(_arg_spec(t))
        if isinstance(t, types.Array):
            dims = [f"p{i}_{d}" for d in range(t.ndim)]
            params += [f"p{i}", *dims]
            c_types += [types.CPointer(t.dtype)] + [types.int64] * t.ndim
            namespace[f"view{i}"] = _view_intrinsic(t)
            lines.append(f"    a{i} = view{i}(p{i}, ({', '.join(dims)},))")
            call.append(f"a{i}")
        else:
            params.append(f"p{i}")
            c_types.append(t)
            call.append(f"p{i}")
    returns = _returns(ret_type)
    params.append("ret")
    c_types.append(types.CPointer(types.int64))
    lines.append(f"    r = fn({', '.join(call)})")
    if returns == 0:
        lines.append("    ret[0] = r")
    elif returns == 2:
        lines.append("    ret[0] = r[0]")
        lines.append("    ret[1] = r[1]")
    lines.append(f"    ret[{_RETURN_SLOTS}] = 1")
    lines.append("    return 0")
    source = f"def wrapper({', '.join(params)}):\n" + "\n".join(lines) + "\n"
    exec(compile(source, f"<qrsdp native wrapper {name}>", "exec"), namespace)
    with _engine_code_kept_as_compiled():
        wrapper = cfunc(types.int64(*c_types), nopython=True, error_model="numpy")(namespace["wrapper"])
    return wrapper, {"symbol": wrapper.native_name, "args": specs, "returns": returns}


def _object_code(wrapper: Any) -> bytes:
    """The wrapper's whole module (the engine's code linked in) as position-independent machine code
    for this CPU, as numba's JIT compiles it (same CPU name and features)."""
    import llvmlite.binding as ll

    library = wrapper._library
    codegen = library._codegen
    module = ll.parse_bitcode(library._final_module.as_bitcode())
    # Everything but the entry point hidden: position-independent code then reaches the module's own
    # functions and constants directly instead of through the PLT and the GOT (as the JIT does).
    for value in [*module.functions, *module.global_variables]:
        local = value.linkage in (ll.Linkage.internal, ll.Linkage.private)
        if not value.is_declaration and not local and value.name != wrapper.native_name:
            value.visibility = "hidden"
    target = ll.Target.from_triple(module.triple or ll.get_process_triple())
    machine = target.create_target_machine(
        cpu=codegen._get_host_cpu_name(),
        features=codegen._tm_features,
        opt=3,
        reloc="pic",
        codemodel="default",
    )
    return machine.emit_object(module)


def build(directory: Path | None = None) -> Path:
    """Compile and link the native library from the numba dispatchers compiled in this process (after
    a warm-up session has called every entry point). Returns its folder; raises :class:`NativeError`."""
    import importlib

    from qrsdp_sim.engine import _jit

    cc = compiler()
    if cc is None:
        raise NativeError("no C compiler (cc, gcc or clang) to link the native library")
    directory = directory or library_dir()
    _jit.materialize()
    entries: dict[str, Any] = {}
    objects: dict[str, bytes] = {}
    for name, (module_name, attr) in ENTRY_POINTS.items():
        dispatcher = getattr(importlib.import_module(module_name), attr)
        wrapper, entry = _compile_entry(name, dispatcher)
        objects[name] = _object_code(wrapper)
        entries[name] = dict(entry)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        (staging / "shim.c").write_text(_SHIM_C)
        for name, code in objects.items():
            (staging / f"{name}.o").write_bytes(code)
            proc = subprocess.run(
                [cc, "-shared", "-O2", "-fPIC", "-o", f"{name}.so", f"{name}.o", "shim.c", "-lm"],
                cwd=staging,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise NativeError(f"linking {name}.so failed ({cc}): {proc.stderr.strip()[-2000:]}")
            (staging / f"{name}.o").unlink()
            # named by content: a process keeps a library it once loaded under its path (dlopen answers
            # the same path with the loaded one), so a rebuilt library must have a new name
            digest = _digest((staging / f"{name}.so").read_bytes())
            entries[name].update(file=f"{name}-{digest[:16]}.so", digest=digest)
            (staging / f"{name}.so").rename(staging / entries[name]["file"])
        (staging / MANIFEST).write_text(json.dumps({"format": FORMAT, "entries": entries}, indent=1))
        if directory.exists():
            if load(directory) is not None:  # another process built it meanwhile
                return directory
            shutil.rmtree(directory, ignore_errors=True)  # damaged: replaced
        try:
            staging.rename(directory)
        except OSError:
            if not (directory / MANIFEST).is_file():  # another process won the race: theirs is as good
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return directory
