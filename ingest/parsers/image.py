"""Images (PNG, JPEG, TIFF): their text read by OCR; each frame of a multi-page TIFF a page."""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.parsers.base import BaseParser, ParseContext, describe_magic
from rag.ingest.parsers.builder import DocumentBuilder
from rag.ingest.parsers.ocr import OCR_EXTRA, ocr_unavailable, recognise

if TYPE_CHECKING:
    from PIL.Image import Image

# Magic numbers of the formats read here, and what each says the file is.
_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
# Refused before decoding: a scan of an A0 poster at 300 dpi is 140 MP; text documents are far smaller,
# and a decompression bomb claims billions.
MAX_PIXELS = 60_000_000
# Downscaled to this longest side before OCR: RapidOCR's detector works at 2,000 pixels at most, and
# larger frames only cost memory.
_MAX_SIDE = 4000


class ImageParser(BaseParser):
    """Image files read by OCR (the ``ocr`` extra): one section per frame, each marked ``ocr: true``."""

    name = "image"
    suffixes = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
    media_types = ("image/png", "image/jpeg", "image/tiff")
    description = "text read by OCR (a page per TIFF frame)"
    extra = OCR_EXTRA

    def available(self) -> str | None:
        return ocr_unavailable()

    def sniff(self, head: bytes) -> str | None:
        for magic in _IMAGE_MAGIC:
            if head.startswith(magic):
                return None
        actual = describe_magic(head)
        return f"not an image (the content is {actual})" if actual else "not a PNG, JPEG or TIFF image (unrecognised content)"

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """OCR every frame (up to ``ingest.max_pages``) into one document.

        Raises:
            LoaderError: ``ingest.ocr`` is ``never``, the image is corrupt or too large, has more frames
                than ``ingest.max_pages``, or shows no text.
        """
        if ctx.limits.ocr == "never":
            raise LoaderError("images are read by OCR, and ingest.ocr is never")
        image = _open_image(data)
        frames = getattr(image, "n_frames", 1)
        if frames > ctx.limits.max_pages:
            raise LoaderError(f"{frames} frames, more than ingest.max_pages ({ctx.limits.max_pages})")
        builder = DocumentBuilder()
        paged = frames > 1
        for index in range(frames):
            lines = recognise(_frame(image, index))
            text = "\n".join(line.text for line in lines)
            builder.paragraph(text, page=index + 1 if paged else None, location={"ocr": True})
        if builder.empty:
            raise LoaderError("no text found in the image (OCR)")
        fmt = {"image_format": image.format, "width": image.width, "height": image.height}
        if paged:
            fmt["frames"] = frames
        return [
            builder.build(
                doc_id=ctx.doc_id, source=ctx.source, title=ctx.stem,
                metadata=ctx.merge_metadata(fmt, format=self.name),
            )
        ]


def _open_image(data: bytes) -> Image:
    """Open (not yet decode) an image, refusing decompression bombs and corrupt headers."""
    from PIL import Image as PilImage
    from PIL import UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PilImage.DecompressionBombWarning)
            image = PilImage.open(io.BytesIO(data))
    except (PilImage.DecompressionBombError, PilImage.DecompressionBombWarning):
        raise LoaderError(f"image too large (more than {MAX_PIXELS // 1_000_000} megapixels)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise LoaderError(f"corrupt image: {exc}") from None
    if image.width * image.height > MAX_PIXELS:
        raise LoaderError(
            f"image too large: {image.width} x {image.height} pixels (more than {MAX_PIXELS // 1_000_000} megapixels)"
        )
    return image


def _frame(image: Image, index: int) -> Image:
    """Frame ``index`` decoded, at most ``_MAX_SIDE`` pixels on its longest side."""
    try:
        image.seek(index)
        if image.width * image.height > MAX_PIXELS:  # a later TIFF frame may be larger than the first
            raise LoaderError(f"frame {index + 1} too large: {image.width} x {image.height} pixels")
        if image.format == "JPEG":
            image.draft("L", (_MAX_SIDE, _MAX_SIDE))  # decode at a reduced scale where JPEG allows
        frame = image.convert("L")
    except LoaderError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise LoaderError(f"corrupt image: {exc}") from None
    if max(frame.size) > _MAX_SIDE:
        frame.thumbnail((_MAX_SIDE, _MAX_SIDE))
    return frame
