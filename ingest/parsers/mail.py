"""E-mail: a message (``.eml``) or a mailbox (``.mbox``).

A message becomes one document: the subject is its title and heading, a short header block (from, to, cc,
date, attachments) and the body follow; the headers are also filterable metadata (``from``, ``to``,
``date`` ...). The body is the ``text/plain`` part, else the ``text/html`` part read as HTML.

Each attachment with a file name is parsed by the same registry as a *child document* of the message: its
id is ``<message id>#<n>/<file name>``, its metadata carries ``parent_id`` (the message's id), and it is
stored under the same file, so deleting the ``.eml`` deletes its attachments too. An attachment whose type
no parser reads (``tool.exe``) is only listed in the message's ``attachments`` metadata: it is no fault of
the file, and reporting it would make every later ingest re-read the message. An attachment a parser
claims but cannot read (a corrupt PDF) is reported as a problem (``attachment report.pdf: <reason>``) and
the message is still indexed. Attachments are decoded within ``ingest.max_unpacked_mb`` together.

The module is called ``mail`` so that it never shadows the standard library's ``email`` package.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from dataclasses import dataclass
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from pathlib import PurePosixPath
from typing import Any

from rag.core.errors import LoaderError, UnsupportedFileError
from rag.core.types import Document
from rag.ingest.parsers.base import BaseParser, ParseContext, iso_utc, sniff_text
from rag.ingest.parsers.builder import DocumentBuilder
from rag.ingest.parsers.htmlblocks import add_html

log = logging.getLogger(__name__)

# A message starts with header fields ("Name: value", RFC 5322 field names) or an mbox "From " line.
_HEADER_START = re.compile(rb"\A(?:\s*\n)*(?:From |[!-9;-~]+:)")
# The mbox separator: a line that starts with "From " (the rule of Python's mailbox.mbox and of mboxo).
_MBOX_FROM_LINE = re.compile(rb"^From ", re.MULTILINE)
# Writers quote a body line that began with "From " as ">From " (Python's mailbox, mboxo and mboxrd alike).
_MBOX_QUOTED_FROM = re.compile(rb"^>(From )", re.MULTILINE)
_ADDRESS_HEADERS = ("to", "cc")
_KEPT_HEADERS = ("subject", "from", "to", "cc", "date", "message-id", "in-reply-to")


@dataclass(slots=True)
class _Budget:
    """Bytes of attachments still allowed (``ingest.max_unpacked_mb``), shared by all messages of a file."""

    left: int


@dataclass(slots=True)
class _Attachment:
    name: str
    data: bytes


def _header(msg: Message, key: str) -> Any:
    """The first ``key`` header parsed by ``policy.default`` (decoded words, addresses, dates), or ``None``
    when it is absent or so malformed that the header parser raises on it.

    Messages are parsed with ``compat32`` (see :func:`parse_message`); only the few headers read here
    go through the slower structured parser.
    """
    raw = next((value for name, value in msg.raw_items() if name.lower() == key), None)
    if raw is None:
        return None
    try:
        return policy.default.header_fetch_parse(key, _unescape_8bit(str(raw)))
    except Exception:  # the header-value parser has raised on hostile input (IndexError, ValueError ...)
        log.debug("unreadable %s header", key, exc_info=True)
        return None


def _unescape_8bit(value: str) -> str:
    """Raw 8-bit header bytes (kept by the parser as surrogate escapes) read as UTF-8, as mailers send them."""
    try:
        return value.encode("ascii", "surrogateescape").decode("utf-8", errors="replace")
    except UnicodeEncodeError:  # not from raw bytes
        return value


def _addresses(value: Any) -> list[tuple[str, str]]:
    """``(display name, address)`` pairs of an address header (lower-case addresses, blanks dropped)."""
    try:
        addresses = getattr(value, "addresses", None)
    except Exception:  # noqa: BLE001 - the email package raises assorted errors on a malformed header
        addresses = None
    if addresses is None:
        return [("", part.strip().lower()) for part in str(value or "").split(",") if part.strip()]
    return [(a.display_name or "", a.addr_spec.lower()) for a in addresses if a.addr_spec and a.addr_spec != "<>"]


def _text(value: Any) -> str:
    """A header's decoded text with whitespace collapsed."""
    return " ".join(str(value or "").split())


