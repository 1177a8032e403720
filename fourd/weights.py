"""Reading and writing weights through fsspec (local paths, ``memory://``, ``s3://`` ...).

Formats read: a single ``.safetensors`` file, a sharded safetensors checkpoint given by its
``*.safetensors.index.json`` (the Hugging Face layout: ``{"weight_map": {key: shard}}``) or by a
directory holding one, and ``.pt``/``.pth``/``.bin`` files (``torch.load(weights_only=True)``).
Written: safetensors only, atomically (a temporary name, then a rename).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import posixpath
import shutil
import uuid
from typing import Any, BinaryIO, Callable, Iterable, Mapping, Optional, Union

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
    "model_shapes",
    "load_into",
    "atomic_write_bytes",
    "WeightsFile",
    "SafetensorsWriter",
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


def _is_local(fs) -> bool:
    """Whether ``fs`` is the local file system (files that can be memory-mapped and fsynced)."""
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _existing(url: str, what: str):
    """``(fs, path)`` of ``url``; :class:`WeightsNotFoundError` naming it when it does not exist."""
    fs, path = _fs(url)
    if not fs.exists(path):
        raise WeightsNotFoundError(f"{what} not found: {url} (provide this file; nothing is downloaded at run time)")
    return fs, path


def _unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """A loaded ``.pt`` object's state dict (inside a ``state_dict`` / ``model`` / ``module`` wrapper if any)."""
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    return dict(obj)


def _files(fs, path: str, url: str, what: str) -> list[tuple[str, str]]:
    """:func:`_weight_files` with the name each file is shown by in errors (``url``, or ``url`` and
    the shard); a missing shard raises :class:`WeightsNotFoundError` naming it."""
    out, files = [], _weight_files(fs, path, url, what)
    for file in files:
        shown = url if len(files) == 1 else f"{url} (shard {posixpath.basename(file)})"
        if not fs.exists(file):
            raise WeightsNotFoundError(f"{what} {shown} not found (provide this file; nothing is downloaded at run time)")
        out.append((file, shown))
    return out


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
    fs, path = _existing(url, what)
    state: dict[str, torch.Tensor] = {}
    for file, shown in _files(fs, path, url, what):
        with fs.open(file, "rb") as f:
            state.update(_decode(f.read(), file, shown, what))
    return state


