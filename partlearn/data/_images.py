"""Image loading: one full decode, checked, converted to 8-bit RGB, EXIF orientation applied.

``load_image`` is what everything downstream uses; ``probe_image`` is what the audit uses:
the same read and decode (so the audit catches exactly what loading would fail on), plus an
md5 of the file's bytes, without building the transposed RGB copy.

Conversions (these are fine images; the audit notes them with the mode they came from):

- ``P``/``PA`` (palette, also with transparency) -> ``RGBA`` -> ``RGB``;
- ``I;16*`` (16-bit grayscale) and ``I`` with values in 0..65535 -> ``value >> 8`` -> ``L``
  -> ``RGB``;
- every other mode Pillow can convert (``L``, ``LA``, ``RGBA``, ``CMYK``, ``YCbCr``, ``1``...) ->
  ``RGB`` with ``Image.convert`` (alpha is dropped, not composited, as torchvision does).

Bad images raise ``BadImageError`` with a short ``reason``: ``"missing"``, ``"zero bytes"``,
``"truncated or corrupt: <Pillow's message>"``, ``"unsupported mode ..."``, ``"too large,
a decompression bomb ..."`` (more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``).
``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone (off): a cut file is an error, not grey pixels.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .._validation import DataError

__all__ = ["BadImageError", "ImageInfo", "load_image", "probe_image"]

# Pillow warns (and decodes) between MAX_IMAGE_PIXELS and twice that, and raises beyond:
# both are a bad image here, as Pillow's documentation advises for untrusted files (the
# filter is set once at import: warnings.catch_warnings is not thread-safe, the audit is)
warnings.simplefilter("error", Image.DecompressionBombWarning)

_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = (5, 6, 7, 8)  # orientations whose transpose exchanges width and height


class BadImageError(DataError):
    """An image file that cannot be used: ``path`` names it, ``reason`` says why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the decoder said
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # picklable across processes despite the two-argument __init__
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class ImageInfo:
    """What the audit records about one good image."""

    md5: str  # of the file's bytes
    width: int  # after EXIF transpose
    height: int
    mode: str  # the mode stored in the file ('RGB' when no conversion was needed)
    orientation: int  # EXIF orientation tag, 1 when absent or meaningless

    @property
    def converted(self) -> bool:
        return self.mode != "RGB"

    @property
    def rotated(self) -> bool:
        return self.orientation != 1


def _read_bytes(path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadImageError(path, "missing") from None
    except IsADirectoryError:
        raise BadImageError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise BadImageError(path, "not readable: permission denied") from None
    except OSError as e:
        raise BadImageError(path, f"cannot be read: {e.strerror or e}") from None
    if not data:
        raise BadImageError(path, "zero bytes")
    return data


def _decode(path, data: bytes) -> Image.Image:
    """Open and fully decode ``data`` (the first frame of multi-frame files)."""
    try:
        im = Image.open(io.BytesIO(data))
        limit = Image.MAX_IMAGE_PIXELS  # (also where the warnings filter was reset)
        if limit and im.width * im.height > limit:
            raise Image.DecompressionBombWarning(
                f"{im.width}x{im.height} = {im.width * im.height} pixels, more than "
                f"PIL.Image.MAX_IMAGE_PIXELS = {limit}")
        im.load()
    except UnidentifiedImageError:
        raise BadImageError(path, "truncated or corrupt: cannot identify image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(path, f"too large, a decompression bomb by Pillow's limit: {e}") \
            from None
    except Exception as e:  # noqa: BLE001 - any failure of the decoder on these bytes
        raise BadImageError(path, f"truncated or corrupt: {e or type(e).__name__}") from None
    return im


def _orientation(path, im: Image.Image) -> int:
    """EXIF orientation 1..8; 1 when there is no tag or its value means nothing."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as e:  # noqa: BLE001 - a malformed EXIF block
        raise BadImageError(path, f"corrupt EXIF data: {e or type(e).__name__}") from None
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_rgb(path, im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("P", "PA"):
        return im.convert("RGBA").convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im)
        if mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
            raise BadImageError(
                path, f"unsupported pixel values: mode I (32-bit integer) with values "
                f"{a.min()}..{a.max()}, expected 16-bit values 0..65535")
        return Image.fromarray((a.astype(np.uint32) >> 8).astype(np.uint8)).convert("RGB")
    if mode == "F":
        raise BadImageError(path, "unsupported mode F (32-bit float pixels), expected 8- or 16-bit")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as e:
        raise BadImageError(path, f"unsupported mode {mode}: cannot convert to RGB ({e})") from None


def load_image(path) -> Image.Image:
    """The image at ``path`` as 8-bit RGB with its EXIF orientation applied.

    Raises ``BadImageError`` (a ``DataError``) for a missing, empty, truncated or corrupt file,
    or a pixel format with no defined conversion.
    """
    path = os.fspath(path)
    im = _decode(path, _read_bytes(path))
    if _orientation(path, im) != 1:
        im = ImageOps.exif_transpose(im)
    return _to_rgb(path, im)


def probe_image(path) -> ImageInfo:
    """Read and fully decode ``path`` as ``load_image`` does; return its md5, size and mode.

    Raises ``BadImageError`` on exactly the files ``load_image`` raises on. The mode conversion
    is run (to prove it works) only for non-RGB images; the EXIF transpose is not materialised:
    width and height are swapped arithmetically.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    md5 = hashlib.md5(data).hexdigest()
    im = _decode(path, data)
    orientation = _orientation(path, im)
    if im.mode != "RGB":
        _to_rgb(path, im)
    width, height = im.size
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    return ImageInfo(md5=md5, width=width, height=height, mode=im.mode, orientation=orientation)
