"""Checks that need no model, run by every entry point before it loads one, and one-line errors.

- :func:`argv_problem`: a command-line argument that is not UTF-8 (Hydra's lexer would fail on it
  with a grammar exception);
- :func:`check_config`: config keys still ``???`` (named, with the fix), and every file a config names
  that can be checked without loading it: keys ending in ``weights`` and ``context_file`` (weights
  headers parse, :func:`fourd.weights.check_weights_file`), ``tokenizer`` folders;
- :func:`one_line_errors`: what a user got wrong (a bad value, a missing or damaged file) ends the
  program with one line ``<prog>: error: <Type>: <message>`` and status 1 (the traceback goes to the
  log file); other exceptions keep their traceback.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, Optional, Sequence

import fsspec
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fourd.weights import check_weights_file

__all__ = ["ConfigError", "argv_problem", "unset_keys", "check_config", "one_line_errors", "USER_ERRORS"]

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value that cannot work (unset, or naming a file that is not there); one line."""


# What a user can cause and fix: bad values (ValueError covers InputError, WeightsFileError,
# CheckpointError, ConfigError), missing files (FileNotFoundError), bad config keys (OmegaConf).
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, OmegaConfBaseException)


def argv_problem(argv: Sequence[str]) -> Optional[str]:
    """One line about the first argument that is not valid UTF-8 (Python keeps its bytes as
    surrogates), or None."""
    for arg in argv[1:]:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as e:
            raw = arg.encode("utf-8", "surrogateescape")
            shown = raw.decode("utf-8", "backslashreplace")
            return (f"command-line argument '{shown}' is not UTF-8 (byte 0x{raw[e.start]:02x} at position {e.start}): "
                    "re-encode it (e.g. `iconv -f latin1 -t utf-8`), or put the text in a UTF-8 file")
    return None


def _leaves(node, prefix: str = "") -> Iterator[tuple[str, str, object]]:
    """``(dotted key, last key, raw value)`` of every leaf of a plain (unresolved) config container."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            yield from _leaves(value, name + ".")
        else:
            yield name, str(key), value


def unset_keys(cfg: DictConfig) -> list[str]:
    """Dotted names of the keys of ``cfg`` that are still ``???`` (mandatory and unset)."""
    return [name for name, _, value in _leaves(OmegaConf.to_container(cfg, resolve=False)) if value == "???"]


def check_config(cfg: DictConfig, skip: Sequence[str] = ()) -> None:
    """Raise :class:`ConfigError` naming every ``???`` key, then check the files the config names
    (module docstring) in one line each; ``skip``: dotted prefixes not used by this run."""
    missing = [k for k in unset_keys(cfg) if not k.startswith(tuple(skip))]
    if missing:
        raise ConfigError(f"config key{'s' if len(missing) > 1 else ''} {', '.join(missing)} not set (??? in the config): "
                          f"set {'them' if len(missing) > 1 else 'it'} on the command line, e.g. {missing[0]}=<value>")
    for name, key, raw in _leaves(OmegaConf.to_container(cfg, resolve=False)):
        if not isinstance(raw, str) or not raw or name.startswith(tuple(skip)):
            continue
        value = OmegaConf.select(cfg, name) if "${" in raw else raw
        if not isinstance(value, str) or not value:
            continue
        if key.endswith("weights") or key.endswith("context_file"):
            check_weights_file(value, what=name)
        elif key == "tokenizer":
            fs, path = fsspec.core.url_to_fs(value)
            if not fs.isdir(path):
                raise ConfigError(f"{name}={value} is not a folder (it must hold the tokenizer's tokenizer.json): give the folder")


@contextlib.contextmanager
def one_line_errors(prog: str, catch: tuple = USER_ERRORS) -> Iterator[None]:
    """Turn the exceptions in ``catch`` into ``<prog>: error: <Type>: <first line>`` on stderr and exit
    status 1; the traceback goes only to the log files (e.g. Hydra's ``<run dir>/<job>.log``)."""
    try:
        yield
    except catch as e:
        message = (str(e).splitlines() or [""])[0] or type(e).__name__
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s failed", (prog,), sys.exc_info())
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)
        print(f"{prog}: error: {type(e).__name__}: {message}", file=sys.stderr)
        sys.exit(1)
