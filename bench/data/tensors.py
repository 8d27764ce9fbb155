"""Image datasets as uint8 tensors on the compute device, batched and augmented with tensor ops (airbench style).

The whole split lives on the device as uint8 [N, C, H, W]; a batch is an index gather, an optional augmentation
(random crop with zero padding + horizontal flip, done for the whole batch as ONE gather on the uint8 pixels) and
a fused normalisation `x * scale + shift` with `scale = 1 / (255 std)`, `shift = -mean / std` precomputed on the
device. No per-sample Python anywhere.

Randomness: the order comes only from `generator`, the augmentation only from `aug_generator`, so the two are
independent streams (changing the augmentation never changes the data order, and vice versa).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F

from bench.config import AugmentConfig


@dataclass
class ImageData:
    """x: uint8 [N, C, H, W]; y: int64 [N]; mean/std per channel in [0, 1] units, used to normalise batches."""
    x: torch.Tensor
    y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] = field(default_factory=list)
    # (device, dtype) -> (scale, shift), each [1, C, 1, 1]; filled on first use.
    _norm: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError(f"ImageData.x must be uint8 [N, C, H, W]; got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dim() != 1 or self.y.shape[0] != self.x.shape[0]:
            raise ValueError(f"ImageData.y must be [N] with N = {self.x.shape[0]}; got {tuple(self.y.shape)}")
        if self.y.dtype != torch.int64:
            self.y = self.y.long()
        self.mean, self.std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        c = self.x.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"mean/std need {c} entries (one per channel); got {self.mean} and {self.std}")

    # ------------------------------------------------------------------------------------------- basics
    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def num_classes(self) -> int:
        """len(classes) when named, else 1 + the largest label."""
        return len(self.classes) if self.classes else (int(self.y.max()) + 1 if len(self) else 0)

    def to(self, device: str | torch.device) -> "ImageData":
        """The same data on `device` (returns self when it is already there)."""
        if torch.device(device) == self.x.device:
            return self
        return ImageData(self.x.to(device), self.y.to(device), self.mean, self.std, list(self.classes))

    def subset(self, idx: torch.Tensor) -> "ImageData":
        """The samples at positions `idx` (int indices or a bool mask), in that order; classes kept."""
        idx = torch.as_tensor(idx, device=self.x.device)
        if idx.dtype != torch.bool:
            idx = idx.long()
        return ImageData(self.x[idx], self.y[idx], self.mean, self.std, list(self.classes))

    def normalization(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), [1, C, 1, 1] on the data's device: normalised = uint8 * scale + shift."""
        key = (self.x.device, dtype)
        if key not in self._norm:
            mean = torch.tensor(self.mean, dtype=torch.float64).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float64).view(1, -1, 1, 1)
            scale, shift = 1.0 / (255.0 * std), -mean / std
            self._norm[key] = (scale.to(self.x.device, dtype), shift.to(self.x.device, dtype))
        return self._norm[key]

    # ------------------------------------------------------------------------------------------ batches
    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: AugmentConfig | None = None, aug_generator: torch.Generator | None = None,
                drop_last: bool = False, dtype: torch.dtype = torch.float32,
                channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (x normalised float [B,C,H,W], y [B], idx [B]) on the data's device.

        shuffle: order = torch.randperm(N, generator=generator) (drawn on the generator's device, then moved).
        augment: per-sample random translation by up to `crop_padding` pixels (zero padding) and, if `flip`,
        a horizontal flip with probability 1/2; all draws for the epoch come from `aug_generator` up front,
        indexed by position in the epoch (see `draw_augmentation`).
        drop_last: skip the final batch when it is smaller than `batch_size`.
        """
        n, dev = len(self), self.x.device
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        order = None
        if shuffle:
            gdev = generator.device if generator is not None else torch.device("cpu")
            order = torch.randperm(n, generator=generator, device=gdev).to(dev, non_blocking=True)
        aug = draw_augmentation(n, augment, aug_generator, dev)
        scale, shift = self.normalization(torch.float32)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            end = min(start + batch_size, n)
            if order is None:  # slices: no gather needed
                idx = torch.arange(start, end, device=dev)
                xb, yb = self.x[start:end], self.y[start:end]
            else:
                idx = order[start:end]
                xb, yb = self.x[idx], self.y[idx]
            if aug is not None:
                dy, dx, flip = (a[start:end] if a is not None else None for a in aug)
                xb = augment_batch(xb, augment.crop_padding, dy, dx, flip)
            xb = torch.addcmul(shift, xb.to(torch.float32), scale)  # (x/255 - mean)/std in one fused op
            if dtype != torch.float32:
                xb = xb.to(dtype)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb, idx


# ------------------------------------------------------------------------------------------ augmentation
def draw_augmentation(n: int, augment: AugmentConfig | None, generator: torch.Generator | None,
                      device: str | torch.device) -> tuple[torch.Tensor | None, ...] | None:
    """Per-position augmentation draws for an epoch of `n` samples, or None when nothing is augmented.

    Returns (dy, dx, flip): offsets in [0, 2 * crop_padding] (None when crop_padding == 0) and a bool flip
    mask (None when flip is off). Drawn on the generator's device in this order (dy, dx, then flip), then
    moved to `device`.
    """
    if augment is None or (augment.crop_padding <= 0 and not augment.flip):
        return None
    gdev = generator.device if generator is not None else torch.device("cpu")
    dy = dx = flip = None
    p = int(augment.crop_padding)
    if p > 0:
        dy, dx = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=gdev).to(device, non_blocking=True)
    if augment.flip:
        flip = (torch.rand(n, generator=generator, device=gdev) < 0.5).to(device, non_blocking=True)
    return dy, dx, flip


_BASE_INDEX: dict = {}  # (H, W, padding, device) -> (index, flipped index), each [H * W] into the padded image


def augment_batch(x: torch.Tensor, padding: int, dy: torch.Tensor | None, dx: torch.Tensor | None,
                  flip: torch.Tensor | None) -> torch.Tensor:
    """Random crop (zero padding `padding`, top-left offsets dy, dx in [0, 2 padding]) then per-sample
    horizontal flip where `flip` is True, for a whole batch as one gather; x: [B, C, H, W] (any dtype).

    out[b, :, i, j] = padded[b, :, dy[b] + i, dx[b] + (W-1-j if flip[b] else j)].
    """
    b, c, h, w = x.shape
    p = int(padding) if dy is not None else 0
    if p == 0 and flip is None:
        return x
    if p > 0:
        x = F.pad(x, (p, p, p, p))
    hp, wp = h + 2 * p, w + 2 * p
    key = (h, w, p, x.device)
    if key not in _BASE_INDEX:
        rows = torch.arange(h, device=x.device)[:, None] * wp
        cols = torch.arange(w, device=x.device)[None, :]
        _BASE_INDEX[key] = ((rows + cols).reshape(-1), (rows + (w - 1 - cols)).reshape(-1))
    base, base_flipped = _BASE_INDEX[key]
    index = base.expand(b, -1) if flip is None else torch.where(flip[:, None], base_flipped, base)
    if p > 0:
        index = index + (dy * wp + dx)[:, None]
    out = x.reshape(b, c, hp * wp).gather(2, index[:, None, :].expand(b, c, h * w))
    return out.view(b, c, h, w)
