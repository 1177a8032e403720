"""One pixel-centre convention end to end (issue 9 item 7): data (rays through pixel centres at +0.5),
the model's unprojection (principal point of the pose encoding at (W/2, H/2)), the renderer and the
export agree, so an input view re-rendered from its own ground-truth depth and cameras comes back."""
import math

import torch

from fourd.data import generate_scene
from recon.geometry import cameras_to_pose_encoding, pose_encoding_to_cameras
from recon.model import build_reconstructor
from recon.model.gaussian_head import GAUSSIAN_CHANNELS
from recon.render import render_gaussians
from recon.train_task import gaussians_in_reference_frame, relative_extrinsics


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def test_input_view_re_renders_from_ground_truth_depth_through_the_whole_path():
    """GT depth + GT cameras (decoded from their pose encoding, as the model's cameras are) -> the
    Gaussian head's unprojection with tiny isotropic Gaussians (0.1 pixel footprints, opacity ~1,
    zero offsets) -> the reference-frame mapping -> the rasterizer in the data's GT intrinsics:
    every input view comes back above 40 dB (half a pixel off gives ~6 dB: neighbours' Gaussians
    fall between pixel centres)."""
    H = W = 28
    s = generate_scene(4, num_views=2, num_frames=1, height=H, width=W, kind="static")
    ext = relative_extrinsics(s.extrinsics[:, 0], s.extrinsics[:1, 0])  # [V, 3, 4], view 0 = identity
    K = s.intrinsics[:, 0]  # [V, 3, 3], data convention
    model_ext, model_K = pose_encoding_to_cameras(cameras_to_pose_encoding(ext, K, (H, W)), (H, W))
    torch.testing.assert_close(model_K, K)  # a centred camera decodes to the data's intrinsics as they are

    head = build_reconstructor("tiny-4d").gaussian_head
    V = ext.shape[0]
    raw = torch.zeros(V, GAUSSIAN_CHANNELS, H, W)
    raw[:, 3] = 12.0  # opacity sigmoid(12) ~ 1
    raw[:, 4:7] = math.log(math.expm1(0.1))  # scales: 0.1 pixel footprints
    raw[:, 7] = 1.0  # identity rotation
    with torch.no_grad():
        g = head.to_gaussians(raw, s.frames[:, 0], s.depth[:, 0], model_ext, model_K)  # [V, H, W]
        g = type(g)(*(x.reshape(1, 1, V * H * W, *x.shape[3:]) for x in (g.means, g.quats, g.scales, g.opacities, g.colors)))
        g = gaussians_in_reference_frame(g, torch.eye(4)[None, None, :3], torch.ones(1))
        viewmats = torch.eye(4).repeat(V, 1, 1)
        viewmats[:, :3] = ext
        rgb, _, _ = render_gaussians(g.means[0, 0], g.quats[0, 0], g.scales[0, 0], g.opacities[0, 0], g.colors[0, 0],
                                     viewmats, K, W, H, eps2d=0.0, backend="torch")
    for v in range(V):
        assert _psnr(rgb[v].permute(2, 0, 1), s.frames[v, 0]) > 40.0


def test_export_cameras_are_the_predicted_cameras_without_a_half_pixel_shift():
    """The exported intrinsics (cameras.json, novel-view renders) are the model's own: principal
    point at (W/2, H/2), the same convention its Gaussians were unprojected with."""
    from recon.inference import reconstruct

    torch.manual_seed(0)
    model = build_reconstructor("tiny-4d").eval()
    frames = torch.rand(2, 1, 3, 28, 28)
    with torch.no_grad():
        out = model(frames[None])
    K = reconstruct(model, frames)["intrinsics"]
    torch.testing.assert_close(K[..., :2, 2], torch.full_like(K[..., :2, 2], 14.0))
    finite = torch.isfinite(out.intrinsics[0]).all(-1).all(-1)
    torch.testing.assert_close(K[finite], out.intrinsics[0][finite])