def _decode(data: bytes, file: str, shown: str, what: str) -> dict[str, torch.Tensor]:
    """The state dict in ``data``: safetensors (by ``file``'s ``.safetensors`` suffix) or
    ``torch.load(weights_only=True)``; a damaged file raises :class:`WeightsFileError` naming ``shown``."""
    import io
    import pickle
    import zipfile

    try:
        if file.endswith(".safetensors"):
            return load_safetensors_bytes(data)
        return _unwrap(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    except (RuntimeError, ValueError, EOFError, OSError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise _damaged(what, shown, e) from None
    except Exception as e:  # safetensors' SafetensorError derives from Exception only
        if type(e).__name__ != "SafetensorError":
            raise
        raise _damaged(what, shown, e) from None


def _safetensors_header(fs, path: str, url: str, what: str) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the byte offset of its data, checked: it parses,
    and the file holds every byte its tensors' offsets need (a copy cut short fails here, naming ``url``)."""
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
    return header, 8 + length


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
    fs, path = _existing(url, what)
    path = _weight_files(fs, path, url, what)[0]
    if not path.endswith(".safetensors"):
        return {}
    return dict(_safetensors_header(fs, path, url, what)[0].get("__metadata__") or {})


def check_weights_file(url: str, what: str = "weights file") -> dict[str, str]:
    """Check, without reading any tensor, that the weights at ``url`` exist and their headers parse:
    every safetensors file (each shard of an index) is as long as its header says; a ``.pt``/``.pth``
    zip archive has its directory (a cut-short copy has none). Returns :func:`read_metadata`'s dict.
    Raises :class:`WeightsNotFoundError` / :class:`WeightsFileError` in one line naming the file."""
    import zipfile

    fs, path = _existing(url, what)
    metadata: dict[str, str] = {}
    for i, (file, shown) in enumerate(_files(fs, path, url, what)):
        if file.endswith(".safetensors"):
            header = _safetensors_header(fs, file, shown, what)[0]
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


class _AtomicFile:
    """A file written under a temporary name next to ``url``: :meth:`commit` flushes it (and fsyncs
    it where it is local), then renames it to ``url``, so readers see the old file or the whole new
    one; :meth:`abort` removes the temporary file."""

    def __init__(self, url: str):
        self._fs, self._path = _fs(url)
        parent = posixpath.dirname(self._path)
        if parent:
            self._fs.makedirs(parent, exist_ok=True)
        self._tmp = f"{self._path}.tmp-{uuid.uuid4().hex[:8]}"
        self.file = self._fs.open(self._tmp, "wb")

    def commit(self) -> None:
        self.file.flush()
        if _is_local(self._fs):
            os.fsync(self.file.fileno())
        self.file.close()
        self._fs.mv(self._tmp, self._path)

    def abort(self) -> None:
        self.file.close()
        if self._fs.exists(self._tmp):
            self._fs.rm(self._tmp)


def atomic_write_bytes(url: str, data: Union[bytes, BinaryIO]) -> None:
    """Write ``data`` (bytes, or a binary file object copied in chunks: a large file is never held in
    memory) to ``url`` so that readers see either the old file or the complete new one (fsynced
    where local before the rename)."""
    out = _AtomicFile(url)
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            out.file.write(data)
        else:
            shutil.copyfileobj(data, out.file, 64 * 2**20)
    except BaseException:
        out.abort()
        raise
    out.commit()


def write_safetensors(url: str, state: Mapping[str, torch.Tensor], metadata: Optional[dict[str, str]] = None) -> None:
    """Save ``state`` as one safetensors file at ``url`` (atomically; tensors made contiguous, CPU)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(url, save_safetensors_bytes(tensors, metadata=metadata))


def _name_list(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def model_shapes(module: torch.nn.Module) -> dict[str, torch.Size]:
    """``{state-dict key: full shape}`` of ``module``'s parameters and persistent buffers; a ZeRO-3
    partitioned parameter holds an empty tensor, its full shape is its ``ds_shape``."""
    shapes = {k: v.shape for k, v in module.state_dict(keep_vars=True).items()}
    for name, param in module.named_parameters():
        if hasattr(param, "ds_shape") and name in shapes:
            shapes[name] = param.ds_shape
    return shapes


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
    own = model_shapes(module)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k])}" for k in own if k in state and state[k].shape != own[k]]
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


# ------------------------------------------------------------------------------ lazy, per-tensor reading
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
              "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
              "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


class WeightsFile:
    """A weights file opened for reading one tensor, or one slice of one, at a time.

    ``url``: as :func:`read_state_dict` (a ``.safetensors`` file, a sharded checkpoint's
    ``*.safetensors.index.json`` or a directory holding one, or a ``.pt``/``.pth``/``.bin`` file).
    Safetensors are never read whole: the headers give every key's shape, dtype and byte range, and
    :meth:`tensor` / :meth:`flat_slice` read only the bytes asked for (through fsspec), so a rank
    that fills its shard of a ZeRO-3 model reads only its own slices. ``.pt`` files are memory-mapped
    when local (``torch.load(mmap=True, weights_only=True)``: pages are read when touched) and read
    whole otherwise (convert them to safetensors for sharded loading from remote storage).
    """

    def __init__(self, url: str, what: str = "weights file"):
        self.url, self.what = url, what
        fs, path = _existing(url, what)
        self._fs = fs
        self._entries: dict[str, tuple[str, torch.dtype, tuple[int, ...], int, int]] = {}  # key -> (file, dtype, shape, begin, end)
        self._state: Optional[dict[str, torch.Tensor]] = None
        for file, shown in _files(fs, path, url, what):
            if file.endswith(".safetensors"):
                self._read_header(file, shown)
            else:
                self._state = {**(self._state or {}), **self._load_pt(file, shown)}

    @classmethod
    def of(cls, weights: "str | Mapping[str, torch.Tensor] | WeightsFile", what: str = "weights file") -> "WeightsFile":
        """``weights`` as a :class:`WeightsFile`: a URL is opened, an in-memory state dict wrapped."""
        if isinstance(weights, WeightsFile):
            return weights
        if isinstance(weights, str):
            return cls(weights, what)
        out = cls.__new__(cls)
        out.url, out.what, out._entries, out._state = "state dict", what, {}, dict(weights)
        return out

    def _read_header(self, path: str, shown: str) -> None:
        header, data_start = _safetensors_header(self._fs, path, shown, self.what)
        for key, info in header.items():
            if key == "__metadata__":
                continue
            if info["dtype"] not in _ST_DTYPES:
                raise ValueError(f"{self.what} {shown}: tensor {key!r} has dtype {info['dtype']}, which torch cannot read")
            begin, end = info["data_offsets"]
            self._entries[key] = (path, _ST_DTYPES[info["dtype"]], tuple(info["shape"]), data_start + begin, data_start + end)

    def _load_pt(self, path: str, shown: str) -> dict[str, torch.Tensor]:
        if not _is_local(self._fs):
            with self._fs.open(path, "rb") as f:
                return _decode(f.read(), path, shown, self.what)
        try:
            return _unwrap(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
        except (RuntimeError, ValueError, EOFError, OSError) as e:
            raise _damaged(self.what, shown, e) from None

    def keys(self) -> list[str]:
        """Every tensor key of the file(s)."""
        return list(self._state if self._state is not None else self._entries)

    def meta(self) -> dict[str, torch.Tensor]:
        """``{key: meta tensor}`` with each stored shape and dtype (for key and shape checks; nothing is read)."""
        if self._state is not None:
            return {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in self._state.items()}
        return {k: torch.empty(shape, dtype=dtype, device="meta") for k, (_, dtype, shape, _, _) in self._entries.items()}

    def tensor(self, key: str) -> torch.Tensor:
        """The stored tensor ``key`` (its own dtype, on the CPU)."""
        if self._state is not None:
            return self._state[key]
        shape = self._entries[key][2]
        return self.flat_slice(key, 0, math.prod(shape)).reshape(shape)

    def flat_slice(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Elements ``[start, stop)`` of the flattened tensor ``key``, 1-D, reading only their bytes."""
        shape = tuple(self._state[key].shape) if self._state is not None else self._entries[key][2]
        if not 0 <= start <= stop <= math.prod(shape):
            raise IndexError(f"slice [{start}, {stop}) outside tensor {key!r} of shape {list(shape)} in {self.url}")
        if self._state is not None:
            return self._state[key].reshape(-1)[start:stop]
        path, dtype, shape, begin, end = self._entries[key]
        itemsize = torch.empty((), dtype=dtype).element_size()
        with self._fs.open(path, "rb") as f:
            f.seek(begin + start * itemsize)
            data = f.read((stop - start) * itemsize)
        if len(data) != (stop - start) * itemsize:
            raise ValueError(f"{self.what} {path} is truncated: tensor {key!r} needs bytes up to {end}")
        if not data:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(data), dtype=dtype)


class SafetensorsWriter:
    """One safetensors file written tensor by tensor, so that a model is saved without ever being held
    whole: ``specs`` names every tensor's key, shape and dtype up front (the header comes first),
    then :meth:`write` is called once per key in that order and :meth:`close` moves the finished
    file into place (written under a temporary name, flushed and fsynced when local, then renamed)."""

    def __init__(self, url: str, specs: Iterable[tuple[str, Iterable[int], torch.dtype]], metadata: Optional[dict[str, str]] = None):
        names = {v: k for k, v in _ST_DTYPES.items()}
        header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
        self._order: list[tuple[str, tuple[int, ...], torch.dtype]] = []
        offset = 0
        for key, shape, dtype in specs:
            shape = tuple(int(s) for s in shape)
            size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            header[key] = {"dtype": names[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._order.append((key, shape, dtype))
            offset += size
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self.url = url
        self._out = _AtomicFile(url)
        self._out.file.write(len(blob).to_bytes(8, "little") + blob)
        self._next = 0

    def write(self, key: str, tensor: torch.Tensor) -> None:
        """Append tensor ``key`` (the next one in ``specs``; its shape and dtype must match)."""
        want_key, shape, dtype = self._order[self._next]
        if key != want_key or tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise ValueError(f"{self.url}: expected {want_key} {list(shape)} {dtype} next, got {key} {list(tensor.shape)} {tensor.dtype}")
        self._out.file.write(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        self._next += 1

    def close(self) -> None:
        """Finish the file (every tensor must have been written) and move it into place."""
        if self._next != len(self._order):
            self.abort()
            raise ValueError(f"{self.url}: {len(self._order) - self._next} tensors were not written")
        self._out.commit()

    def abort(self) -> None:
        """Give up: remove the temporary file (``url`` is left as it was)."""
        self._out.abort()
