"""Where an inference job writes, and the rules that keep it from losing anything.

- An item's name is a plain, non-empty basename (never ``.``, ``..``, empty, hidden or with a
  separator): :func:`item_name` derives it from the input's normalised path, :func:`check_name` refuses
  anything else.
- An item is written into ``<root>/.<name>.partial-<pid>@<host>-<id>`` and renamed to ``<root>/<name>``
  when complete (:func:`committed`); before any delete or rename the target is checked to be a direct
  child of ``root`` that is not a symbolic link. With ``overwrite`` the old folder is first renamed
  aside, so a crash at any moment leaves the old or the new output whole.
- Partial folders of killed runs are removed at the start of the next run into the same root when their
  process is known dead (same host, pid gone) and older than the running job; others older than it are
  reported in one line (:func:`clean_stale_partials`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import shutil
import socket
import time
import uuid
from typing import Iterator

from fourd.video_io import VIDEO_SUFFIXES, InputError

__all__ = ["item_name", "check_name", "check_output", "committed", "clean_stale_partials"]

log = logging.getLogger(__name__)
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?:(?P<pid>\d+)@(?P<host>.+)-)?[0-9a-f]{8}$")


def check_name(name: str, source: str) -> str:
    """``name`` if it is a plain basename (non-empty, not ``.``/``..``, not hidden, no separator or NUL),
    else :class:`InputError` naming ``source`` (where the name came from)."""
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise InputError(f"{source} gives the output name {name!r}, not a plain folder name: "
                         "name the video or frame folder itself (e.g. input.video=clips/dog.mp4 or clips/dog_frames)")
    return name


def item_name(url: str, source: str = "input.video") -> str:
    """The output name of an input URL: the basename of its normalised path (``a/b/.`` and ``a/b/x/..``
    name ``b``; a local ``.`` names the current folder), without a video suffix; checked with
    :func:`check_name`."""
    _, remote, path = url.rpartition("://")
    path = posixpath.normpath(path.rstrip("/") or "/")
    base = posixpath.basename(path)
    if base in ("", ".", "..") and not remote:
        base = os.path.basename(os.path.abspath(path))
    stem = posixpath.splitext(base)[0] if base.lower().endswith(VIDEO_SUFFIXES) else base
    return check_name(stem, f"{source}={url}")


def _child(root: str, name: str) -> str:
    """``root/name``, checked to be a direct child of ``root`` and not a symbolic link: the only paths
    this module deletes or renames."""
    path = os.path.join(root, name)
    if (not name or name in (".", "..") or any(c in name for c in "/\\\0")
            or os.path.dirname(os.path.abspath(path)) != os.path.abspath(root)):
        raise InputError(f"refusing to touch {path}: not a direct child of the output folder {root}")
    if os.path.islink(path):
        raise InputError(f"output {path} is a symbolic link: remove the link or choose another output.dir")
    return path


def check_output(root: str, name: str, overwrite: bool) -> str:
    """``root/name`` if an item may write it: a direct child of ``root``, not a symbolic link, and
    absent unless ``overwrite``; else :class:`InputError`."""
    final = _child(root, name)
    if os.path.lexists(final) and not overwrite:
        raise InputError(f"output {final} exists: choose another output.dir or set output.overwrite=true")
    return final


@contextlib.contextmanager
def committed(root: str, name: str, overwrite: bool) -> Iterator[str]:
    """A fresh partial folder (yielded) renamed to ``root/name`` on success, removed on failure; the
    target is checked by :func:`check_output` (an existing one is replaced with ``overwrite``, see the
    module docstring)."""
    final = check_output(root, name, overwrite)
    partial = _child(root, f".{name}.partial-{os.getpid()}@{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(partial)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(_child(root, os.path.basename(partial)), ignore_errors=True)
        raise
    old = None
    if os.path.lexists(final):
        old = _child(root, f".{name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(_child(root, name), old)
    os.replace(partial, _child(root, name))
    if old is not None:
        shutil.rmtree(old)


def _dead(pid: str, host: str) -> bool:
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def clean_stale_partials(root: str, started: float) -> list[str]:
    """Remove the partial folders in ``root`` left by killed runs (this host, process gone, older than
    ``started``, a ``time.time()``); report in one warning line those older than ``started`` whose
    process this host cannot check. Returns the removed names."""
    if not os.path.isdir(root):
        return []
    removed, unknown = [], []
    for entry in sorted(os.listdir(root)):
        match = _PARTIAL.match(entry)
        path = os.path.join(root, entry)
        if not match or os.path.islink(path) or not os.path.isdir(path) or os.path.getmtime(path) >= started:
            continue
        if match.group("pid") and _dead(match.group("pid"), match.group("host")):
            shutil.rmtree(_child(root, entry), ignore_errors=True)
            removed.append(entry)
        else:
            unknown.append(entry)
    if removed:
        log.info("removed %d partial output folder(s) of killed runs in %s: %s", len(removed), root, ", ".join(removed))
    if unknown:
        age = (time.time() - min(os.path.getmtime(os.path.join(root, e)) for e in unknown)) / 3600
        log.warning("%d partial output folder(s) in %s may belong to a run on another machine or were killed (oldest %.1f h): %s; "
                    "remove them once no run writes there", len(unknown), root, age, ", ".join(unknown))
    return removed
