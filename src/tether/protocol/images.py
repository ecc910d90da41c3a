"""The image types a prompt may carry, told by their first bytes (not by a name or a claim)."""

from __future__ import annotations

# How each type's bytes begin (WebP: "RIFF", four bytes of size, then "WEBP").
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


def image_type(data: bytes) -> str | None:
    """The MIME type of an image's bytes: image/png, image/jpeg, image/gif or image/webp; None
    for anything else."""
    for mime, starts in _MAGIC.items():
        if data.startswith(starts) and (mime != "image/webp" or data[8:12] == b"WEBP"):
            return mime
    return None
