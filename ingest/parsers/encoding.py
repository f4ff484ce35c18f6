"""Bytes to text for the text formats (Markdown, plain text, HTML, RST, CSV ...).

:func:`decode_text` tries, in order:

1. a byte-order mark (UTF-8, UTF-16, UTF-32): it names the encoding outright;
2. the charset the file declares (an HTML ``<meta charset>`` or an XML declaration, found by
   :func:`declared_charset` and passed in by the parser), when the bytes decode with it;
3. strict UTF-8 (by far the most common case, and the only one that costs a single pass);
4. "mostly UTF-8": valid UTF-8 with a few stray bytes (a Latin-1 fragment pasted into a UTF-8 file) decodes
   as UTF-8 with each bad byte replaced by U+FFFD, recorded as ``utf-8 (N bytes replaced)``;
5. charset detection (charset-normalizer) on the first :data:`DETECT_BYTES` bytes, for legacy code pages
   (cp1252, Latin-1, cp1250, cp1251, Shift-JIS ...).

NUL bytes without a UTF-16/32 byte-order mark, or bytes no detector can read, are binary:
``LoaderError("binary file, not text")``.
"""

from __future__ import annotations

import codecs
import logging
import re

from rag.core.errors import LoaderError

log = logging.getLogger(__name__)

# Bytes charset-normalizer examines: enough for a reliable guess, and bounded time on a huge file.
DETECT_BYTES = 64 * 1024

# Longest-first, so that a UTF-32-LE mark (FF FE 00 00) is not taken for a UTF-16-LE one (FF FE).
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# WHATWG: browsers read a page labelled Latin-1 or ASCII as windows-1252, and authors rely on it (curly quotes).
_DECLARED_ALIASES = {"iso8859-1": "cp1252", "ascii": "cp1252"}

