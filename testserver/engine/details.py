"""testtools details as attachments: what a testtools ``TestCase`` hands a result.

``addSuccess(test, details=...)`` and the other outcome methods of testtools pass a dict of
``Content`` objects; :func:`details_attachments` turns it into ``(name, MIME type, bytes)``
attachments without importing testtools, and :func:`details_text` gives the text unittest's
lists keep.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Attachment = tuple[str, str, bytes]
"""An attachment: its name, MIME type and bytes."""


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


def _mime_type(content_type: object) -> str:
    """A testtools ``ContentType`` (or a plain string) as a MIME type string."""
    if content_type is None:
        return "application/octet-stream"
    if isinstance(content_type, str):
        return content_type
    major = getattr(content_type, "type", None)
    minor = getattr(content_type, "subtype", None)
    if not (major and minor):
        return str(content_type)
    params = getattr(content_type, "parameters", None) or {}
    text = f"{major}/{minor}"
    if params:
        text += "; " + "; ".join(sorted(f'{key}="{value}"' for key, value in params.items()))
    return text


def _content_bytes(content: Any) -> bytes:
    """Join a testtools ``Content``'s ``iter_bytes()``; a broken one says why instead."""
    try:
        return b"".join(
            chunk if isinstance(chunk, bytes) else _encode(str(chunk))
            for chunk in content.iter_bytes()
        )
    except Exception as error:
        return _encode(f"<could not read this detail: {error!r}>")


def details_attachments(details: Mapping[str, Any] | None) -> list[Attachment]:
    """One attachment per testtools detail, in the dict's order."""
    if not details:
        return []
    return [
        (name, _mime_type(getattr(content, "content_type", None)), _content_bytes(content))
        for name, content in details.items()
    ]


def detail_text(attachments: list[Attachment], name: str) -> str | None:
    """The text of the attachment called ``name``, if there is one."""
    for attachment_name, _, data in attachments:
        if attachment_name == name:
            return data.decode("utf-8", "replace")
    return None


def details_text(attachments: list[Attachment]) -> str:
    """The text unittest's lists keep for details: the traceback, else every detail."""
    traceback_text = detail_text(attachments, "traceback")
    if traceback_text is not None:
        return traceback_text
    return "\n".join(f"{name}: {data.decode('utf-8', 'replace')}" for name, _, data in attachments)
