"""Images and files in input messages, read once into a form every protocol converts from.

An ``input_image`` is a URL the upstream fetches itself (``image_url`` http(s)) or inline data
(``image_url`` a ``data:`` URL). An ``input_file`` reaches a provider inline: ``file_data`` as
sent (a ``data:`` URL or bare base64), or ``file_url`` fetched by the worker beforehand
(``worker.fetch``), so no upstream is ever asked to reach into the network resq runs in. The
API checks at create that the route takes them (``api.capabilities``).
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

PDF = "application/pdf"


@dataclass(frozen=True)
class Media:
    kind: Literal["image", "file"]
    url: str | None = None  # an http(s) URL the upstream may fetch (images only)
    media_type: str | None = None
    data: str | None = None  # base64, no ``data:`` prefix
    filename: str | None = None
    detail: str | None = None  # an image's ``detail``

    @property
    def data_url(self) -> str:
        return f"data:{self.media_type or 'application/octet-stream'};base64,{self.data}"


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(media type, base64 data)`` of a base64 ``data:`` URL, or None."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    return head.removesuffix(";base64").split(";", 1)[0] or "application/octet-stream", data


def guess_type(filename: str | None, default: str = "application/octet-stream") -> str:
    if not filename:
        return default
    return mimetypes.guess_type(filename)[0] or default


def filename_of(url: str) -> str | None:
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    return name or None


def media_of(part: dict[str, Any]) -> Media | None:
    """The image or file of a content part, or None for any other part."""
    ptype = part.get("type")
    if ptype == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            return None
        inline = parse_data_url(url)
        if inline is not None:
            return Media("image", media_type=inline[0], data=inline[1], detail=part.get("detail"))
        return Media("image", url=url, detail=part.get("detail"))
    if ptype == "input_file":
        raw = part.get("file_data")
        if not isinstance(raw, str):
            return None
        filename = part.get("filename")
        inline = parse_data_url(raw)
        if inline is not None:
            return Media("file", media_type=inline[0], data=inline[1], filename=filename)
        return Media("file", media_type=guess_type(filename, PDF), data=raw, filename=filename)
    return None


def has_media(items: list[dict[str, Any]], kind: str) -> bool:
    """Whether any message among ``items`` holds an image (``kind`` "image") or a file."""
    wanted = "input_image" if kind == "image" else "input_file"
    for item in items:
        content = item.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == wanted for p in content
        ):
            return True
    return False
