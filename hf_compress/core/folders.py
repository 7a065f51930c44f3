"""Publishing a finished temporary folder as an output folder, by rename, touching only what hf_compress wrote.

A folder is written completely under a temporary name beside its target, with a manifest of its files, and
then published:

* the target is missing or empty: one ``os.replace`` of the whole folder;
* the target already holds things (a training run's ``checkpoint-*`` folders, a user's notes): the files the
  manifest of an earlier save names are moved aside, the new files are moved in, and the set-aside files are
  deleted. ``config.json`` leaves first and arrives last, so a reader (``from_pretrained``) sees the old
  model, the new one or none, never a mix. On any error the new files go back and the old ones return.
  A file the new save would overwrite that no manifest names (so hf_compress did not write it) is refused
  before anything moves.

    >>> write_manifest(tmp)                     # after the last file is written into tmp
    >>> publish_folder(tmp, final, CheckpointError)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from ..errors import HfCompressError

__all__ = ["MANIFEST", "write_manifest", "written_by_us", "publish_folder"]

MANIFEST = ".hf_compress_files.json"
_FIRST_OUT_LAST_IN = "config.json"


def write_manifest(folder: str | os.PathLike) -> None:
    """Record the entries of ``folder`` as written by hf_compress (call when the folder is complete)."""
    folder = Path(folder)
    names = sorted(n for n in os.listdir(folder) if n != MANIFEST)
    (folder / MANIFEST).write_text(json.dumps({"written_by": "hf_compress", "files": names}) + "\n",
                                   encoding="utf-8")


def written_by_us(folder: str | os.PathLike, error: type[Exception] = HfCompressError) -> set[str]:
    """The top-level entries of ``folder`` that its manifest names (the manifest included); empty without one."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return set()
    try:
        names = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError):
        raise error(f"{path} must be the JSON manifest hf_compress writes, got a damaged file; delete it and "
                    f"the files it listed, or save elsewhere") from None
    safe = {n for n in names if isinstance(n, str) and n not in ("", ".", "..") and "/" not in n and "\\" not in n}
    return safe | {MANIFEST}


def _move(names, src: Path, dst: Path, done: list[str]) -> None:
    for name in names:
        os.replace(src / name, dst / name)
        done.append(name)


def publish_folder(tmp: str | os.PathLike, final: str | os.PathLike, error: type[Exception] = HfCompressError):
    """Make the complete folder ``tmp`` (with its manifest) appear as ``final`` (see the module docstring).
    ``tmp`` is consumed on success; on an error it may still exist and is the caller's to remove."""
    tmp, final = Path(tmp), Path(final)
    if not final.exists() or (final.is_dir() and not any(final.iterdir())):
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
        return
    if not final.is_dir():
        raise error(f"`output_dir` must be a folder, got the file {str(final)!r}")
    ours, new = written_by_us(final, error), sorted(os.listdir(tmp))
    foreign = [n for n in new if (final / n).exists() and n not in ours]
    if foreign:
        raise error(f"`output_dir` {str(final)!r} holds {foreign[0]!r}, which hf_compress did not write and "
                    f"this save would replace; save into a new folder or move it away, got {len(foreign)} "
                    f"such file(s)")
    aside = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    aside.mkdir()
    old = sorted((n for n in ours if (final / n).exists()), key=lambda n: n != _FIRST_OUT_LAST_IN)
    new.sort(key=lambda n: n == _FIRST_OUT_LAST_IN)
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        _move(old, final, aside, moved_out)
        _move(new, tmp, final, moved_in)
    except BaseException:
        _move(reversed(moved_in), final, tmp, [])  # the new files back to the temporary folder
        _move(moved_out, aside, final, [])  # and the old model back in place
        aside.rmdir()
        raise
    shutil.rmtree(aside)  # only files an earlier hf_compress save wrote
