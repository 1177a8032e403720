"""Interactive browser viewer of an output directory, built on viser (https://viser.studio).

viser serves its own prebuilt web client from the installed package (no network needed), renders
Gaussian splats (``scene.add_gaussian_splats``), camera frusta with image textures and GUI panels;
VGGT's demo uses it for its point clouds. The viewer shows:

- the per-timestep Gaussians (one splat node per ``gaussians_t*.ply``, only timestep ``t`` visible),
  a "timestep" slider, a play/pause button and an fps slider;
- the cameras of ``cameras.json`` as frusta, textured with the frame of that view at timestep
  ``t`` from ``scene/`` when present; the browser opens looking through camera 0;
- ``grid.png`` and the settings of ``summary.json`` in the side panel.

The world is the reconstructor's (OpenCV axes: y down), so the viewer's up direction is ``-y``.
"""
from __future__ import annotations

import contextlib
import io
import math
import signal
import socket
import threading
from typing import Optional

import numpy as np
import viser

from fourd.formats import load_cameras_json
from fourd.viewer.outputs import (OutputFiles, camera_frusta, find_outputs, flatten_summary, frustum_images, opening_view, read_image,
                                  splats_for_viewer)
from fourd.weights import atomic_write_bytes

__all__ = ["Viewer", "write_splat_page"]


