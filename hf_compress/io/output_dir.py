"""The output folder of a run: which path it really is, whether it may be replaced, leftovers of a killed
save, and a lock so that two runs never write one folder.

* The path is expanded (``~``) and symlinks are followed: the link stays, its target is written.
* The caller's working directory (or a folder holding it) is never an output: replacing it would move the
  working directory away.
* An existing folder is replaced only when it is an earlier hf_compress output whose files are exactly the
  ones its ``compression_config.json`` lists (``files``, written by :func:`~hf_compress.io.checkpoint.
  save_compressed`); a folder holding anything else (a user's notes, a foreign ``compression_config.json``)
  is refused, naming the unexpected files.
* A save writes ``.NAME.tmp-*`` and swaps through ``.NAME.old-*``: a kill between the two renames leaves
  only ``.NAME.old-*``, which the next check renames back; stale ``.tmp-*`` folders are removed.
* :func:`output_lock` holds ``.NAME.lock`` (``fcntl.flock``) for the whole run; a second run is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["MANIFEST_KEY", "resolve_output_dir", "check_output_dir", "output_lock", "folder_files"]

logger = logging.getLogger(__name__)

MANIFEST_KEY = "files"
_MARKER = "compression_config.json"
_HELD: dict[str, int] = {}  # lock path -> fd, locks this process holds


def resolve_output_dir(path: str | os.PathLike) -> Path:
    """The absolute folder a save writes: ``~`` expanded, symlinks followed; refuses the working directory
    (or one of its parents) and a path that is a file."""
    if not str(path).strip():
        raise CheckpointError("output_dir must be a folder path, got an empty string")
    final = Path(os.path.realpath(Path(path).expanduser()))
    cwd = Path(os.path.realpath(os.getcwd()))
    if final == cwd or final in cwd.parents:
        raise CheckpointError(
            f"output_dir {str(path)!r} is the working directory or holds it; replacing it would move your "
            f"working directory away: give a new subfolder, e.g. {str(path).rstrip('/') or '.'}/compressed"
        )
    if final.exists() and not final.is_dir():
        raise CheckpointError(f"output path {str(final)!r} is a file; give a folder path")
    for parent in final.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CheckpointError(f"output_dir {str(path)!r}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise CheckpointError(f"output_dir {str(path)!r}: cannot create folders in {parent} (no permission)")
            break
    return final


def folder_files(folder: Path) -> list[str]:
    """Relative paths of every file under ``folder``, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _check_replaceable(final: Path) -> None:
    if not final.is_dir() or not any(final.iterdir()):
        return
    present = set(folder_files(final))
    listed = None
    if _MARKER in present:
        try:
            listed = json.loads((final / _MARKER).read_text(encoding="utf-8")).get(MANIFEST_KEY)
        except (ValueError, UnicodeDecodeError, AttributeError):
            listed = None
    extra = sorted(present - set(listed if isinstance(listed, list) else []))
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise CheckpointError(
            f"output folder {str(final)!r} holds files hf_compress did not write ({shown}); move them out or "
            f"choose another output_dir"
        )


def _recover_leftovers(final: Path) -> None:
    """Rename a ``.NAME.old-*`` back when a kill left no ``NAME``; remove stale ``.tmp-*`` / ``.old-*``."""
    parent = final.parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not final.exists():
        os.replace(olds.pop(), final)
        logger.warning("recovered %s from an interrupted save", final)
    for stale in olds + list(parent.glob(f".{final.name}.tmp-*")):
        shutil.rmtree(stale, ignore_errors=True)
        logger.info("removed %s left by an interrupted save", stale.name)


def check_output_dir(path: str | os.PathLike, recover: bool = True) -> Path:
    """Everything a run checks before loading: the resolved folder may be written, leftovers of a killed
    save are recovered (``recover``; only under :func:`output_lock` or when no other run is active)."""
    final = resolve_output_dir(path)
    if recover and not _locked_by_other(final):
        _recover_leftovers(final)
    _check_replaceable(final)
    return final


def _lock_path(final: Path) -> Path:
    return final.parent / f".{final.name}.lock"


def _locked_by_other(final: Path) -> bool:
    lock = _lock_path(final)
    if str(lock) in _HELD or not lock.exists():
        return False
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike):
    """Hold the output folder's lock (re-entrant within a process); refuse when another run holds it."""
    final = resolve_output_dir(path)
    lock = _lock_path(final)
    if str(lock) in _HELD:
        yield final
        return
    created = _make_parents(final.parent)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise CheckpointError(
            f"another hf-compress run is writing {str(final)!r} (it holds {lock.name}); wait for it or choose "
            f"another output_dir"
        ) from None
    _HELD[str(lock)] = fd
    try:
        yield final
    finally:
        del _HELD[str(lock)]
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
        _remove_if_empty(created)


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, deepest first."""
    created = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        created.append(p)
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _remove_if_empty(created: list[Path]) -> None:
    for p in created:
        with contextlib.suppress(OSError):
            p.rmdir()  # only empty folders: a finished save keeps its parents
