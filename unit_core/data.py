"""Unpaired training data: an image folder per domain, read as a deterministic stream of samples.

Sample number ``g`` of the run (counted over all steps, workers and batch slots) is a
pure function of ``(seed, g)``: which image of each domain (a fresh permutation per
pass over the folder), the crop offset and the flip. Resuming at step ``s`` therefore
continues the exact stream without saving any loader state, and distributed workers
take disjoint interleaved parts of it. Class labels of the source domain's images (domain
adaptation) travel with their image, so they follow the same stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from unit_core.config import DataConfig
from unit_core.images import load_image, pil_to_tensor
from unit_core.layout import domain_folder, domain_images, labels_file, read_labels


def image_labels(root: str | Path, domain: str, split: str, files: list[Path], num_classes: int) -> list[int]:
    """Class index of each of ``files`` (images of ``<root>/<domain>/<split>``), from the split's labels file."""
    path = labels_file(root, domain, split)
    labels = read_labels(path)
    folder = domain_folder(root, domain, split)
    result = []
    for file in files:
        name = file.relative_to(folder).as_posix()
        if name not in labels:
            raise ValueError(f"{path}: no label for {file}")
        if not 0 <= labels[name] < num_classes:
            raise ValueError(f"{path}: label {labels[name]} of {name} is outside 0..{num_classes - 1} (model.num_classes)")
        result.append(labels[name])
    return result


class _Permutations:
    """Index of the g-th sample of one domain: a new seeded permutation per pass over the files."""

    def __init__(self, count: int, seed: int, stream: int):
        self.count, self.seed, self.stream = count, seed, stream
        self._permutation = lru_cache(maxsize=4)(self._make)

    def _make(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.count)

    def __call__(self, sample: int) -> int:
        epoch, position = divmod(sample, self.count)
        return int(self._permutation(epoch)[position])


def resize_and_crop(image: Image.Image, load_size: int, crop: int, rng: np.random.Generator | None, flip: bool) -> Image.Image:
    """Resize the shorter side to ``load_size``, crop ``crop``x``crop`` (random if ``rng``, else centred), maybe flip."""
    width, height = image.size
    scale = load_size / min(width, height)
    new_size = (max(crop, round(width * scale)), max(crop, round(height * scale)))
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BICUBIC)
    width, height = image.size
    if rng is None:
        left, top = (width - crop) // 2, (height - crop) // 2
    else:
        left, top = int(rng.integers(0, width - crop + 1)), int(rng.integers(0, height - crop + 1))
    image = image.crop((left, top, left + crop, top + crop))
    if flip and rng is not None and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


class UnpairedSamples(Dataset):
    """``dataset[g]`` = (x_1, ..., x_N), one image per domain, for global sample number g; see the module docstring.

    With ``labels`` (the class of each file of the first domain), ``dataset[g]`` = (x_1, ..., x_N, label of x_1).
    """

    def __init__(self, files: Sequence[list[Path]], data: DataConfig, channels: Sequence[int], seed: int,
                 labels: list[int] | None = None):
        if len(files) != len(channels):
            raise ValueError(f"{len(files)} domains of files for {len(channels)} channel counts")
        if labels is not None and len(labels) != len(files[0]):
            raise ValueError(f"{len(labels)} labels for {len(files[0])} images of the first domain")
        self.files = tuple(files)
        self.labels = labels
        self.data = data
        self.channels = tuple(channels)
        self.seed = seed
        count = len(self.files)
        self.order = tuple(_Permutations(len(domain_files), seed, index) for index, domain_files in enumerate(self.files))
        # Random streams of the crops: numbered after the N permutation streams (two domains: 2 and 3).
        self.crop_streams = tuple(count + index for index in range(count))
        # data.in_memory: decoded images by (domain, file index), filled on first use (per loader worker).
        self.decoded: dict[tuple[int, int], Image.Image] = {}

    def __len__(self) -> int:
        return 2**62

    def image(self, domain: int, index: int) -> Image.Image:
        cached = self.decoded.get((domain, index))
        if cached is not None:
            return cached
        image = load_image(self.files[domain][index], self.channels[domain], self.data.load_size or self.data.image_size)
        if self.data.in_memory:
            self.decoded[(domain, index)] = image
        return image

    def load(self, domain: int, sample: int) -> torch.Tensor:
        crop = self.data.image_size
        load_size = self.data.load_size or crop
        image = self.image(domain, self.order[domain](sample))
        if image.size == (crop, crop) and load_size == crop and not self.data.flip:
            return pil_to_tensor(image)  # nothing random to draw: the result of resize_and_crop, faster
        rng = np.random.default_rng([self.seed, self.crop_streams[domain], sample])
        return pil_to_tensor(resize_and_crop(image, load_size, crop, rng, self.data.flip))

    def __getitem__(self, sample: int) -> tuple[torch.Tensor, ...]:
        images = tuple(self.load(domain, sample) for domain in range(len(self.files)))
        if self.labels is None:
            return images
        return (*images, torch.tensor(self.labels[self.order[0](sample)]))


class StepSampler(Sampler[int]):
    """Global sample numbers for steps ``start_step..max_steps-1`` of one worker (rank) of ``world_size``."""

    def __init__(self, start_step: int, max_steps: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start_step, self.max_steps = start_step, max_steps
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.max_steps):
            first = (step * self.world_size + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.batch_size


def fixed_samples(root: str | Path, domain: str, channels: int, data: DataConfig, count: int) -> torch.Tensor:
    """The first ``count`` images of the test split (train if none), centre-cropped: for sample grids."""
    try:
        files = domain_images(root, domain, "test")
    except FileNotFoundError:
        try:
            files = domain_images(root, domain, "test_paired")
        except FileNotFoundError:
            files = domain_images(root, domain, "train")
    crop = data.image_size
    tensors = [
        pil_to_tensor(resize_and_crop(load_image(path, channels), data.load_size or crop, crop, None, False))
        for path in files[:count]
    ]
    return torch.stack(tensors)
