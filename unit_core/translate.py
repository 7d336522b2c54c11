"""Translation F_{1->2}(x) = G2(E1(x)) and F_{2->1} of images of any size with a trained generator."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from unit_core.checkpoint import load_generator
from unit_core.config import UnitConfig
from unit_core.images import pil_to_tensor, tensor_to_pil, to_mode
from unit_core.networks import UNITGenerator
from unit_core.trainer import resolve_device

DIRECTIONS = {"a2b": ("a", "b"), "b2a": ("b", "a")}
SIZE_MULTIPLE = 4  # two stride-2 layers


class Translator:
    def __init__(self, generator: UNITGenerator, channels: dict[str, int], device: torch.device, autocast_dtype: torch.dtype | None = None):
        self.generator = generator.eval().to(device)
        self.channels = channels
        self.device = device
        self.autocast_dtype = autocast_dtype

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> "Translator":
        return translator_from_checkpoint(path, device)[0]

    @torch.no_grad()
    def translate_tensor(self, images: torch.Tensor, direction: str) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1], any H and W: reflect-padded to a multiple of 4, cropped back."""
        source, target = DIRECTIONS[direction]
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
        x = images.to(self.device)
        if pad_h or pad_w:
            # replicate, not reflect: reflect needs the pad to be smaller than the image side.
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
            y = self.generator.translate(x, source, target)
        return y[..., :height, :width].float().cpu()

    def translate_images(self, images: list[Image.Image], direction: str) -> list[Image.Image]:
        """Translate PIL images of one size; any mode in, the target domain's mode out (alpha kept)."""
        source, _ = DIRECTIONS[direction]
        alphas = [image.getchannel("A") if image.mode in ("RGBA", "LA") else None for image in images]
        batch = torch.stack([pil_to_tensor(to_mode(image, self.channels[source])) for image in images])
        outputs = [tensor_to_pil(t) for t in self.translate_tensor(batch, direction)]
        for index, alpha in enumerate(alphas):
            if alpha is not None:
                outputs[index] = outputs[index].convert("RGBA" if outputs[index].mode == "RGB" else "LA")
                outputs[index].putalpha(alpha)
        return outputs


def translator_from_checkpoint(path: str | Path, device: str = "auto") -> tuple[Translator, UnitConfig]:
    """The translator of a checkpoint and the configuration it was trained with (one file read)."""
    cfg, generator = load_generator(path)
    channels = {"a": cfg.model.channels_a, "b": cfg.model.channels_b}
    return Translator(generator, channels, resolve_device(device)), cfg


def batches_by_size(images: Iterable[tuple[Path, Image.Image]], batch_size: int) -> Iterator[list[tuple[Path, Image.Image]]]:
    """Group consecutive images of equal size into batches (a size change closes the batch)."""
    batch: list[tuple[Path, Image.Image]] = []
    for item in images:
        if batch and (item[1].size != batch[0][1].size or len(batch) == batch_size):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch
