"""The viewers in a real headless browser: Debian's chromium driven by playwright.

On a tiny synthetic output directory (written with fourd.formats / fourd.data like the real
pipeline's): the viser viewer starts on a free localhost port, the page loads, the canvas shows the
splats (screenshot pixel statistics), moving the time slider changes the picture the way the two
PLYs differ (a red ball on the left at t=0, a blue ball on the right at t=1), the server stops and
frees its port; the static page shows its grid image, videos, summary tables and the splats (viser's standalone
player in an iframe).

Set ``VIEWER_SCREENSHOT=docs/viewer.png`` to also save the viewer screenshot there (how the README's
picture is made). Chromium is installed by scripts/setup_env.sh (apt-get, as root); the browser
tests skip only where it cannot be installed.
"""
import json
import math
import os
import shutil
import signal
import socket
import threading
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fourd.data.format import Scene
from fourd.data.scene_io import write_scene
from fourd.viewer import find_outputs, write_static_page
from fourd.viewer.outputs import camera_frusta, opening_view, splats_for_viewer
from fourd.viewer.static_page import summary_tables
from fourd.formats import load_cameras_json, load_ply, save_cameras_json, save_ply, save_video
from recon.render import render_gaussians

ROOT = Path(__file__).resolve().parents[1]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
V, T, H, W = 2, 2, 48, 64
SUMMARY = {
    "prompt": "a red ball rolls past a ring",
    "settings": {"num_views": V, "num_timesteps": T, "steps": 4, "cfg_scale": 5.0},
    "stages": {"generate": {"seconds": 1.25, "peak_memory_gb": 2.5}, "reconstruct": {"seconds": 0.5, "peak_memory_gb": 1.0}},
}


def _ball(center, color, n, radius, gen):
    d = torch.randn(n, 3, generator=gen)
    return torch.tensor(center) + radius * d / d.norm(dim=1, keepdim=True) * torch.rand(n, 1, generator=gen) ** (1 / 3), torch.tensor(color).expand(n, 3)


def write_synthetic_output(root: Path) -> None:
    """A V=2, T=2 output directory: PLYs, cameras.json, scene/, grid.png, an mp4, summary.json."""
    gen = torch.Generator().manual_seed(0)
    angle = torch.linspace(0, 2 * math.pi, 600)[:-1]
    ring = torch.stack([1.4 * angle.cos(), 1.4 * angle.sin(), torch.full_like(angle, 3.0)], 1)
    ring_rgb = torch.stack([0.2 + 0.3 * (1 + angle.sin()) / 2, torch.full_like(angle, 0.75), 0.2 + 0.2 * (1 + angle.cos()) / 2], 1)
    for t, (x, rgb) in enumerate([(-0.5, (0.9, 0.1, 0.1)), (0.5, (0.1, 0.2, 0.95))]):
        ball, ball_rgb = _ball((x, 0.0, 3.0), rgb, 300, 0.45, gen)
        means = torch.cat([ring, ball])
        n = len(means)
        save_ply(str(root / f"gaussians_t{t:04d}.ply"), means, torch.tensor([1.0, 0, 0, 0]).expand(n, 4),
                 torch.full((n, 3), 0.06), torch.full((n,), 0.9), torch.cat([ring_rgb, ball_rgb]))
    c, s = math.cos(0.3), math.sin(0.3)
    ext = torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], [[c, 0, -s, 0.6], [0, 1, 0, 0], [s, 0, c, 0.2]]])
    K = torch.tensor([[60.0, 0, W / 2], [0, 60.0, H / 2], [0, 0, 1]]).expand(V, 3, 3)
    save_cameras_json(str(root / "cameras.json"), ext, K, W, H)
    frames = torch.zeros(V, T, 3, H, W)
    for v in range(V):
        for t in range(T):
            frames[v, t, 1] = torch.linspace(0.3, 1.0, W)  # green at t=0, yellow at t=1 (neither red nor blue)
            frames[v, t, 0] = t * frames[v, t, 1]
            frames[v, t, 2] = 0.2 * v
    write_scene(Scene(name="synthetic", kind="dynamic", frames=frames), str(root / "scene"))
    grid = frames.permute(0, 3, 1, 4, 2).reshape(V * H, T * W, 3)  # rows = views, columns = timesteps
    Image.fromarray((grid * 255).round().byte().numpy()).save(root / "grid.png")
    save_video(str(root / "novel_views.mp4"), frames[0].permute(0, 2, 3, 1))
    (root / "summary.json").write_text(json.dumps(SUMMARY))


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("infer_out")
    write_synthetic_output(root)
    return root


@pytest.fixture(scope="module")
def main_output(tmp_path_factory) -> Path:
    """The README's main command (launch/infer.py with every default: the shipped models on the bundled
    example) run in-process; its item folder, the directory a user opens with launch/view.py."""
    from hydra import compose, initialize_config_dir

    from infer4d.job import run_inference

    out = tmp_path_factory.mktemp("main_job")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("infer", overrides=[f"output.dir={out}", "sampler.progress=false", "device=cpu"])
    assert run_inference(cfg, str(out)) == 0
    (item,) = [p for p in out.iterdir() if p.is_dir()]
    return item


def _browser_unavailable_reason() -> str | None:
    if os.path.exists(CHROMIUM):
        return None
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return f"no browser: {CHROMIUM} is missing and apt-get needs root (as root, bash scripts/setup_env.sh installs it)"
    if shutil.which("apt-get") is None:
        return f"no browser: {CHROMIUM} is missing and this system has no apt-get to install Debian's chromium"
    pytest.fail(f"{CHROMIUM} is missing but installable: run `bash scripts/setup_env.sh` (as root it apt-installs chromium)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = _browser_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium_profile")
    with sync_playwright() as p:  # a persistent context is how playwright takes a fresh --user-data-dir
        context = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield context
        context.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(np.float32)


def _canvas_pixels(page) -> np.ndarray:
    """Screenshot [H, W, 3] float of the 3D view left of viser's control panel and above its axes gizmo (a 1000 x 640 page)."""
    return _pixels(page.screenshot())[:560, :640]