class Viewer:
    """A viser server showing one output directory; use as a context manager or call :meth:`stop`.

    Args:
        out_dir: the output directory (local path or fsspec URL); any subset of the files listed in
            :mod:`fourd.viewer.outputs` is shown.
        host: interface to bind, ``127.0.0.1`` (this machine only) by default.
        port: TCP port; viser moves to the next free one when it is taken (see :attr:`port`).
        fps: initial playback speed in timesteps per second, in [0.5, 30].

    Attributes:
        opening_view: where every browser opens (:func:`fourd.viewer.outputs.opening_view`): through
            input camera 0 at timestep 0, framed on the Gaussians it sees.
    """

    def __init__(self, out_dir: str, host: str = "127.0.0.1", port: int = 8080, fps: float = 4.0) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        if not 0.5 <= fps <= 30:
            raise ValueError(f"fps must be in [0.5, 30] (the range of the fps slider), got {fps}")
        self.files: OutputFiles = find_outputs(out_dir)
        self._host = host
        self._stop_event = threading.Event()
        self._stopped = False
        self._lock = threading.Lock()
        self._splats: list = []
        self._frusta: list = []
        self._images: Optional[np.ndarray] = None  # [V, T, h, w, 3] uint8
        self._playing = False
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        try:
            self._build(fps)
        except BaseException:
            self.server.stop()
            raise
        self._player = threading.Thread(target=self._play_loop, name="viewer-player", daemon=True)
        self._player.start()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self.server.get_port()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def num_timesteps(self) -> int:
        return max(len(self._splats), 1 if self._images is None else self._images.shape[1])

    @property
    def timestep(self) -> int:
        """The timestep currently shown."""
        return int(self._slider.value)

    def _build(self, fps: float) -> None:
        files, scene, gui = self.files, self.server.scene, self.server.gui
        scene.set_up_direction("-y")
        gui.configure_theme(show_share_button=False)  # viser's share button would tunnel the scene to a public URL
        centers = np.zeros((0, 3))
        for t, rel in enumerate(files.plys):
            splats = splats_for_viewer(files.url(rel))
            self._splats.append(scene.add_gaussian_splats(f"/gaussians/t{t:04d}", **splats, visible=t == 0))
            if t == 0:
                centers = splats["centers"]
        if files.scene is not None:
            self._images = frustum_images(files.url(files.scene), max(len(files.plys), 1))
        cameras = load_cameras_json(files.url(files.cameras)) if files.cameras is not None else None
        view = opening_view(cameras, centers)
        self.opening_view = view
        focus = view["focus"]
        for v, f in enumerate(camera_frusta(cameras) if cameras is not None else []):
            image = None if self._images is None or v >= len(self._images) else self._images[v, 0]
            # viser sizes a frustum by its volume: depth = scale / cbrt(tan(fov / 2)^2 aspect / 3); make it 0.05 focus deep
            scale = 0.05 * focus * (math.tan(f["fov"] / 2) ** 2 * f["aspect"] / 3) ** (1 / 3)
            self._frusta.append(scene.add_camera_frustum(
                f"/cameras/view_{v}", fov=f["fov"], aspect=f["aspect"], scale=scale, thickness=0.003 * focus,
                image=image, wxyz=f["wxyz"], position=f["position"], color=(70, 70, 70)))
        cam = self.server.initial_camera  # through camera 0 (see opening_view); "Reset View" returns here
        cam.position, cam.look_at, cam.up = tuple(view["position"]), tuple(view["look_at"]), tuple(view["up"])
        cam.fov, cam.near, cam.far = view["fov"], view["near"], view["far"]

        T = self.num_timesteps
        with gui.add_folder("Time"):
            self._slider = gui.add_slider("timestep", min=0, max=max(T - 1, 1), step=1, initial_value=0, disabled=T < 2)
            self._play = gui.add_button("Play", disabled=T < 2)
            self._fps = gui.add_slider("fps", min=0.5, max=30.0, step=0.5, initial_value=float(fps))
        self._slider.on_update(lambda _: self._show(self.timestep))
        self._play.on_click(lambda _: self._toggle_play())
        if files.grid is not None:
            with gui.add_folder("V x T grid"):
                gui.add_image(read_image(files.url(files.grid)), label=files.grid)
        rows = flatten_summary(files.read_summary())
        if rows:
            with gui.add_folder("summary.json", expand_by_default=False):
                gui.add_markdown("\n".join(f"- **{k}**: {v}" for k, v in rows))

    def _show(self, t: int) -> None:
        """Show timestep ``t``: its Gaussians and its frames on the frusta."""
        with self._lock:
            for i, handle in enumerate(self._splats):
                handle.visible = i == t
            if self._images is not None:
                for v, handle in enumerate(self._frusta[: len(self._images)]):
                    handle.image = self._images[v, min(t, self._images.shape[1] - 1)]

    def _toggle_play(self) -> None:
        self._playing = not self._playing
        self._play.label = "Pause" if self._playing else "Play"

    def _play_loop(self) -> None:
        while not self._stop_event.wait(1.0 / float(self._fps.value)):
            if self._playing and self.num_timesteps > 1:
                self._slider.value = (self.timestep + 1) % self.num_timesteps

    def record_html(self, seconds_per_timestep: float = 0.25) -> str:
        """The scene as one self-contained HTML page (viser's client with the recording inlined;
        opens from disk, no server): the timesteps played in order, ``seconds_per_timestep`` each,
        with the player's own timeline and play/pause. The GUI panels are not part of it."""
        if seconds_per_timestep <= 0:
            raise ValueError(f"seconds_per_timestep must be positive, got {seconds_per_timestep}")
        serializer = self.server.get_scene_serializer()
        for t in range(len(self._splats)):
            self._show(t)
            serializer.insert_sleep(seconds_per_timestep)
        self._show(self.timestep)
        return serializer.as_html()

    def stop(self) -> None:
        """Stop playback and the server (idempotent); the port is free afterwards."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_event.set()
        self._player.join(timeout=5.0)
        self.server.stop()

    def __enter__(self) -> "Viewer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Print the URL, block until SIGINT or SIGTERM (or :meth:`stop` from another thread), then stop cleanly."""
        previous = {s: signal.signal(s, lambda *_: self._stop_event.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        print(f"viewer of {self.files.root} at {self.url} (Ctrl-C to stop)", flush=True)
        try:
            while not self._stop_event.wait(0.5):
                pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.stop()


def write_splat_page(out_dir: str, filename: str = "splats.html", fps: float = 4.0) -> Optional[str]:
    """Write ``out_dir/filename``: the splats of ``out_dir`` as a standalone 3D player page
    (:meth:`Viewer.record_html`, ``fps`` timesteps per second). Size: about 0.8 MB of viser client
    plus the zstd-compressed recording, about 20 bytes per Gaussian and timestep (measured on an
    export). Returns its URL, or ``None`` when ``out_dir`` has no PLYs. Starts a viewer on a free
    local port for the recording, then stops it."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    files = find_outputs(out_dir)
    if not files.plys:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with contextlib.redirect_stdout(io.StringIO()), Viewer(out_dir, port=port) as viewer:  # no viser server banner
        page = viewer.record_html(1.0 / fps)
    url = files.url(filename)
    atomic_write_bytes(url, page.encode())
    return url
