"""Zip containers (Office files, EPUB) and gzip, opened within ``ingest.max_unpacked_mb``.

A zip bomb declares small members that inflate to gigabytes. :func:`open_zip` refuses an archive whose
members declare more than the limit in total before any parser library reads it; :func:`read_member`
and :func:`gunzip` stop decompressing as soon as the limit is passed, so a member that lies about its
size costs at most the limit, never more.
"""

from __future__ import annotations

import io
import zipfile
import zlib

from rag.core.errors import LoaderError
from rag.ingest.parsers.base import ParseLimits

# Decompression proceeds in slices of this many bytes, so the check runs long before memory fills.
_SLICE = 1 << 20


def _too_big(limits: ParseLimits, what: str) -> LoaderError:
    return LoaderError(f"{what} unpacks to more than ingest.max_unpacked_mb ({limits.max_unpacked_mb:g} MiB)")


def open_zip(data: bytes, limits: ParseLimits, what: str = "archive") -> zipfile.ZipFile:
    """The zip archive in ``data``, after checking its declared sizes against the limit.

    Args:
        data: the file's bytes.
        limits: ``max_unpacked_mb`` bounds the members' total declared size.
        what: names the container in messages (``"Word document"``).

    Raises:
        LoaderError: not a zip archive (corrupt), encrypted, or declaring more than the limit.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise LoaderError(f"corrupt {what}: {exc}") from None
    if any(member.flag_bits & 0x1 for member in members):
        raise LoaderError(f"encrypted {what} (password required)")
    declared = sum(member.file_size for member in members)
    if declared > limits.max_unpacked_bytes:
        raise _too_big(limits, what)
    return archive


def read_member(archive: zipfile.ZipFile, name: str, limits: ParseLimits, what: str = "archive") -> bytes:
    """One member's bytes, decompressed in slices and refused once past the limit (whatever it declared).

    Raises:
        LoaderError: the member is missing or corrupt, or inflates past ``max_unpacked_mb``.
    """
    out = bytearray()
    try:
        with archive.open(name) as member:
            while chunk := member.read(_SLICE):
                out += chunk
                if len(out) > limits.max_unpacked_bytes:
                    raise _too_big(limits, what)
    except KeyError:
        raise LoaderError(f"corrupt {what}: no member {name!r}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise LoaderError(f"corrupt {what}: {exc}") from None
    return bytes(out)


def check_inflated_sizes(archive: zipfile.ZipFile, limits: ParseLimits, what: str = "archive") -> None:
    """Inflate every member (discarding the bytes) to prove the total stays within the limit.

    The declared sizes checked by :func:`open_zip` can lie; parser libraries such as python-docx read
    members whole, so this streams through them first, in bounded memory.

    Raises:
        LoaderError: a member is corrupt, or the members inflate past ``max_unpacked_mb`` together.
    """
    total = 0
    for info in archive.infolist():
        try:
            with archive.open(info) as member:
                while chunk := member.read(_SLICE):
                    total += len(chunk)
                    if total > limits.max_unpacked_bytes:
                        raise _too_big(limits, what)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise LoaderError(f"corrupt {what}: {exc}") from None


def gunzip(data: bytes, limits: ParseLimits) -> bytes:
    """The decompressed content of gzip ``data`` (every member), refused once past the limit.

    Raises:
        LoaderError: corrupt or truncated gzip data, or more than ``max_unpacked_mb`` of content.
    """
    out = bytearray()
    rest = data
    try:
        while rest:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending = rest
            while not inflater.eof:
                piece = inflater.decompress(pending, _SLICE)
                out += piece
                if len(out) > limits.max_unpacked_bytes:
                    raise _too_big(limits, "gzip file")
                pending = inflater.unconsumed_tail
                if not pending and not piece and not inflater.eof:
                    raise LoaderError("corrupt gzip file: truncated")
            rest = inflater.unused_data.lstrip(b"\x00")  # the next member, after any padding
    except zlib.error as exc:
        raise LoaderError(f"corrupt gzip file: {exc}") from None
    return bytes(out)
