"""Translation F_{s->t}(x) = G_t(E_s(x)) between any two domains, images of any size, with a trained generator."""

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
from unit_core.trainer import cpu_has_bf16, resolve_device

#: Two-domain models: the direction names of their two translations (x1 -> x2 and back).
DIRECTIONS = ("a2b", "b2a")
SIZE_MULTIPLE = 4  # two stride-2 layers
#: Arithmetic of the generator at inference: auto = bf16 where the hardware computes it natively.
PRECISIONS = ("auto", "fp32", "bf16")


def autocast_dtype_for(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: fp32, no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        native = (torch.cuda.is_bf16_supported() if device.type == "cuda" else device.type == "cpu" and cpu_has_bf16())
        precision = "bf16" if native else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


class Translator:
    """F_{s->t} between any two domains of a trained model.

    Domains are named by slot (``a``/``b`` of a two-domain model, the domain names of an
    N-domain one) or by folder name (``names``: slot -> folder name, e.g. ``a`` -> ``day``).
    """

    def __init__(self, generator: UNITGenerator, channels: dict[str, int], device: torch.device,
                 autocast_dtype: torch.dtype | None = None, names: dict[str, str] | None = None):
        self.generator = generator.eval().to(device)
        self.channels = channels
        self.names = names or {slot: slot for slot in channels}
        self.device = device
        self.autocast_dtype = autocast_dtype

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "fp32") -> "Translator":
        return translator_from_checkpoint(path, device, precision)[0]

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast_dtype == torch.bfloat16 else "fp16" if self.autocast_dtype else "fp32"

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(self.channels)

    def domain(self, name: str) -> str:
        """The slot of a domain given by slot or by folder name; a ValueError listing the choices otherwise."""
        if name in self.channels:
            return name
        slots = [slot for slot, folder in self.names.items() if folder == name]
        if len(slots) == 1:
            return slots[0]
        choices = ", ".join(f"{slot} ({self.names[slot]})" if self.names[slot] != slot else slot for slot in self.channels)
        raise ValueError(f"unknown domain {name!r}: this model translates among {choices}")

    def direction(self, direction: str) -> tuple[str, str]:
        """(source, target) of ``a2b`` / ``b2a``; only two-domain models have these directions."""
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}: use a2b or b2a")
        if len(self.domains) != 2:
            raise ValueError(f"direction {direction!r} names one of two domains, but this model has {len(self.domains)} "
                             f"({', '.join(self.domains)}): give the source and target domains instead")
        first, second = self.domains
        return (first, second) if direction == "a2b" else (second, first)

    def check_size(self, width: int, height: int) -> None:
        """A ValueError if the generator cannot take images of this size (a vector code takes one size only)."""
        side = self.generator.fixed_size
        if side and (width, height) != (side, side):
            raise ValueError(f"this model's generator (conv32) translates {side}x{side} images only, got {width}x{height}: "
                             f"resize them to {side}x{side} first")

    @torch.no_grad()
    def translate_tensor(self, images: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1], any H and W: replicate-padded to a multiple of 4, cropped back.

        A generator with a vector code (``conv32``) takes its one size only.
        """
        source, target = self.domain(source), self.domain(target)
        height, width = images.shape[-2:]
        self.check_size(width, height)
        pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
        x = images.to(self.device)
        if pad_h or pad_w:
            # replicate, not reflect: reflect needs the pad to be smaller than the image side.
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
            y = self.generator.translate(x, source, target)
        return y[..., :height, :width].float().cpu()

    def translate_images(self, images: list[Image.Image], source: str, target: str) -> list[Image.Image]:
        """Translate PIL images of one size; any mode in, the target domain's mode out (alpha kept)."""
        source, target = self.domain(source), self.domain(target)
        alphas = [image.getchannel("A") if image.mode in ("RGBA", "LA") else None for image in images]
        batch = torch.stack([pil_to_tensor(to_mode(image, self.channels[source])) for image in images])
        outputs = [tensor_to_pil(t) for t in self.translate_tensor(batch, source, target)]
        for index, alpha in enumerate(alphas):
            if alpha is not None:
                outputs[index] = outputs[index].convert("RGBA" if outputs[index].mode == "RGB" else "LA")
                outputs[index].putalpha(alpha)
        return outputs


def translator_from_checkpoint(path: str | Path, device: str = "auto", precision: str = "fp32") -> tuple[Translator, UnitConfig]:
    """The translator of a checkpoint and the configuration it was trained with (one file read).

    ``precision``: one of :data:`PRECISIONS`; fp32 by default, so evaluation numbers do not
    depend on the hardware.
    """
    cfg, generator = load_generator(path)
    target = resolve_device(device)
    return Translator(generator, cfg.channels(), target, autocast_dtype_for(precision, target), names=cfg.domains()), cfg


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