# Where a charset may be declared: <meta charset=...>, <meta http-equiv content="...; charset=...">,
# <?xml ... encoding="..."?>. Searched in the first bytes only, as browsers do.
_DECLARED_BYTES = 4096
_META_CHARSET = re.compile(rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")

# Undecodable bytes kept by "surrogateescape" come back as lone surrogates U+DC80..U+DCFF.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_NON_ASCII_BYTES = bytes(range(128, 256))

# The most common legacy encoding (and a superset of Latin-1's printable characters), tried first.
_PREFERRED_LEGACY = "cp1252"
# charset-normalizer's own default: above this share of "messy" characters a decoding is rejected.
_MESS_THRESHOLD = 0.2
# Encodings detection may choose. UTF-16/32 need a BOM here (without one, NULs mean binary); DOS, EBCDIC and
# Mac code pages are left out because on short text they tie with the real one and win by name order.
_LEGACY_ENCODINGS = (
    "cp1250", "cp1251", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "iso8859_2", "iso8859_5",
    "iso8859_7", "iso8859_15", "koi8_r", "koi8_u", "cp874", "cp932", "euc_jp", "iso2022_jp", "gb18030", "big5",
    "euc_kr", "cp949",
)


def declared_charset(head: bytes) -> str | None:
    """The charset a file declares in its first bytes (XML declaration or HTML ``<meta>``), if any.

    Args:
        head: the start of the file (only the first 4 KiB are searched).

    Returns:
        The declared name as written (``"windows-1252"``), or ``None`` when nothing is declared.
    """
    head = head[:_DECLARED_BYTES]
    match = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
    return match.group(1).decode("ascii") if match else None


def decode_text(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """``(text, encoding)``: the text with any BOM removed and newlines normalised to ``\\n``.

    Args:
        data: the file's bytes.
        declared: the charset the file declares (see :func:`declared_charset`); used only when the bytes
            decode with it and there is no byte-order mark. An unknown name is ignored.

    Returns:
        The text and the encoding it was read with, as a Python codec name (``utf-8``, ``cp1252``,
        ``utf-16-le``); ``utf-8 (N bytes replaced)`` when a mostly-UTF-8 file had N invalid bytes.

    Raises:
        LoaderError: ``binary file, not text`` (NUL bytes without a UTF-16/32 BOM, or no encoding fits),
            ``invalid UTF-16-LE text`` (a BOM whose encoding the bytes then break), ``empty file``.
    """
    text, encoding = _decode(data, declared)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise LoaderError("empty file")
    return text, encoding


def _decode(data: bytes, declared: str | None) -> tuple[str, str]:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding), encoding
            except UnicodeDecodeError:
                raise LoaderError(f"invalid {encoding.upper()} text") from None
    if b"\x00" in data:
        raise LoaderError("binary file, not text")
    if declared:
        decoded = _decode_declared(data, declared)
        if decoded is not None:
            return decoded
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    mostly = _decode_mostly_utf8(data)
    if mostly is not None:
        return mostly
    return _decode_detected(data)


def _codec_name(label: str) -> str | None:
    """The canonical Python codec name for an encoding label, or ``None`` if Python has no such codec."""
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _decode_declared(data: bytes, declared: str) -> tuple[str, str] | None:
    """The bytes read with the declared charset, or ``None`` when it is unknown, UTF-8, or does not fit."""
    name = _codec_name(declared)
    if name is None:
        log.debug("ignoring unknown declared charset %r", declared)
        return None
    if name == "utf-8":
        return None  # the strict UTF-8 step (and its fallbacks) handles it
    for candidate in dict.fromkeys((_DECLARED_ALIASES.get(name, name), name)):
        try:
            return data.decode(candidate), candidate
        except (UnicodeDecodeError, LookupError):
            continue
    log.debug("declared charset %s does not fit the bytes; detecting", declared)
    return None


def _decode_mostly_utf8(data: bytes) -> tuple[str, str] | None:
    """UTF-8 with its invalid bytes replaced, when valid multi-byte characters outnumber invalid bytes.

    A legacy code page (cp1252 ``café``) almost never forms valid UTF-8 sequences by chance, so a file whose
    non-ASCII text is mostly valid UTF-8 is UTF-8 with a few damaged bytes, not another encoding.
    """
    escaped = data.decode("utf-8", errors="surrogateescape")
    bad = len(_ESCAPED_BYTE.findall(escaped))
    # Every ASCII byte decodes to one ASCII character, so the rest of the characters are non-ASCII.
    ascii_bytes = len(data.translate(None, _NON_ASCII_BYTES))
    valid_multibyte = len(escaped) - ascii_bytes - bad
    if valid_multibyte < bad:
        return None
    return _ESCAPED_BYTE.sub("\ufffd", escaped), f"utf-8 ({bad} byte{'s' if bad != 1 else ''} replaced)"


def _decode_detected(data: bytes) -> tuple[str, str]:
    """The bytes read with the encoding found in their first :data:`DETECT_BYTES` (see :func:`_detect`)."""
    encoding = _detect(data[:DETECT_BYTES])
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError:
        # The sample fitted but a later byte does not: keep the text, say how much was damaged.
        text = data.decode(encoding, errors="replace")
        return text, f"{encoding} ({text.count(chr(0xFFFD))} bytes replaced)"


def _detect(sample: bytes) -> str:
    """The legacy encoding of ``sample``: windows-1252 when it reads cleanly as such, else charset-normalizer's.

    Western text is checked first because detectors are unreliable on short Latin text (charset-normalizer
    calls a four-word French sentence cp775 or mac_roman), and cp1252 read as its own mess ratio shows
    Cyrillic, Greek, Central European or CJK bytes for what they are (ratio > 1 in our samples).

    Raises:
        LoaderError: nothing fits (``binary file, not text``).
    """
    from charset_normalizer import from_bytes
    from charset_normalizer.md import mess_ratio

    try:
        if mess_ratio(sample.decode(_PREFERRED_LEGACY), _MESS_THRESHOLD) < _MESS_THRESHOLD:
            return _PREFERRED_LEGACY
    except UnicodeDecodeError:
        pass
    best = from_bytes(sample, cp_isolation=list(_LEGACY_ENCODINGS), threshold=_MESS_THRESHOLD).best()
    if best is None:
        raise LoaderError("binary file, not text")
    return _codec_name(best.encoding) or best.encoding
