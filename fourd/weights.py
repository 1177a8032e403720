"""Reading and writing weights through fsspec (local paths, ``memory://``, ``s3://`` ...).

Formats read: a single ``.safetensors`` file, a sharded safetensors checkpoint given by its
``*.safetensors.index.json`` (the Hugging Face layout: ``{"weight_map": {key: shard}}``) or by a
directory holding one, and ``.pt``/``.pth``/``.bin`` files (``torch.load(weights_only=True)``).
Written: safetensors only, atomically (a temporary name, then a rename).
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
import uuid
from typing import Any, Callable, Iterable, Mapping, Optional

import fsspec
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

__all__ = [
    "WeightsNotFoundError",
    "WeightsFileError",
    "StateDictMismatchError",
    "check_weights_file",
    "read_state_dict",
    "read_metadata",
    "resolve_dtype",
    "config_metadata",
    "config_from_metadata",
    "write_safetensors",
    "check_state_dict",
    "load_into",
    "atomic_write_bytes",
]


class WeightsNotFoundError(FileNotFoundError):
    """A weights file the user named does not exist."""


class WeightsFileError(ValueError):
    """A weights file that exists but cannot be read (cut short, damaged, not a weights file); one line naming it."""


def _damaged(what: str, url: str, problem: object) -> WeightsFileError:
    detail = (str(problem).splitlines() or [type(problem).__name__])[0].split(". ")[0]
    return WeightsFileError(f"{what} {url} is damaged or not a weights file ({detail}): copy it again from its source")


class StateDictMismatchError(RuntimeError):
    """Strict loading found missing or unexpected keys, or shapes that differ."""


def _fs(url: str):
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def _read_bytes(url: str, what: str) -> bytes:
    fs, path = _fs(url)
    if not fs.exists(path):
        raise WeightsNotFoundError(f"{what} not found: {url} (provide this file; nothing is downloaded at run time)")
    with fs.open(path, "rb") as f:
        return f.read()


def _find_index(fs, path: str) -> Optional[str]:
    if path.endswith(".index.json"):
        return path
    if fs.isdir(path):
        found = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".safetensors.index.json"))
        if found:
            return found[0]
        single = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".safetensors"))
        if len(single) == 1:
            return single[0]
        raise WeightsNotFoundError(f"no *.safetensors.index.json or single *.safetensors in directory {path}")
    return None


def read_state_dict(url: str, what: str = "weights file") -> dict[str, torch.Tensor]:
    """Read a state dict from ``url`` (any fsspec URL) onto the CPU.

    Returns ``{key: tensor}`` with the dtypes stored in the file. Raises
    :class:`WeightsNotFoundError` naming the file when it (or a shard) is absent.
    """
    fs, path = _fs(url)
    if not fs.exists(path):
        raise WeightsNotFoundError(f"{what} not found: {url} (provide this file; nothing is downloaded at run time)")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]

    def unstrip(p: str) -> str:
        return p if protocol in ("file", "local") else f"{protocol}://{p}"

    index_or_file = _find_index(fs, path)
    if index_or_file is not None and index_or_file.endswith(".index.json"):
        index = json.loads(_read_bytes(unstrip(index_or_file), what))
        shards = sorted(set(index["weight_map"].values()))
        base = posixpath.dirname(index_or_file)
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            shard_url = unstrip(posixpath.join(base, shard))
            state.update(_decode(_read_bytes(shard_url, f"shard {shard}"), shard_url, what))
        return state
    if index_or_file is not None:
        path = index_or_file
    obj = _decode(_read_bytes(unstrip(path), what), unstrip(path), what)
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    return dict(obj)


def _decode(data: bytes, url: str, what: str) -> Any:
    """safetensors (by the ``.safetensors`` suffix) or ``torch.load(weights_only=True)`` of ``data``;
    a damaged file raises :class:`WeightsFileError` naming ``url``."""
    import io
    import pickle
    import zipfile

    try:
        if url.endswith(".safetensors"):
            return load_safetensors_bytes(data)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, EOFError, OSError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise _damaged(what, url, e) from None
    except Exception as e:  # safetensors' SafetensorError derives from Exception only
        if type(e).__name__ != "SafetensorError":
            raise
        raise _damaged(what, url, e) from None


def _safetensors_header(fs, path: str, url: str, what: str) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked: it parses, and the file holds every byte
    its tensors' offsets need (a copy cut short fails here, naming the file)."""
    try:
        size = fs.size(path)
        with fs.open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 2 <= length <= size - 8:
                raise ValueError(f"header length {length} does not fit a file of {size} bytes")
            header = json.loads(f.read(length))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise _damaged(what, url, e) from None
    if size != 8 + length + end:
        raise _damaged(what, url, f"{size} bytes, its header describes {8 + length + end}")
    return header


