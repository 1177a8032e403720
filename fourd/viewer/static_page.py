"""A static ``index.html`` next to the outputs: the grid image, the mp4s and summary.json as tables.

Needs no running Python: open the file in a browser (it only references the files next to it by
relative paths, so the directory can be copied or served by any static file server). The splats
are embedded from ``splats.html``, a self-contained viser player page with the scene inlined.
"""
from __future__ import annotations

import html
from typing import Any, Optional
from urllib.parse import quote

from fourd.viewer.outputs import find_outputs, format_value, flatten_summary
from fourd.weights import atomic_write_bytes

__all__ = ["summary_tables", "write_static_page", "view"]


def summary_tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """``summary.json`` as tables ``(title, header, rows)``.

    Top-level scalars and lists form one "summary" key/value table; an object whose values are all
    objects (e.g. ``{"stages": {"decode": {"seconds": 1.2, "peak_memory_gb": 3.4}, ...}}``) becomes
    a table with one row per entry and one column per inner key; any other object a key/value
    table of its flattened entries; a list of objects a table with one row per object.
    """
    scalars = [(k, format_value(v)) for k, v in summary.items() if not isinstance(v, dict) and not _is_record_list(v)]
    tables = [("summary", ["key", "value"], [list(r) for r in scalars])] if scalars else []
    for key, value in summary.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            columns = list(dict.fromkeys(c for v in value.values() for c in v))
            rows = [[name] + [format_value(entry[c]) if c in entry else "" for c in columns] for name, entry in value.items()]
            tables.append((key, [key] + columns, rows))
        elif isinstance(value, dict):
            tables.append((key, ["key", "value"], [list(r) for r in flatten_summary(value)]))
        elif _is_record_list(value):
            columns = list(dict.fromkeys(c for v in value for c in v))
            tables.append((key, columns, [[format_value(v[c]) if c in v else "" for c in columns] for v in value]))
    return tables


def _is_record_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
img.grid { width: 100%; max-width: 960px; image-rendering: pixelated; border: 1px solid #ccc; }
.videos { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; }
video { width: 320px; max-width: 100%; image-rendering: pixelated; border: 1px solid #ccc; background: #000; }
iframe.splats { width: 100%; max-width: 960px; height: 540px; border: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0; } caption { text-align: left; font-weight: 600; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 0.9em; }
"""


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="summary"><caption>{e(title)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write_static_page(out_dir: str, filename: str = "index.html", splats: bool = True, fps: float = 4.0) -> str:
    """Write ``out_dir/filename`` showing what ``out_dir`` holds; returns the page's URL.

    Shows the splats (with ``splats=True`` and PLYs present: ``splats.html`` written by
    :func:`fourd.viewer.server.write_splat_page`, the timesteps played at ``fps``, in an
    ``<iframe>``), ``grid.png``, every mp4 (``novel_views``, ``novel_times``, ``views/view_{v}``) as
    a looping ``<video>``, the tables of :func:`summary_tables` and links to the PLYs and cameras.
    Missing files are left out. Written atomically through fsspec (any URL ``find_outputs`` accepts).
    """
    files = find_outputs(out_dir)
    e = html.escape
    name = out_dir.rstrip("/").rsplit("/", 1)[-1] or out_dir
    parts = [f"<h1>4D result: {e(name)}</h1>"]
    if splats and files.plys:
        from fourd.viewer.server import write_splat_page  # imports viser; the rest of this page does not need it

        page = write_splat_page(out_dir, fps=fps).rsplit("/", 1)[-1]
        parts.append(
            f'<h2>Gaussians over time ({len(files.plys)} timesteps; drag to orbit, <a href="{quote(page)}">full page</a>)</h2>'
            f'<iframe class="splats" id="splats" src="{quote(page)}" title="per-timestep Gaussians"></iframe>'
        )
    if files.grid:
        parts.append(f'<h2>Generated V &times; T grid</h2><img class="grid" id="grid" src="{quote(files.grid)}" alt="V x T grid">')
    if files.videos:
        figures = "".join(
            f'<figure><video src="{quote(v)}" controls loop muted autoplay playsinline></video><figcaption>{e(v)}</figcaption></figure>'
            for v in files.videos
        )
        parts.append(f'<h2>Videos</h2><div class="videos">{figures}</div>')
    tables = summary_tables(files.read_summary())
    if tables:
        parts.append("<h2>Settings and metrics (summary.json)</h2>" + "".join(_table(*t) for t in tables))
    links = [p for p in (*files.plys, files.cameras, files.scene and files.scene + "/scene.json") if p]
    if links:
        items = "".join(f'<li><a href="{quote(p)}">{e(p)}</a></li>' for p in links)
        parts.append(
            "<h2>Files</h2><p>Per-timestep Gaussians (standard 3DGS PLY; open interactively with "
            f"<code>python launch/view.py {e(out_dir)}</code>) and cameras:</p><ul>{items}</ul>"
        )
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(name)}</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    url = files.url(filename)
    atomic_write_bytes(url, page.encode())
    return url


def view(out_dir: str, host: str = "127.0.0.1", port: int = 8080, static: bool = False) -> Optional[str]:
    """Entry point of ``launch/view.py``: serve ``out_dir`` until SIGINT/SIGTERM, or with
    ``static=True`` write ``out_dir/index.html`` (no server) and return its URL."""
    if static:
        return write_static_page(out_dir)
    from fourd.viewer.server import Viewer

    with Viewer(out_dir, host=host, port=port) as viewer:
        viewer.serve_forever()
    return None
