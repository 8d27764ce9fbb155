"""ImageData: batching order, normalisation and batched augmentation (crop with zero padding, flip)."""
from __future__ import annotations

import pytest
import torch

from bench.config import AugmentConfig
from bench.data.tensors import ImageData, augment_batch, draw_augmentation


def make_data(n: int = 37, c: int = 3, h: int = 6, w: int = 5, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return ImageData(x, y, mean=(0.5,) * c, std=(0.25,) * c)


def raw(d: ImageData, xb: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation back to (rounded) uint8 pixel values."""
    mean = torch.tensor(d.mean).view(1, -1, 1, 1)
    std = torch.tensor(d.std).view(1, -1, 1, 1)
    return ((xb * std + mean) * 255).round().to(torch.uint8)


def test_shuffled_batches_cover_every_index_once_and_match_labels():
    d = make_data(37)
    seen = []
    for x, y, idx in d.batches(8, shuffle=True, generator=torch.Generator().manual_seed(1)):
        assert x.shape[1:] == (3, 6, 5) and x.dtype == torch.float32
        assert torch.equal(y, d.y[idx])
        assert torch.equal(raw(d, x), d.x[idx])
        seen.append(idx)
    seen = torch.cat(seen)
    assert [len(s) for s in torch.split(seen, 8)] == [8, 8, 8, 8, 5]
    assert sorted(seen.tolist()) == list(range(37))
    assert not torch.equal(seen, torch.arange(37))  # actually shuffled


def test_order_is_randperm_of_the_generator_and_repeatable():
    d = make_data(37)
    gen = lambda s: torch.Generator().manual_seed(s)
    order = lambda s: torch.cat([i for _, _, i in d.batches(10, shuffle=True, generator=gen(s))])
    assert torch.equal(order(3), order(3))
    assert torch.equal(order(3), torch.randperm(37, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(order(3), order(4))


def test_drop_last_skips_only_the_short_final_batch():
    d = make_data(37)
    gen = torch.Generator().manual_seed(0)
    sizes = [len(i) for _, _, i in d.batches(8, shuffle=True, generator=gen, drop_last=True)]
    assert sizes == [8, 8, 8, 8]
    sizes = [len(i) for _, _, i in d.batches(37, drop_last=True)]
    assert sizes == [37]
    unshuffled = torch.cat([i for _, _, i in d.batches(8)])
    assert torch.equal(unshuffled, torch.arange(37))


def test_normalisation_on_hand_made_tensor():
    x = torch.tensor([0, 51, 255, 102], dtype=torch.uint8).view(1, 2, 1, 2)  # channel 0: 0, 51; channel 1: 255, 102
    d = ImageData(x, torch.tensor([0]), mean=(0.2, 0.4), std=(0.5, 0.1))
    (xb, _, _), = list(d.batches(4))
    expected = torch.tensor([[(0.0 - 0.2) / 0.5, (0.2 - 0.2) / 0.5], [(1.0 - 0.4) / 0.1, (0.4 - 0.4) / 0.1]])
    torch.testing.assert_close(xb.view(2, 2), expected, atol=1e-6, rtol=1e-6)


def test_output_dtype_and_channels_last():
    d = make_data(4, c=3, h=4, w=4)
    (xb, _, _), = list(d.batches(4, dtype=torch.bfloat16, channels_last=True))
    assert xb.dtype == torch.bfloat16 and xb.is_contiguous(memory_format=torch.channels_last)


def test_crop_with_zero_padding_and_no_flip_is_identity():
    d = make_data(20)
    plain = list(d.batches(7))
    aug = list(d.batches(7, augment=AugmentConfig(crop_padding=0, flip=False),
                         aug_generator=torch.Generator().manual_seed(0)))
    for (a, ya, ia), (b, yb, ib) in zip(plain, aug):
        assert torch.equal(a, b) and torch.equal(ya, yb) and torch.equal(ia, ib)


def test_flip_flips_exactly_the_selected_samples():
    d = make_data(64, h=5, w=7)
    x = d.x
    mask = torch.zeros(64, dtype=torch.bool)
    mask[[0, 3, 10, 63]] = True
    out = augment_batch(x, 0, None, None, mask)
    assert torch.equal(out[mask], x[mask].flip(3))
    assert torch.equal(out[~mask], x[~mask])
    # through batches(): the flips are exactly the draws of the augmentation generator, about half of them
    aug = AugmentConfig(crop_padding=0, flip=True)
    (xb, _, idx), = list(d.batches(64, augment=aug, aug_generator=torch.Generator().manual_seed(5)))
    _, _, flip = draw_augmentation(64, aug, torch.Generator().manual_seed(5), "cpu")
    got = raw(d, xb)
    assert torch.equal(got[flip], x[idx][flip].flip(3)) and torch.equal(got[~flip], x[idx][~flip])
    assert 16 < int(flip.sum()) < 48


def reference_crop(x: torch.Tensor, p: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor | None):
    """Per-sample Python loop: zero-pad by p, take the HxW window at (dy, dx), then flip if asked."""
    b, c, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(b):
        padded = torch.zeros(c, h + 2 * p, w + 2 * p, dtype=x.dtype)
        padded[:, p:p + h, p:p + w] = x[i]
        crop = padded[:, int(dy[i]):int(dy[i]) + h, int(dx[i]):int(dx[i]) + w]
        out[i] = crop.flip(2) if flip is not None and flip[i] else crop
    return out


@pytest.mark.parametrize("flip_on", [False, True])
def test_batched_crop_equals_per_sample_reference(flip_on):
    d = make_data(50, c=2, h=6, w=5)
    p = 2
    g = torch.Generator().manual_seed(7)
    dy, dx = torch.randint(0, 2 * p + 1, (2, 50), generator=g)
    flip = torch.rand(50, generator=g) < 0.5 if flip_on else None
    assert torch.equal(augment_batch(d.x, p, dy, dx, flip), reference_crop(d.x, p, dy, dx, flip))
    # and batches() uses the augmentation generator's draws, by position in the shuffled epoch
    aug = AugmentConfig(crop_padding=p, flip=flip_on)
    got = [(raw(d, xb), idx) for xb, _, idx in d.batches(16, shuffle=True, generator=torch.Generator().manual_seed(1),
                                                           augment=aug, aug_generator=torch.Generator().manual_seed(2))]
    xs, idx = torch.cat([a for a, _ in got]), torch.cat([i for _, i in got])
    dy, dx, flip = draw_augmentation(50, aug, torch.Generator().manual_seed(2), "cpu")
    assert torch.equal(xs, reference_crop(d.x[idx], p, dy, dx, flip))
    assert not torch.equal(xs, d.x[idx])


def test_augmentation_stream_does_not_change_the_order():
    d = make_data(30)
    aug = AugmentConfig(crop_padding=1, flip=True)
    a = torch.cat([i for *_, i in d.batches(8, shuffle=True, generator=torch.Generator().manual_seed(0), augment=aug,
                                             aug_generator=torch.Generator().manual_seed(1))])
    b = torch.cat([i for *_, i in d.batches(8, shuffle=True, generator=torch.Generator().manual_seed(0), augment=aug,
                                             aug_generator=torch.Generator().manual_seed(2))])
    assert torch.equal(a, b)


def test_subset_and_to_keep_metadata():
    d = make_data(10)
    d.classes = ["a", "b", "c", "d"]
    s = d.subset(torch.tensor([4, 1]))
    assert torch.equal(s.x, d.x[[4, 1]]) and torch.equal(s.y, d.y[[4, 1]])
    assert s.mean == d.mean and s.std == d.std and s.classes == d.classes and len(s) == 2
    assert len(d.subset(d.y == 0)) == int((d.y == 0).sum())
    assert d.to("cpu") is d and d.num_classes == 4


def test_rejects_non_uint8_images():
    with pytest.raises(ValueError, match="uint8"):
        ImageData(torch.zeros(2, 1, 3, 3), torch.zeros(2, dtype=torch.long), (0.5,), (0.5,))