def read_headers(msg: Message) -> dict[str, Any]:
    """The headers the metadata and the header block use, each parsed once (``None`` when absent)."""
    return {key: _header(msg, key) for key in _KEPT_HEADERS}


def message_metadata(headers: dict[str, Any]) -> dict[str, Any]:
    """The filterable metadata of a message from :func:`read_headers`: ``subject``, ``from``,
    ``from_name``, ``to``, ``cc``, ``date`` (ISO-8601 UTC), ``message_id`` and ``in_reply_to`` (both
    without angle brackets); absent headers are left out."""
    meta: dict[str, Any] = {}
    subject = _text(headers["subject"])
    if subject:
        meta["subject"] = subject
    sender = _addresses(headers["from"])
    if sender:
        meta["from"] = sender[0][1]
        if sender[0][0]:
            meta["from_name"] = sender[0][0]
    for key in _ADDRESS_HEADERS:
        addresses = [address for _, address in _addresses(headers[key])]
        if addresses:
            meta[key] = addresses
    date = headers["date"]
    moment = getattr(date, "datetime", None) if date is not None else None
    if moment is not None:
        meta["date"] = iso_utc(moment)
    for key, header in (("message_id", "message-id"), ("in_reply_to", "in-reply-to")):
        value = _text(headers[header]).strip("<>")
        if value:
            meta[key] = value
    return meta


def _decode(payload: bytes, charset: str | None) -> str:
    """Text of a part: its declared charset, else what charset detection finds (mail often mislabels)."""
    try:
        return payload.decode(charset or "us-ascii")
    except (LookupError, UnicodeDecodeError):
        from charset_normalizer import from_bytes

        best = from_bytes(payload).best()
        return str(best) if best is not None else payload.decode("utf-8", errors="replace")


def _raw_filename(part: Message) -> str:
    """The ``filename`` (else ``name``) parameter, read by ``policy.default``: RFC 2231 and raw UTF-8
    values decoded (``compat32``'s ``get_filename`` garbles the latter)."""
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        parsed = _header(part, header)
        value = (getattr(parsed, "params", None) or {}).get(param) if parsed is not None else None
        if value:
            return str(value)
    return ""


def _filename(part: Message, index: int) -> str:
    """The attachment's file name without any directory; for a nameless one ``attachment-<n>`` with the
    suffix of its content type (``.pdf``), so that the registry can still pick a parser."""
    raw = _raw_filename(part)
    if "=?" in raw:  # RFC 2047 encoded words, which many mailers use for parameters against the RFC
        try:
            raw = str(make_header(decode_header(raw)))
        except Exception:  # noqa: BLE001, S110 - malformed encoded words: keep the name as written
            pass
    name = PurePosixPath(raw.replace("\\", "/")).name.strip()
    if name:
        return name
    if part.get_content_type() == "message/rfc822":
        return "message.eml"
    return f"attachment-{index}{mimetypes.guess_extension(part.get_content_type()) or ''}"


def _is_attachment(part: Message, content_type: str) -> bool:
    """A part to parse as a file: one marked as an attachment or carrying a file name, except an inline
    image embedded in an HTML body (a logo or a signature picture, no document of its own)."""
    if part.get_content_disposition() == "attachment":
        return True
    try:
        named = bool(part.get_filename())
    except Exception:  # noqa: BLE001 - a malformed Content-Disposition raises assorted errors
        named = False
    embedded = content_type.startswith("image/") and part.get("content-id") is not None
    return named and not embedded


@dataclass(slots=True)
class _Layout:
    """The parts of a message by role: the body, extra inline text, attachments (in file order)."""

    body: Message | None
    extra: list[Message]
    attachments: list[Message]


def _layout(msg: Message) -> _Layout:
    """Find the body as ``get_body(("plain", "html"))`` would, and the attachments besides it.

    The body is the first inline ``text/plain`` part, else the first ``text/html`` one. Later inline
    ``text/plain`` parts outside a ``multipart/alternative`` (a mailing list's footer) are extra body text;
    their alternatives are the same text again. An attached message (``message/rfc822``) is one attachment,
    not descended into. The walk is iterative: a hostile message can nest parts thousands deep.
    """
    texts: list[tuple[Message, bool]] = []
    html: Message | None = None
    attachments: list[Message] = []
    stack: list[tuple[Message, bool]] = [(msg, False)]
    while stack:
        part, in_alternative = stack.pop()
        content_type = part.get_content_type()
        if content_type == "message/rfc822" or (not part.is_multipart() and _is_attachment(part, content_type)):
            attachments.append(part)
        elif part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                alternative = in_alternative or content_type == "multipart/alternative"
                stack.extend((child, alternative) for child in reversed(payload))
        elif content_type == "text/plain":
            texts.append((part, in_alternative))
        elif content_type == "text/html" and html is None:
            html = part
    if not texts:
        return _Layout(html, [], attachments)
    return _Layout(texts[0][0], [part for part, alternative in texts[1:] if not alternative], attachments)


