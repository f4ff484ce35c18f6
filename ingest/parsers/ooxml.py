"""What the Office Open XML parsers (Word, PowerPoint, Excel) share: opening the package safely and
reading its document properties.

An ``.docx``/``.pptx``/``.xlsx`` file is a zip package. Before a parser library sees the bytes,
:func:`open_package` proves that the package inflates within ``ingest.max_unpacked_mb`` (the libraries
read members whole, so a zip bomb would otherwise fill memory). A password-protected Office file is not a
zip at all but an OLE compound file holding an ``EncryptedPackage`` stream, as is a legacy binary
``.doc``/``.xls``/``.ppt``; both are told apart and refused with a reason the user can act on.
"""

from __future__ import annotations

import io
import re
from datetime import datetime
from typing import Any

from rag.core.errors import LoaderError
from rag.ingest.parsers.archive import check_inflated_sizes, open_zip
from rag.ingest.parsers.base import ZIP_MAGIC, ParseLimits, iso_utc, sniff_magic

# The signature of an OLE2 compound file: legacy binary Office files and encrypted OOXML packages.
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# The stream an encrypted OOXML package is stored in; OLE directory entries name streams in UTF-16LE.
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")
# Parser libraries put the stream's repr into their messages ("file '<_io.BytesIO object at 0x7f..>' ...").
_STREAM_REPR = re.compile(r"\s*'?<_io\.BytesIO object at 0x[0-9a-fA-F]+>'?")


def sniff_package(head: bytes, what: str) -> str | None:
    """Why ``head`` is not an Office package (``None`` when it is a zip, or an OLE file :func:`open_package`
    will explain: the directory that says "encrypted" may lie past the head)."""
    if head.startswith(OLE_MAGIC):
        return None
    return sniff_magic(head, ZIP_MAGIC, f"a {what}")


def open_package(data: bytes, limits: ParseLimits, what: str, suffix: str) -> io.BytesIO:
    """The package bytes as a stream for the parser library, once they are known to be safe to open.

    Args:
        data: the file's bytes.
        limits: ``max_unpacked_mb`` bounds what the package may inflate to.
        what: the kind of document, for messages (``"Word document"``).
        suffix: the suffix the file should have been saved as (``".docx"``), for messages.

    Raises:
        LoaderError: the file is encrypted, a legacy binary Office file, not a valid zip, or inflates past
            the limit.
    """
    if data.startswith(OLE_MAGIC):
        if _ENCRYPTED_STREAM in data:
            raise LoaderError(f"encrypted {what} (password required)")
        raise LoaderError(f"legacy Office file (.doc/.xls/.ppt), not {suffix}: save it as {suffix}")
    with open_zip(data, limits, what) as archive:
        check_inflated_sizes(archive, limits, what)
    return io.BytesIO(data)


def library_error(what: str, exc: BaseException) -> LoaderError:
    """A parser library's exception for a malformed package as ``corrupt <what>: <message>``."""
    message = _STREAM_REPR.sub("", str(exc)).strip() or type(exc).__name__
    return LoaderError(f"corrupt {what}: {message}"[:300])


def core_metadata(*, author: str | None, created: datetime | None, modified: datetime | None,
                  subject: str | None = None, keywords: str | None = None) -> dict[str, Any]:
    """Document properties as filterable metadata; empty values are left out.

    ``modified`` is reserved for the file's mtime, so the date the document was last saved is stored as
    ``last_modified``. Dates are ISO-8601 UTC (``2024-05-01T09:30:00Z``).
    """
    values: dict[str, Any] = {
        "author": author,
        "created": iso_utc(created) if isinstance(created, datetime) else None,
        "last_modified": iso_utc(modified) if isinstance(modified, datetime) else None,
        "subject": subject,
        "keywords": keywords,
    }
    return {key: value.strip() if isinstance(value, str) else value
            for key, value in values.items() if value is not None and str(value).strip()}
