"""Camera geometry: quaternions, the absT_quaR_FoV pose encoding, unprojection/projection."""
import math

import torch

from fourd.rotations import matrix_to_quat_wxyz, matrix_to_quat_xyzw, quat_multiply_wxyz, quat_wxyz_to_matrix, quat_xyzw_to_matrix
from recon.geometry import cameras_from_points, cameras_to_pose_encoding, pose_encoding_to_cameras, project_points, unproject_depth

S = math.sqrt(0.5)
RZ90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # x -> y


def _random_quats(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64), dim=-1)
    return torch.where(q[:, :1] < 0, -q, q)


def test_quaternion_conventions_on_a_known_rotation():
    torch.testing.assert_close(quat_xyzw_to_matrix(torch.tensor([0.0, 0.0, S, S])), RZ90)
    torch.testing.assert_close(quat_wxyz_to_matrix(torch.tensor([S, 0.0, 0.0, S])), RZ90)
    torch.testing.assert_close(matrix_to_quat_xyzw(RZ90), torch.tensor([0.0, 0.0, S, S]))


def test_matrix_quaternion_round_trip_including_half_turns():
    q = _random_quats(256)
    q = torch.cat([q, torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, S, S, 0.0], [1e-4, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    q = torch.nn.functional.normalize(q, dim=-1)
    torch.testing.assert_close(matrix_to_quat_wxyz(quat_wxyz_to_matrix(q)), q)


def test_quaternion_product_composes_rotations():
    a, b = _random_quats(32, 1), _random_quats(32, 2)
    torch.testing.assert_close(quat_wxyz_to_matrix(quat_multiply_wxyz(a, b)), quat_wxyz_to_matrix(a) @ quat_wxyz_to_matrix(b))


def test_pose_encoding_decodes_to_hand_computed_cameras():
    H, W = 100, 200
    fov_h, fov_w = 2 * math.atan(50 / 100), 2 * math.atan(100 / 150)
    enc = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, S, S, fov_h, fov_w])
    extrinsics, intrinsics = pose_encoding_to_cameras(enc, (H, W))
    torch.testing.assert_close(extrinsics, torch.cat([RZ90, torch.tensor([[1.0], [2.0], [3.0]])], dim=1))
    torch.testing.assert_close(intrinsics, torch.tensor([[150.0, 0.0, 100.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]]))


def test_pose_encoding_round_trip():
    n, hw = 64, (294, 518)
    g = torch.Generator().manual_seed(3)
    enc = torch.cat(
        [torch.randn(n, 3, generator=g, dtype=torch.float64), _random_quats(n, 4).roll(-1, -1), 0.3 + 1.5 * torch.rand(n, 2, generator=g, dtype=torch.float64)],
        dim=-1,
    )
    extrinsics, intrinsics = pose_encoding_to_cameras(enc, hw)
    torch.testing.assert_close(cameras_to_pose_encoding(extrinsics, intrinsics, hw), enc)
    e2, i2 = pose_encoding_to_cameras(cameras_to_pose_encoding(extrinsics, intrinsics, hw), hw)
    torch.testing.assert_close((e2, i2), (extrinsics, intrinsics))


def test_unprojection_matches_a_hand_made_pinhole_example():
    K = torch.tensor([[100.0, 0.0, 50.0], [0.0, 80.0, 40.0], [0.0, 0.0, 1.0]])
    t = torch.tensor([1.0, 2.0, 3.0])
    extrinsics = torch.cat([RZ90, t[:, None]], dim=1)
    depth = torch.full((60, 70), 2.0)
    depth[20, 30] = 4.0
    points = unproject_depth(depth, extrinsics, K)
    # pixel (column 30, row 20) has its centre at (30.5, 20.5): pixel centres at +0.5 like the data and gsplat
    cam = torch.tensor([(30.5 - 50) / 100 * 4.0, (20.5 - 40) / 80 * 4.0, 4.0])
    torch.testing.assert_close(points[20, 30], RZ90.T @ (cam - t))
    pix, z = project_points(points[20, 30][None], extrinsics, K)
    torch.testing.assert_close(pix[0], torch.tensor([30.5, 20.5]))
    torch.testing.assert_close(z[0], torch.tensor(4.0))
    torch.testing.assert_close(points[0, 0], RZ90.T @ (torch.tensor([-0.99, -0.9875, 2.0]) - t))


def test_unprojection_batched_round_trip():
    g = torch.Generator().manual_seed(5)
    B, H, W = 3, 6, 9
    depth = 1 + torch.rand(B, H, W, generator=g, dtype=torch.float64)
    extrinsics, intrinsics = pose_encoding_to_cameras(
        torch.cat([torch.randn(B, 3, generator=g, dtype=torch.float64), _random_quats(B, 6).roll(-1, -1), torch.full((B, 2), 1.0, dtype=torch.float64)], -1),
        (H, W),
    )
    points = unproject_depth(depth, extrinsics, intrinsics).reshape(B, H * W, 3)
    pix, z = project_points(points, extrinsics, intrinsics)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    torch.testing.assert_close(pix, torch.stack([u, v], -1).reshape(1, H * W, 2).expand(B, -1, -1))
    torch.testing.assert_close(z, depth.reshape(B, -1))


def test_cameras_from_points_recover_the_cameras_of_an_exact_point_map():
    g = torch.Generator().manual_seed(7)
    B, V, H, W = 2, 3, 5, 7
    depth = 1 + torch.rand(B, V, H, W, generator=g, dtype=torch.float64)
    enc = torch.cat([torch.randn(B * V, 3, generator=g, dtype=torch.float64), _random_quats(B * V, 8).roll(-1, -1),
                     torch.full((B * V, 2), 1.0, dtype=torch.float64)], -1)
    extrinsics, intrinsics = (x.reshape(B, V, 3, -1) for x in pose_encoding_to_cameras(enc, (H, W)))
    points = unproject_depth(depth, extrinsics, intrinsics)  # the exact world point map of each view
    torch.testing.assert_close(cameras_from_points(points, depth, intrinsics), extrinsics)
    # a point map whose views all sit at one pose gives that pose for every view (what a collapsed model implies)
    same = unproject_depth(depth, extrinsics[:, :1].expand(-1, V, -1, -1), intrinsics)
    torch.testing.assert_close(cameras_from_points(same, depth, intrinsics), extrinsics[:, :1].expand(-1, V, -1, -1))
