"""Upload components that refuse URLs: gradio would fetch a photo or zip given as an http(s) URL itself."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import gradio as gr


def refuses_urls(component: type) -> type:
    """gradio fetches a photo or zip passed to the API as an http(s) URL, with no size limit, before the app sees
    it: refused in the step that would download it, unless the URL names a file already uploaded to this server
    (then that file is used, never fetched). A class decorator, not a base: gradio picks a template component's
    frontend by its first base class."""
    move, move_async = component.move_resource_to_block_cache, component.async_move_resource_to_block_cache

    def move_resource_to_block_cache(self, url_or_file_path):
        return move(self, _local_or_refused(url_or_file_path, self.GRADIO_CACHE))

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        return await move_async(self, _local_or_refused(url_or_file_path, self.GRADIO_CACHE))

    component.move_resource_to_block_cache = move_resource_to_block_cache
    component.async_move_resource_to_block_cache = async_move_resource_to_block_cache
    return component


def _local_or_refused(url_or_file_path: object, cache: str) -> object:
    """A path as it is; a URL of this server's own upload (``.../gradio_api/file=<path in its cache>``, as the
    upload tools of MCP clients hand out) as that path; any other URL refused."""
    text = str(url_or_file_path)
    if not text.lower().startswith(("http://", "https://")):
        return url_or_file_path
    _, marker, rest = text.partition("/gradio_api/file=")
    local = Path(urllib.parse.unquote(rest)).resolve() if marker else None
    if local is not None and local.is_file() and local.is_relative_to(Path(cache).resolve()):
        return str(local)
    _refuse_urls(text)
    return url_or_file_path


def _refuse_urls(url_or_file_path: object) -> None:
    if str(url_or_file_path).lower().startswith(("http://", "https://")):
        raise gr.Error("Files are not fetched from URLs: upload the file itself (MCP clients: send it base64-encoded).")


@refuses_urls
class PhotoInput(gr.Image):
    """A gr.Image that hands the uploaded file to the pipeline untouched (gradio has already checked the path).

    gr.Image.preprocess opens every upload with Pillow and converts it to RGB: a file that is not a photo, or a
    decompression bomb, fails inside gradio with its generic error instead of the pipeline's one-line message,
    and RGBA / 16-bit photos get flattened by gradio (black background, clipped) before the pipeline sees them.
    """

    is_template = True  # drawn by gr.Image's frontend

    def preprocess(self, payload):  # type: ignore[override]
        if payload is not None and payload.path and self.type == "filepath":
            return str(payload.path)
        return super().preprocess(payload)


@refuses_urls
class ZipInput(gr.File):
    is_template = True  # drawn by gr.File's frontend


@refuses_urls
class PhotosInput(gr.File):
    """Several photos of one vehicle (file_count="multiple"): each file is handed to the pipeline as it is."""

    is_template = True  # drawn by gr.File's frontend