def _ball_stats(img: np.ndarray) -> dict:
    """Counts and mean x of strongly red and strongly blue pixels of an [H, W, 3] screenshot."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    out = {}
    for name, mask in (("red", (r > b + 60) & (r > g + 60)), ("blue", (b > r + 60) & (b > g + 40))):
        xs = np.nonzero(mask)[1]
        out[name] = (len(xs), float(xs.mean()) if len(xs) else float("nan"))
    return out


def _wait_for(predicate, what: str, timeout: float = 20.0, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


# ---------------------------------------------------------------- library pieces, no browser


def test_find_outputs_lists_present_files_and_rejects_empty(output_dir, tmp_path):
    files = find_outputs(str(output_dir))
    assert files.plys == ("gaussians_t0000.ply", "gaussians_t0001.ply")
    assert (files.cameras, files.grid, files.scene, files.summary) == ("cameras.json", "grid.png", "scene", "summary.json")
    assert files.videos == ("novel_views.mp4",)
    (tmp_path / "only").mkdir()
    shutil.copy(output_dir / "grid.png", tmp_path / "only")
    only = find_outputs(str(tmp_path / "only"))
    assert only.grid == "grid.png" and only.plys == () and only.cameras is None
    page = (tmp_path / "only" / "index.html")
    assert write_static_page(str(tmp_path / "only")) == str(page)
    assert 'id="grid"' in page.read_text() and "<iframe" not in page.read_text()  # no PLYs: no 3D player
    assert not (tmp_path / "only" / "splats.html").exists()
    with pytest.raises(ValueError, match="no viewer outputs"):
        find_outputs(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="output directory not found"):
        find_outputs(str(tmp_path / "nope"))


def test_splat_covariances_and_frusta_match_closed_forms(tmp_path):
    # One Gaussian rotated 90 degrees about z: the x and y variances swap.
    q = torch.tensor([[math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]])
    save_ply(str(tmp_path / "g.ply"), torch.zeros(1, 3), q, torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([0.5]), torch.tensor([[1.0, 0, 0]]))
    s = splats_for_viewer(str(tmp_path / "g.ply"))
    np.testing.assert_allclose(s["covariances"][0], np.diag([0.04, 0.01, 0.09]), atol=1e-6)
    np.testing.assert_allclose(s["opacities"], [[0.5]], atol=1e-6)
    # A camera at world (1, 2, 3) looking along world +x: centre -R^T t, fov from fy.
    R = torch.tensor([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])  # camera-from-world: z_cam = x_world
    centre = torch.tensor([1.0, 2, 3])
    ext = torch.cat([R, -(R @ centre)[:, None]], 1)[None]
    save_cameras_json(str(tmp_path / "c.json"), ext, torch.tensor([[[50.0, 0, 32], [0, 40, 24], [0, 0, 1]]]), 64, 48)
    f = camera_frusta(load_cameras_json(str(tmp_path / "c.json")))[0]
    np.testing.assert_allclose(f["position"], [1, 2, 3], atol=1e-9)
    w, x, y, z = f["wxyz"]
    forward = [2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)]  # R_wc @ e_z
    np.testing.assert_allclose(forward, [1, 0, 0], atol=1e-9)
    assert f["fov"] == pytest.approx(2 * math.atan(48 / 80)) and f["aspect"] == pytest.approx(64 / 48)


def test_opening_view_looks_through_camera_0_framed_on_what_it_sees():
    # Camera 0 at world (1, 0, 0) looking along +z, 64 x 48 pixels, fy = 40; 500 Gaussians in its
    # view around depth 4, plus outliers: far along its axis, far to the side, behind it.
    ext = torch.tensor([[[1.0, 0, 0, -1], [0, 1, 0, 0], [0, 0, 1, 0]]], dtype=torch.float64)
    K = torch.tensor([[[40.0, 0, 32], [0, 40, 24], [0, 0, 1]]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    seen = torch.randn(500, 3, generator=gen) * 0.2 + torch.tensor([1.0, 0, 4])
    far = torch.tensor([1.0, 0, 0]) + torch.linspace(200, 1000, 60)[:, None] * torch.tensor([0.0, 0, 1])
    side = torch.tensor([40.0, 5, 3]).expand(100, 3)
    behind = torch.tensor([1.0, 0, -30]).expand(100, 3)
    centers = torch.cat([seen, far, side, behind]).numpy()
    view = opening_view({"extrinsics": ext, "intrinsics": K, "width": 64, "height": 48}, centers)
    assert view["focus"] == pytest.approx(4.0, abs=0.1)  # the median depth of what camera 0 sees, not of the outliers
    np.testing.assert_allclose(view["position"], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(view["look_at"], [1, 0, view["focus"]], atol=1e-12)
    np.testing.assert_allclose(view["up"], [0, -1, 0], atol=1e-12)  # OpenCV: image up is -y
    assert view["fov"] == pytest.approx(2 * math.atan(24 / 40))
    assert view["near"] == pytest.approx(0.1 * view["focus"]) and view["far"] == pytest.approx(1000 * view["focus"])
    # Without cameras: the middle of the 5th-95th percentile box, from -z; a few outliers (4%) do not move it.
    free = opening_view(None, torch.cat([seen, far[:10], side[:10]]).numpy())
    np.testing.assert_allclose(free["look_at"][:2], [1.0, 0.0], atol=0.3)
    assert free["look_at"][2] < 10 and free["position"][2] < free["look_at"][2]


def test_summary_tables_layout():
    tables = {title: (header, rows) for title, header, rows in summary_tables(SUMMARY)}
    assert tables["summary"] == (["key", "value"], [["prompt", SUMMARY["prompt"]]])
    assert tables["stages"] == (["stages", "seconds", "peak_memory_gb"], [["generate", "1.25", "2.5"], ["reconstruct", "0.5", "1"]])
    assert ["cfg_scale", "5"] in tables["settings"][1]


def test_cli_static_and_bad_dir(output_dir, tmp_path, capsys):
    from launch.view import main

    main([str(output_dir), "--static"])
    assert capsys.readouterr().out.strip() == f"wrote {output_dir}/index.html"
    assert (output_dir / "index.html").exists() and (output_dir / "splats.html").exists()
    with pytest.raises(SystemExit, match="^error: output directory not found"):
        main([str(tmp_path / "missing")])


def test_serve_forever_stops_on_sigterm(output_dir):
    from fourd.viewer.server import Viewer

    before = signal.getsignal(signal.SIGTERM)
    viewer = Viewer(str(output_dir), port=_free_port())
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    viewer.serve_forever()  # returns once the signal arrives
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", viewer.port), timeout=2).close()
    assert signal.getsignal(signal.SIGTERM) is before and not viewer._player.is_alive()


# ---------------------------------------------------------------- in the browser


def test_viewer_in_browser(output_dir, browser):
    from fourd.viewer.server import Viewer

    page = browser.new_page()
    page.set_viewport_size({"width": 1000, "height": 640})
    with Viewer(str(output_dir), port=_free_port()) as viewer:
        assert viewer.url.startswith("http://127.0.0.1:")
        page.goto(viewer.url)
        page.wait_for_selector("canvas", timeout=20_000)
        notice = page.locator("#webgl-software-rendering button")  # viser's "software WebGL" note
        notice.click(timeout=20_000)
        notice.wait_for(state="detached")
        # The splats of t=0 drawn: a red ball on the left, no blue ball.
        first = _wait_for(lambda: (s := _ball_stats(_canvas_pixels(page)))["red"][0] > 500 and s, "the t=0 splats to render")
        shot0 = _canvas_pixels(page)
        assert shot0.std() > 20 and (np.abs(shot0 - shot0[5, 5]).sum(-1) > 60).mean() > 0.05  # not a blank canvas
        assert first["blue"][0] < 50
        # Click the right end of the time slider (arrow keys would also turn viser's camera): the
        # picture changes to t=1's blue ball on the right.
        track = page.locator(".mantine-Slider-root").first.bounding_box()
        page.mouse.click(track["x"] + track["width"] - 2, track["y"] + track["height"] / 2)
        _wait_for(lambda: viewer.timestep == 1, "the server to receive the slider move")
        second = _wait_for(lambda: (s := _ball_stats(_canvas_pixels(page)))["blue"][0] > 500 and s, "the t=1 splats to render")
        assert second["red"][0] < 50 and second["blue"][1] > first["red"][1]  # blue ball right of where the red one was
        # Play: the server steps through the timesteps (wrapping to 0) until Pause.
        page.get_by_role("button", name="Play").click()
        page.get_by_role("button", name="Pause").wait_for()
        _wait_for(lambda: viewer.timestep == 0, "playback to wrap around to t=0")
        page.get_by_role("button", name="Pause").click()
        page.get_by_role("button", name="Play").wait_for()
        port = viewer.port
    # Stopped: the port refuses connections and the playback thread is gone.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert not viewer._player.is_alive()
    page.close()


# The opening frame against the project's renderer (recon.render.render_gaussians) from camera 0.
# viser (1.1.1) draws a Gaussian only when its centre lies inside 1.1 x its view and between the near and
# far planes (its splat vertex shader); our rasterizer draws every Gaussian that overlaps the image. So the
# reference renders the Gaussians the viewer draws, with camera 0's pose and the viewer's pinhole (camera 0's
# vertical field of view, square pixels, centred); both are compared at half resolution (area mean) over
# camera 0's image (the middle of the canvas, camera 0's aspect wide), with viser's panels hidden.
# Measured here: 35.9 dB on the main job's output, 35.7 dB on the synthetic one; turning the reference
# camera (10 degrees: 27.5 dB on the blurry main output; 3 degrees: 11.4 dB on the sharp synthetic one)
# falls under the floor. (A small viewport: software WebGL draws the main output's large splats slowly.)
OPENING_VIEWPORT = {"width": 480, "height": 240}
OPENING_PSNR_FLOOR = 30.0  # dB
HIDE_PANELS = ".mantine-Paper-root, .mantine-Notification-root { visibility: hidden !important; }"  # viser's GUI panel, WebGL note
# viser 1.1.1's splat mesh hands three.js a 2-component "position" attribute (its quad corners); three.js's
# frustum culling reads it as 3D and logs this once per page, whatever the scene (viser's bundled client).
VISER_SPLAT_ERROR = "THREE.BufferGeometry.computeBoundingSphere(): Computed radius is NaN"


def _settled_screenshot(page, timeout: float = 30.0) -> np.ndarray:
    """Page screenshot [H, W, 3] in [0, 1] once two taken 1 s apart agree (splats faded in and sorted)."""
    previous = _pixels(page.screenshot()) / 255
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.0)
        shot = _pixels(page.screenshot()) / 255
        if np.abs(shot - previous).mean() < 1e-3:
            return shot
        previous = shot
    raise AssertionError("the viewer's picture did not settle")


def _render_like_viewer(ply: dict, extrinsic: torch.Tensor, view: dict, width: int, height: int) -> np.ndarray:
    """[H, W, 3] render of the PLY's Gaussians that viser draws, through ``extrinsic`` [3, 4] with the viewer's pinhole."""
    f = height / 2 / math.tan(view["fov"] / 2)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    cam = ply["means"] @ extrinsic[:, :3].float().T + extrinsic[:, 3].float()  # [N, 3] camera coordinates
    z = cam[:, 2].clamp_min(1e-9)
    ndc_x, ndc_y = f * cam[:, 0] / z / (width / 2), f * cam[:, 1] / z / (height / 2)
    drawn = (cam[:, 2] > view["near"]) & (cam[:, 2] < view["far"]) & (ndc_x.abs() < 1.1) & (ndc_y.abs() < 1.1)
    viewmat = torch.eye(4)
    viewmat[:3] = extrinsic.float()
    g = {k: v[drawn] for k, v in ply.items()}
    color, _, _ = render_gaussians(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"].clamp(0, 1), viewmat[None], K[None],
                                   width, height, near_plane=view["near"], far_plane=view["far"], backgrounds=torch.ones(1, 3), backend="torch")
    return color[0].numpy()


def _turned(extrinsic: torch.Tensor, degrees: float) -> torch.Tensor:
    """``extrinsic`` [3, 4] turned about the camera's own y axis."""
    a = math.radians(degrees)
    R = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=extrinsic.dtype)
    return R @ extrinsic


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(((a - b) ** 2).mean()))