def _attachment_bytes(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822":
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        return inner.as_bytes() if isinstance(inner, Message) else b""
    return part.get_payload(decode=True) or b""


class _MessageReader:
    """Builds the documents of one message: the message itself, then its attachments' documents."""

    def __init__(self, ctx: ParseContext, budget: _Budget, fmt: str) -> None:
        self.ctx = ctx
        self.budget = budget
        self.fmt = fmt

    def read(self, msg: Message, doc_id: str, fallback_title: str, label: str = "") -> list[Document]:
        """The message's document and its attachments' documents (``parent_id`` = ``doc_id``).

        Raises:
            LoaderError: the message has neither body text nor a readable attachment, or (without
                ``ctx.problems``) an attachment failed.
        """
        headers = read_headers(msg)
        meta = message_metadata(headers)
        layout = _layout(msg)
        parts = layout.attachments
        names = [_filename(part, index + 1) for index, part in enumerate(parts)]
        if names:
            meta["attachments"] = names
        subject = meta.get("subject", "")
        builder = DocumentBuilder()
        if subject:
            builder.heading(1, subject)
        builder.paragraph(self._header_block(headers, names))
        has_body = self._add_body(builder, layout.body, layout.extra)
        children = self._attachments(parts, names, doc_id, label)
        if not has_body and not children:
            raise LoaderError("no text content")
        document = builder.build(
            doc_id=doc_id, source=self.ctx.source, title=subject or fallback_title,
            metadata=self.ctx.merge_metadata(meta, format=self.fmt),
        )
        return [document, *children]

    @staticmethod
    def _header_block(headers: dict[str, Any], names: list[str]) -> str:
        """``From: ...`` lines as the reader of the message sees them (searchable by sender and date)."""
        lines = []
        for label, key in (("From", "from"), ("To", "to"), ("Cc", "cc"), ("Date", "date")):
            value = _text(headers[key])
            if value:
                lines.append(f"{label}: {value}")
        if names:
            lines.append("Attachments: " + ", ".join(names))
        return "\n".join(lines)

    @staticmethod
    def _add_body(builder: DocumentBuilder, body: Message | None, extra: list[Message]) -> bool:
        """Append the body (and extra inline text parts); whether any of it held text."""
        before = builder.text
        for part in ([body] if body is not None else []) + extra:
            text = _decode(part.get_payload(decode=True) or b"", part.get_content_charset())
            if part.get_content_subtype() == "html":
                add_html(builder, text, level_offset=1)
            else:
                builder.paragraph(text.replace("\r\n", "\n"))
        return builder.text != before

    def _attachments(self, parts: list[Message], names: list[str], doc_id: str, label: str) -> list[Document]:
        docs: list[Document] = []
        for index, (part, name) in enumerate(zip(parts, names), start=1):
            what = f"{label}attachment {name}"
            try:
                data = _attachment_bytes(part)
                if len(data) > self.budget.left:
                    raise LoaderError(
                        f"attachments unpack to more than ingest.max_unpacked_mb ({self.ctx.limits.max_unpacked_mb:g} MiB)"
                    )
                self.budget.left -= len(data)
                if self.ctx.parse_child is None:
                    raise LoaderError("attachments need the parser registry (parse_child)")
                found = self.ctx.parse_child(data, name, f"{doc_id}#{index}/{name}")
            except UnsupportedFileError as exc:
                log.debug("%s not indexed: %s", what, exc)
                continue
            except LoaderError as exc:
                reason = str(exc)
                if self.ctx.problems is None:
                    raise LoaderError(f"{what}: {reason}") from None
                self.ctx.problems.append((what, reason))
                continue
            for child in found:
                if "parent_id" not in child.metadata:  # deeper documents keep their own parent
                    child.metadata["parent_id"] = doc_id
                    child.title = _attachment_title(name, child.title)
            docs.extend(found)
        return docs


def _attachment_title(name: str, title: str) -> str:
    """``report.pdf`` when the parser only fell back on the file name, else ``report.pdf: <its title>``."""
    if not title or title in (name, PurePosixPath(name).stem):
        return name
    return f"{name}: {title}"


def parse_message(data: bytes) -> Message:
    """``data`` parsed as one RFC 5322 message with the ``compat32`` policy.

    ``policy.default`` parses every header of every part into objects as the message is read (and again
    at each ``get_content_type``), which made a 1,000-message mailbox five times slower to parse; the MIME
    structure needs none of that, and :func:`_header` parses the few headers kept as metadata.
    """
    return BytesParser(policy=policy.compat32).parsebytes(data)


def split_mbox(data: bytes) -> list[bytes]:
    """The messages of an mbox file, split as Python's :class:`mailbox.mbox` splits them.

    Every line that starts with ``From `` begins a message; the separator line itself is dropped, and so
    is the blank line that ends each message (before the next separator or the end of the file). Writers quote a body line that
    starts with ``From `` as ``>From ``; that ``>`` is taken off again, so the text reads as it was
    written (:mod:`mailbox` leaves the quote in). ``>>From`` lines are left alone: an mboxo writer does not
    quote them, so unquoting them would change text that was never quoted.
    """
    starts = [match.start() for match in _MBOX_FROM_LINE.finditer(data)]
    messages = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(data)
        line_end = data.find(b"\n", start, end)
        content = data[line_end + 1:end] if line_end >= 0 else b""
        for blank in (b"\r\n", b"\n"):
            if content.endswith(blank * 2) or content == blank:
                content = content[: -len(blank)]
                break
        messages.append(_MBOX_QUOTED_FROM.sub(rb"\1", content))
    return messages


class EmlParser(BaseParser):
    """One e-mail message: headers as metadata, the body as text, attachments as child documents."""

    name = "eml"
    suffixes = (".eml",)
    media_types = ("message/rfc822",)
    description = ("e-mail: subject as title; from/to/cc/date/message_id as metadata; text or HTML body; "
                   "attachments parsed as child documents (parent_id)")

    def sniff(self, head: bytes) -> str | None:
        return sniff_text(head) or (None if _HEADER_START.match(head) else "not an e-mail message (no header lines)")

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        reader = _MessageReader(ctx, _Budget(ctx.limits.max_unpacked_bytes), self.name)
        return reader.read(parse_message(data), ctx.doc_id, ctx.stem)


class MboxParser(BaseParser):
    """A mailbox: one document per message (``<doc_id>#<Message-ID>``), each like an ``.eml``."""

    name = "mbox"
    suffixes = (".mbox",)
    media_types = ("application/mbox",)
    description = ("mailbox: one document per message (id from its Message-ID), with the e-mail metadata "
                   "and attachments")

    def sniff(self, head: bytes) -> str | None:
        kind = sniff_text(head)
        if kind:
            return kind
        return None if head.lstrip().startswith(b"From ") else "not an mbox file (it does not start with a 'From ' line)"

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        reader = _MessageReader(ctx, _Budget(ctx.limits.max_unpacked_bytes), self.name)
        docs: list[Document] = []
        used: set[str] = set()
        for number, raw in enumerate(split_mbox(data.lstrip()), start=1):
            label = f"message {number}"
            try:
                msg = parse_message(raw)
                doc_id = _mbox_doc_id(ctx.doc_id, msg, number, used)
                docs.extend(reader.read(msg, doc_id, f"{ctx.stem} {label}", label=f"{label} "))
            except LoaderError as exc:
                if ctx.problems is None:
                    raise LoaderError(f"{label}: {exc}") from None
                ctx.problems.append((label, str(exc)))
        return docs


def _mbox_doc_id(base: str, msg: Message, number: int, used: set[str]) -> str:
    """``<base>#<Message-ID>``, so a message keeps its id when others are added or removed; ``<base>#<n>``
    (its position) for a message without a Message-ID or with one seen before in this file."""
    message_id = _text(_header(msg, "message-id")).strip("<>")
    doc_id = f"{base}#{message_id}" if message_id and message_id not in used else f"{base}#{number}"
    used.add(message_id)
    return doc_id
