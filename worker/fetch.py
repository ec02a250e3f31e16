"""Fetching an ``input_file``'s ``file_url`` before the model is asked, so every provider gets
the file inline (``shared.media``).

The URL is checked against the outbound-address policy again when fetched (DNS may have
changed since the create), redirects are not followed, and the body is capped at
``RESQ_MAX_FETCH_BYTES``: a fetch that fails is the run's failure, with a message that says
which URL and why.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx

from shared.errors import InvalidRequest, ResqError
from shared.media import PDF, filename_of, guess_type
from shared.netpolicy import OutboundPolicy

JSON = dict[str, Any]
Fetch = Callable[[str], tuple[bytes, str]]  # URL → (body, media type)


class FetchFailed(ResqError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_file_url"


class Fetcher:
    def __init__(
        self, client: httpx.Client, outbound: OutboundPolicy | None, max_bytes: int
    ) -> None:
        self.client = client
        self.outbound = outbound
        self.max_bytes = max_bytes

    def __call__(self, url: str) -> tuple[bytes, str]:
        if self.outbound is not None:
            try:
                self.outbound.check_url(url, param="file_url")
            except InvalidRequest as exc:
                raise FetchFailed(f"Could not fetch file_url: {exc.message}") from None
        try:
            with self.client.stream("GET", url, follow_redirects=False) as response:
                if response.status_code != 200:
                    raise FetchFailed(
                        f"Could not fetch file_url {url!r}: HTTP {response.status_code}."
                    )
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise FetchFailed(
                            f"Could not fetch file_url {url!r}: larger than "
                            f"{self.max_bytes} bytes (RESQ_MAX_FETCH_BYTES)."
                        )
                ctype = response.headers.get("content-type", "").split(";", 1)[0].strip()
        except httpx.HTTPError as exc:
            raise FetchFailed(f"Could not fetch file_url {url!r}: {exc}") from None
        return bytes(body), ctype


def inline_files(items: list[JSON], fetch: Fetch) -> list[JSON]:
    """``items`` with every ``input_file`` given by ``file_url`` turned into ``file_data`` (a
    base64 data URL) and a ``filename``; items without one come back as they are."""
    out: list[JSON] = []
    for item in items:
        content = item.get("content")
        if not isinstance(content, list) or not any(_by_url(p) for p in content):
            out.append(item)
            continue
        parts = [_inlined(p, fetch) if _by_url(p) else p for p in content]
        out.append({**item, "content": parts})
    return out


def _by_url(part: Any) -> bool:
    return (
        isinstance(part, dict)
        and part.get("type") == "input_file"
        and not part.get("file_data")
        and isinstance(part.get("file_url"), str)
    )


def _inlined(part: JSON, fetch: Fetch) -> JSON:
    url = part["file_url"]
    body, ctype = fetch(url)
    filename = part.get("filename") or filename_of(url) or "file"
    media_type = (
        ctype if ctype and ctype != "application/octet-stream" else guess_type(filename, PDF)
    )
    data = base64.b64encode(body).decode()
    rest = {k: v for k, v in part.items() if k != "file_url"}
    return {**rest, "filename": filename, "file_data": f"data:{media_type};base64,{data}"}
