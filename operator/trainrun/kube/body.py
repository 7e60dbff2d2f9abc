"""How a request body travels to the API server: JSON as UTF-8, every character as itself.

``json.dumps`` escapes a character outside the Basic Multilingual Plane (an emoji, a rare CJK
ideograph) as a UTF-16 surrogate pair, ``\\ud83d\\ude00``: valid JSON, but the API server reads a server-side
apply body (``application/apply-patch+yaml``) with its YAML decoder, which refuses such escapes ("found
invalid Unicode character escape code"), so a run with an emoji in a label or a command never got its
PyTorchJob (issue 24). JSON is YAML, and written without ASCII escaping it is read alike by the JSON
and the YAML decoders. Used for every body: by the operator's ``aioclient`` and the CLI's ``api``; the
operator's ``aioclient`` also decodes every answer and watch event with :func:`decode_json`, and a watch event
of a kind whose fields it reads are known with :func:`decode_watch_event` (a page of its list with
:func:`decode_list_page`). Pure.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

CHARSET = "utf-8"


def encode_body(body: Any) -> bytes:
    """``body`` as the bytes of a request: JSON with no ASCII escaping, in UTF-8."""
    text = json.dumps(body, ensure_ascii=False)
    try:
        return text.encode(CHARSET)
    except UnicodeEncodeError:
        # Surrogates as code points of their own (YAML reads "\ud83d\ude00" as two): a pair becomes its
        # character and a lone one U+FFFD, as the API server's JSON decoder reads their escapes.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode(CHARSET)


def decode_json(raw: bytes | str) -> Any:
    """A JSON document from the API server. orjson decodes a pod's watch event in two thirds of the standard
    library's CPU in a busy cluster, half in a tight loop (the operator decodes every change of every pod,
    job and Event it watches); what it refuses but the standard library reads (NaN, a number too large for a
    double) is read by the latter, and what neither reads raises ``ValueError``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def decode_watch_event(raw: bytes, shape: type | None) -> Any:
    """A watch event, ``{"type": ..., "object": ...}``. With a ``shape`` (a ``TypedDict`` of the event, as
    ``trainrun.plan.projections.PodEvent``) only the fields it declares are made into objects: the rest of the
    document is read past (msgspec), so a pod's managed fields, env and volumes cost no allocations. An event
    that does not fit the shape (a field of another type than declared) and an ERROR event (whose object is a
    Status) are decoded whole, as without one."""
    event = _shaped(raw, _event_decoder, shape)
    if event is None or event.get("type") == "ERROR":
        return decode_json(raw)
    return event


def _shaped(raw: bytes, decoder_of: Callable[[type], msgspec.json.Decoder[Any]], shape: type | None) -> Any | None:
    """``raw`` read by the decoder of ``shape``; None without a shape, or when the document does not fit it."""
    if shape is None:
        return None
    try:
        return decoder_of(shape).decode(raw)
    except msgspec.MsgspecError:
        return None


@functools.cache
def _event_decoder(shape: type) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(shape)


def decode_list_page(raw: bytes, shape: type | None) -> Any:
    """A page of a list, ``{"metadata": {...}, "items": [...]}``. With the ``shape`` of the kind's watch event
    (:func:`decode_watch_event`) each item holds only the fields the event's object declares: an operator
    starting beside a thousand runs lists their 4,000 pods without making objects of what it does not keep. A
    page that does not fit is decoded whole."""
    page = _shaped(raw, _page_decoder, shape)
    return decode_json(raw) if page is None else {"metadata": page.metadata, "items": page.items}


@functools.cache
def _page_decoder(shape: type) -> msgspec.json.Decoder[Any]:
    item = typing.get_type_hints(shape)["object"]
    page = msgspec.defstruct(f"{shape.__name__}Page", [("metadata", dict[str, Any], {}), ("items", list[item], [])])  # type: ignore[valid-type]
    return msgspec.json.Decoder(page)