@pytest.mark.parametrize("which, turn_degrees", [("main_output", 10.0), ("output_dir", 3.0)], ids=["main_job", "synthetic"])
def test_viewer_opens_through_camera_0_like_our_render(which, turn_degrees, request, browser):
    from fourd.viewer.server import Viewer

    out = request.getfixturevalue(which)
    page = browser.new_page()
    page.set_viewport_size(OPENING_VIEWPORT)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    with Viewer(str(out), port=_free_port()) as viewer:
        view = viewer.opening_view
        page.goto(viewer.url)
        page.wait_for_selector("canvas", timeout=20_000)
        hidden = page.add_style_tag(content=HIDE_PANELS)
        shot = _settled_screenshot(page)
        if which == "main_output" and os.environ.get("VIEWER_SCREENSHOT"):  # docs/viewer.png: the main job's output as a user opens it
            hidden.evaluate("e => e.remove()")
            page.locator("#webgl-software-rendering button").click(timeout=20_000, no_wait_after=True)
            page.set_viewport_size({"width": 1100, "height": 620})
            _settled_screenshot(page)
            page.screenshot(path=os.environ["VIEWER_SCREENSHOT"])
    page.close()
    cams = load_cameras_json(str(out / "cameras.json"))
    camera0 = camera_frusta(cams)[0]
    np.testing.assert_allclose(view["position"], camera0["position"], atol=1e-6)
    assert view["fov"] == pytest.approx(camera0["fov"])
    ply = load_ply(str(out / "gaussians_t0000.ply"))
    s = 2  # compare at half resolution
    W, H = OPENING_VIEWPORT["width"] // s, OPENING_VIEWPORT["height"] // s
    shot = shot.reshape(H, s, W, s, 3).mean((1, 3))
    half = round(cams["width"] / 2 / float(cams["intrinsics"][0, 0, 0]) * H / 2 / math.tan(view["fov"] / 2))  # camera 0's half width
    region = (slice(None), slice(W // 2 - half, W // 2 + half))
    ours = _render_like_viewer(ply, cams["extrinsics"][0], view, W, H)
    assert _psnr(shot[region], ours[region]) >= OPENING_PSNR_FLOOR
    turned = _render_like_viewer(ply, _turned(cams["extrinsics"][0], turn_degrees), view, W, H)
    assert _psnr(shot[region], turned[region]) < OPENING_PSNR_FLOOR  # the comparison tells the cameras apart
    assert [e for e in errors if not e.startswith(VISER_SPLAT_ERROR)] == []

def test_static_page_in_browser(output_dir, browser):
    url = write_static_page(str(output_dir))
    page = browser.new_page()
    page.set_viewport_size({"width": 1000, "height": 800})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(Path(url).resolve().as_uri())
    grid = page.locator("img#grid")
    grid.wait_for(state="visible")
    assert page.evaluate("document.getElementById('grid').naturalWidth") == T * W
    assert grid.bounding_box()["width"] > 0
    stages = page.locator("table.summary", has_text="peak_memory_gb")
    assert stages.is_visible() and "reconstruct" in stages.inner_text()
    assert page.locator("video").count() == 1
    video = page.locator("video").first.bounding_box()  # a 64 x 48 mp4 shown at a visible size, not as a small square
    assert video["width"] >= 256 and video["height"] >= 0.7 * video["width"]
    # The splats play inside the page's iframe (viser's standalone player, opened from disk).
    page.frame_locator("iframe#splats").locator("canvas[data-engine]").wait_for()  # three.js canvas of the player
    frame = page.locator("iframe#splats")
    _wait_for(lambda: _ball_stats(_pixels(frame.screenshot()))["blue"][0] > 300, "the static player to draw the splats", every=1.0)
    page.close()
    assert [e for e in errors if not e.startswith(VISER_SPLAT_ERROR)] == []