def _weight_files(fs, path: str, url: str, what: str) -> list[str]:
    """The files a weights URL stands for: the shards of an index (or of a folder holding one), or the file."""
    found = _find_index(fs, path)
    if found is None or not found.endswith(".index.json"):
        return [found or path]
    try:
        with fs.open(found, "rb") as f:
            shards = sorted(set(json.loads(f.read())["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _damaged(what, found, e) from None
    return [posixpath.join(posixpath.dirname(found), shard) for shard in shards]


def read_metadata(url: str, what: str = "weights file") -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (``{}`` when it has none, and for ``.pt`` files).

    ``url``: a ``.safetensors`` file, a sharded checkpoint's ``*.safetensors.index.json`` or a
    directory holding one (the first shard's metadata is read). Only the header is read.
    """
    fs, path = _fs(url)
    if not fs.exists(path):
        raise WeightsNotFoundError(f"{what} not found: {url} (provide this file; nothing is downloaded at run time)")
    path = _weight_files(fs, path, url, what)[0]
    if not path.endswith(".safetensors"):
        return {}
    return dict(_safetensors_header(fs, path, url, what).get("__metadata__") or {})


def check_weights_file(url: str, what: str = "weights file") -> dict[str, str]:
    """Check, without reading any tensor, that the weights at ``url`` exist and their headers parse:
    every safetensors file (each shard of an index) is as long as its header says; a ``.pt``/``.pth``
    zip archive has its directory (a cut-short copy has none). Returns :func:`read_metadata`'s dict.
    Raises :class:`WeightsNotFoundError` / :class:`WeightsFileError` in one line naming the file."""
    import zipfile

    fs, path = _fs(url)
    if not fs.exists(path):
        raise WeightsNotFoundError(f"{what} not found: {url} (provide this file; nothing is downloaded at run time)")
    files = _weight_files(fs, path, url, what)
    metadata: dict[str, str] = {}
    for i, file in enumerate(files):
        shown = url if file == path else f"{url} (shard {posixpath.basename(file)})"
        if not fs.exists(file):
            raise WeightsNotFoundError(f"{what} {shown} not found (provide this file; nothing is downloaded at run time)")
        if file.endswith(".safetensors"):
            header = _safetensors_header(fs, file, shown, what)
            metadata = metadata if i else dict(header.get("__metadata__") or {})
            continue
        with fs.open(file, "rb") as f:
            if f.read(4) == b"PK\x03\x04":  # torch.save's zip format (legacy pickles are only loaded)
                try:
                    zipfile.ZipFile(f).namelist()
                except (zipfile.BadZipFile, OSError, ValueError) as e:
                    raise _damaged(what, shown, e) from None
    return metadata


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def resolve_dtype(dtype: "torch.dtype | str | None") -> torch.dtype:
    """A loader's ``dtype`` argument: a torch dtype, a name (``"bfloat16"``, ``"bf16"``,
    ``"float32"``, ``"fp16"`` ...; also ``"torch.bfloat16"``), or None = float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


def config_metadata(key: str, config: Any) -> dict[str, str]:
    """``{key: JSON}`` safetensors metadata of a model config: a dataclass (its fields) or a mapping
    (e.g. ``{"preset": "tiny", ...overrides}``). The loaders read it back when given no config
    (keys: ``dit_config``, ``vae_config``, ``recon_config``, ``text_encoder_config``)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return {key: json.dumps(dict(config), sort_keys=True)}


def config_from_metadata(weights: Any, key: str, loader: str) -> dict[str, Any]:
    """The config mapping stored under ``key`` in the metadata of the safetensors file ``weights``
    (see :func:`config_metadata`). Raises a ``ValueError`` naming the loader's ``config=`` argument
    when ``weights`` is not a file URL or its metadata lacks ``key``."""
    if not isinstance(weights, str):
        raise ValueError(f"{loader} needs config= (a preset name or mapping) unless weights is a safetensors file with {key!r} metadata")
    metadata = read_metadata(weights)
    if key not in metadata:
        raise ValueError(f"{weights} has no {key!r} metadata (exports of our training tasks have it): pass config= to {loader}")
    return json.loads(metadata[key])


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` so that readers see either the old file or the complete new one."""
    fs, path = _fs(url)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


def write_safetensors(url: str, state: Mapping[str, torch.Tensor], metadata: Optional[dict[str, str]] = None) -> None:
    """Save ``state`` as one safetensors file at ``url`` (atomically; tensors made contiguous, CPU)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(url, save_safetensors_bytes(tensors, metadata=metadata))


def _name_list(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    allow_missing: Callable[[str], bool] | None = None,
    source: str = "checkpoint",
) -> tuple[list[str], list[str]]:
    """Compare ``state``'s keys and shapes with ``module.state_dict()`` (works on meta modules).

    Raises :class:`StateDictMismatchError` naming every missing key not allowed by
    ``allow_missing(key)``, every unexpected key and every shape mismatch.
    Returns ``(missing, unexpected)`` otherwise (``unexpected`` is then empty).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    hard_missing = [k for k in missing if not (allow_missing and allow_missing(k))]
    if hard_missing or unexpected or bad_shape:
        parts = [f"{source} does not match {type(module).__name__}:"]
        if hard_missing:
            parts.append(f"missing keys ({len(hard_missing)}): {_name_list(hard_missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_name_list(unexpected)}")
        if bad_shape:
            parts.append(f"shape mismatches ({len(bad_shape)}): {_name_list(bad_shape)}")
        raise StateDictMismatchError("\n  ".join(parts))
    return missing, unexpected


def load_into(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    allow_missing: Callable[[str], bool] | None = None,
    source: str = "checkpoint",
    assign: bool = False,
) -> tuple[list[str], list[str]]:
    """Load ``state`` into ``module`` and report mismatches by name.

    ``allow_missing(key)`` marks keys that may be absent (e.g. new zero-initialised layers).
    With ``strict`` any other missing key, any unexpected key or any shape mismatch raises
    :class:`StateDictMismatchError` listing them (see :func:`check_state_dict`); without it, keys
    that do not fit are skipped. ``assign=True`` replaces the module's tensors by ``state``'s (for
    modules built on the meta device; the caller casts dtype/device first). Otherwise tensors are
    copied into the existing parameters (cast to their dtype). Returns ``(missing, unexpected)``.
    """
    if strict:
        missing, unexpected = check_state_dict(module, state, allow_missing=allow_missing, source=source)
    own = module.state_dict()
    if not strict:
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
    usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    module.load_state_dict(usable, strict=False, assign=assign)
    return missing, unexpected
