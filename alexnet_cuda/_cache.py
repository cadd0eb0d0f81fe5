"""The library's cache folder: $ALEXNET_CUDA_CACHE, else ~/.cache/alexnet_cuda.

It holds the trainer's dataset statistics, the demo's digits and conv2d_relu's per-shape
kernel choices; each is safe to delete (it is computed again). A file in it whose content is
not what the library wrote is to be treated as missing, with a warning naming it:
:func:`read_json_cache` and :func:`merge_json_cache` do that for JSON caches (and merge
concurrent writers' entries under a lock)."""

import contextlib
import logging
import os

_log = logging.getLogger("alexnet_cuda")
_warned = set()


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "alexnet_cuda")


def cache_dir() -> str:
    """$ALEXNET_CUDA_CACHE if it is a folder or can become one; otherwise (it names a file, say)
    the default folder, with one warning."""
    chosen = os.environ.get("ALEXNET_CUDA_CACHE")
    if not chosen:
        return default_cache_dir()
    if os.path.lexists(chosen) and not os.path.isdir(chosen):
        if chosen not in _warned:
            _warned.add(chosen)
            _log.warning(
                "ALEXNET_CUDA_CACHE=%s is not a folder: caching in %s instead (point it at a folder)",
                chosen,
                default_cache_dir(),
            )
        return default_cache_dir()
    return chosen


# --------------------------------------------------------------------------------------
# JSON caches: read what is valid, merge writes under a lock
# --------------------------------------------------------------------------------------
_warned_files = set()


def _warn_once(path: str, message: str) -> None:
    if path not in _warned_files:
        _warned_files.add(path)
        _log.warning("%s", message)


def read_json_cache(path: str, valid_entry, warn: bool = True) -> dict:
    """The entries of the JSON object in ``path`` that ``valid_entry(key, value)`` accepts ({} if
    the file is missing). Anything that is not what the writer wrote (not JSON, truncated, not
    an object, nested too deep, unreadable, entries of another shape) is a cache miss: those
    entries are left out, with one warning per process naming the file (``warn``)."""
    import json

    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        if warn:
            _warn_once(
                path,
                f"cache file {path}: not readable as JSON ({type(exc).__name__}); ignored "
                f"(computed again and rewritten; deleting it is safe)",
            )
        return {}
    if not isinstance(data, dict):
        if warn:
            _warn_once(
                path,
                f"cache file {path}: holds a JSON {type(data).__name__}, not an object; ignored "
                f"(computed again and rewritten; deleting it is safe)",
            )
        return {}
    good = {k: v for k, v in data.items() if valid_entry(k, v)}
    if len(good) < len(data) and warn:
        _warn_once(
            path,
            f"cache file {path}: {len(data) - len(good)} of its {len(data)} entries are not what "
            f"this library writes; those are ignored (computed again; deleting the file is safe)",
        )
    return good


@contextlib.contextmanager
def file_lock(lock_path: str):
    """An exclusive advisory lock (fcntl.flock) on ``lock_path`` while the block runs; without fcntl
    (not POSIX) no lock, and writes are then atomic but may drop a concurrent writer's entries."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def merge_json_cache(path: str, entries: dict, valid_entry) -> dict:
    """Add ``entries`` to the JSON cache ``path`` and return the merged content. Under
    :func:`file_lock` on ``path + ".lock"`` the file is read again (what other processes wrote
    meanwhile; invalid entries dropped, silently), updated and replaced atomically (a temporary
    file and os.replace): concurrent writers keep each other's entries and a reader never sees
    half a file. Raises OSError when the folder cannot be written."""
    import json

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with file_lock(path + ".lock"):
        merged = read_json_cache(path, valid_entry, warn=False)
        merged.update(entries)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(merged, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return merged
