"""Images attached to a prompt (``sessions.send {images}``), checked before any agent sees them:
valid base64, within the size limit, and bytes that are what their type says — a PNG named
``image/png`` must start like one. Anything else is a clear ``bad_params`` error."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from tether.agents.base import Image
from tether.errors import TetherError
from tether.protocol.images import image_type
from tether.protocol.schemas import MAX_IMAGE_BYTES, ImageParam


def decode_images(images: Sequence[ImageParam]) -> tuple[Image, ...]:
    decoded = []
    for image in images:
        try:
            data = base64.b64decode(image.data, validate=True)
        except (binascii.Error, ValueError):
            raise TetherError(f"the image {image.name!r} is not valid base64", code="bad_params") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise TetherError(
                f"the image {image.name!r} is {len(data)} bytes, more than {MAX_IMAGE_BYTES}",
                hint="send it smaller (the page shrinks photos before sending)", code="bad_params",
            )
        if image_type(data) != image.mime:
            raise TetherError(f"the image {image.name!r} is not a {image.mime} file", code="bad_params")
        decoded.append(Image(image.name, image.mime, data))
    return tuple(decoded)

