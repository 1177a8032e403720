"""Viewers of inference / export output directories: an interactive viser server and a static page.

See docs/viewer.md. ``fourd.viewer.server`` imports viser; the static page and the output
discovery do not need it.
"""
from fourd.viewer.outputs import OutputFiles, find_outputs
from fourd.viewer.static_page import write_static_page

__all__ = ["OutputFiles", "find_outputs", "write_static_page"]
