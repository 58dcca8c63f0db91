"""Images on the wire for the reward service: tensors in [0, 1] <-> PNG or raw 8-bit RGB messages.

Both directions round to 8 bits exactly as a PNG writer does, so a remote reward scores the same
pixels a local one would (the CLIP-family rewards round the same way before preprocessing).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from PIL import Image

from solrl.rewards.images import to_uint8
from solrl.rewards.v1 import reward_pb2

Encoding = Literal["raw", "png"]


class MalformedImage(ValueError):
    """An image message that cannot be decoded; the message says which and why."""


class TooManyPixels(ValueError):
    """A request whose images hold more pixels than the server decodes for one request."""


def encode_images(images: torch.Tensor, encoding: Encoding = "raw") -> list[reward_pb2.Image]:
    """Image messages for a batch."""
    out = []
    for arr in to_uint8(images):
        if encoding == "png":
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
            out.append(reward_pb2.Image(png=buf.getvalue()))
        elif encoding == "raw":
            out.append(reward_pb2.Image(raw=reward_pb2.RawImage(height=arr.shape[0], width=arr.shape[1], rgb=arr.tobytes())))
        else:
            raise ValueError(f"image encoding {encoding!r} is unknown; choose 'raw' or 'png'")
    return out


def decode_images(messages: Sequence[reward_pb2.Image], max_side: int, max_pixels: int | None = None) -> torch.Tensor:
    """Image messages -> (B, 3, H, W) float in [0, 1]; every image must share one size. Each
    image's size is checked against `max_pixels` (the request's total) before it is decoded."""
    arrays, pixels = [], 0

    def admit(i: int, h: int, w: int) -> None:
        nonlocal pixels
        pixels += h * w
        if max_pixels is not None and pixels > max_pixels:
            raise TooManyPixels(f"image {i} brings the request to {pixels} pixels, over this server's max_pixels={max_pixels}; split the request")

    for i, msg in enumerate(messages):
        kind = msg.WhichOneof("data")
        if kind == "raw":
            h, w = msg.raw.height, msg.raw.width
            admit(i, h, w)
            if not (0 < h <= max_side and 0 < w <= max_side):
                raise MalformedImage(f"image {i}: raw size {h}x{w} is outside 1..{max_side} pixels a side")
            if len(msg.raw.rgb) != h * w * 3:
                raise MalformedImage(f"image {i}: raw data holds {len(msg.raw.rgb)} bytes, expected {h}x{w}x3 = {h * w * 3}")
            arr = np.frombuffer(msg.raw.rgb, dtype=np.uint8).reshape(h, w, 3)
        elif kind == "png":
            try:
                with Image.open(io.BytesIO(msg.png)) as img:
                    if img.format != "PNG":
                        raise MalformedImage(f"image {i}: expected PNG, got {img.format}")
                    if max(img.size) > max_side:
                        raise MalformedImage(f"image {i}: PNG size {img.size[1]}x{img.size[0]} exceeds {max_side} pixels a side")
                    admit(i, img.size[1], img.size[0])  # from the header, before the pixels are decoded
                    arr = np.asarray(img.convert("RGB"))
            except (MalformedImage, TooManyPixels):
                raise
            except Exception as exc:  # PIL raises many types for corrupt data
                raise MalformedImage(f"image {i}: not a decodable PNG ({type(exc).__name__}: {exc})") from None
        else:
            raise MalformedImage(f"image {i}: neither png nor raw data is set")
        arrays.append(arr)
    if len({a.shape for a in arrays}) > 1:
        raise MalformedImage(f"images differ in size ({sorted({a.shape[:2] for a in arrays})}); send one size per request")
    if not arrays:
        return torch.empty(0, 3, 0, 0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
