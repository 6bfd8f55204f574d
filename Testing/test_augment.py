"""Colour augmentation of Training.augment: RGB only, seeded through MONAI, labels untouched."""
import pytest
import torch

from Training.augment import DEFAULT_AUGMENT, RandColord, apply, build_augment, default_augment

SIZE = 32
COLOUR = ("hue", "saturation", "value", "rgb_shift", "channel_shuffle")


def colour_only(keys=COLOUR, prob=1.0):
    """A config of only the colour transforms ``keys`` of DEFAULT_AUGMENT, at ``prob``."""
    return {k: dict(DEFAULT_AUGMENT[k], prob=prob) for k in keys}


def sample(channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(channels, SIZE, SIZE, generator=g)
    label = torch.zeros(1, SIZE, SIZE)
    label[0, 8:20, 4:28] = 1
    label[0, 22:26, 10:14] = 2
    return image, label


def test_colour_keys_are_in_the_defaults():
    assert set(COLOUR) <= set(default_augment())
    assert default_augment() == DEFAULT_AUGMENT and default_augment() is not DEFAULT_AUGMENT


def test_rgb_same_seed_same_output_other_seed_differs():
    image, label = sample(3)
    x1, _ = apply(build_augment(colour_only(), seed=3), image, label)
    x2, _ = apply(build_augment(colour_only(), seed=3), image, label)
    x3, _ = apply(build_augment(colour_only(), seed=4), image, label)
    assert torch.equal(x1, x2)
    assert not torch.equal(x1, x3)
    assert not torch.equal(x1, image)


def test_reproducible_through_set_random_state_not_global_rng():
    image, label = sample(3)
    augment = build_augment(colour_only(), seed=0)
    augment.set_random_state(seed=11)
    torch.manual_seed(1)
    a = [apply(augment, image, label)[0] for _ in range(3)]
    augment.set_random_state(seed=11)
    torch.manual_seed(2)  # the global torch RNG plays no part
    b = [apply(augment, image, label)[0] for _ in range(3)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], a[1])  # a fresh draw per sample


@pytest.mark.parametrize("kind", COLOUR)
def test_grey_images_are_untouched(kind):
    image, label = sample(1)
    augment = build_augment(colour_only(keys=[kind]), seed=1)
    for _ in range(3):
        x, y = apply(augment, image, label)
        assert torch.equal(x, image) and torch.equal(y, label)


def test_colour_keys_leave_grey_augmentation_as_it_was():
    """Appended last, the colour transforms do not shift the random streams of the others."""
    image, label = sample(1)
    base = {k: v for k, v in default_augment().items() if k not in COLOUR}
    for v in base.values():
        v["prob"] = 1.0
    full = dict(base, **colour_only())
    x1, y1 = apply(build_augment(base, seed=9), image, label)
    x2, y2 = apply(build_augment(full, seed=9), image, label)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_channel_shuffle_permutes_channels():
    image, label = sample(3)
    augment = build_augment(colour_only(keys=["channel_shuffle"]), seed=0)
    seen = set()
    for _ in range(30):
        x, y = apply(augment, image, label)
        perm = [next(j for j in range(3) if torch.equal(x[i], image[j])) for i in range(3)]
        assert sorted(perm) == [0, 1, 2]
        assert torch.equal(y, label)
        seen.add(tuple(perm))
    assert len(seen) > 1


def test_hue_changes_hue_and_keeps_grey_pixels_grey():
    image, label = sample(3)
    image[:, 0, :4] = torch.tensor([0.0, 0.3, 0.7, 1.0])  # four grey pixels, R = G = B
    image[:, 1, 0] = torch.tensor([0.9, 0.2, 0.1])  # a saturated red
    x, y = apply(build_augment({"hue": {"prob": 1.0, "shift": [0.2, 0.3]}}, seed=0), image, label)
    assert torch.allclose(x[:, 0, :4], image[:, 0, :4], atol=1e-6)  # grey stays grey, same level
    assert not torch.allclose(x[:, 1, 0], image[:, 1, 0], atol=1e-3)
    assert torch.equal(y, label)
    # red (hue 0.02) turned by 0.2 to 0.3 of the circle is greenish (hue 1/6 to 1/2: green largest)
    assert x[:, 1, 0].argmax().item() == 1
    # while its value (max) and chroma (max - min) are kept
    assert x[:, 1, 0].max().item() == pytest.approx(0.9, abs=1e-5)
    assert (x[:, 1, 0].max() - x[:, 1, 0].min()).item() == pytest.approx(0.8, abs=1e-5)


def test_rgb_shift_offsets_each_channel_independently():
    image, label = sample(3)
    image = image * 0.5 + 0.25  # room for +-0.1 without clipping
    x, y = apply(build_augment({"rgb_shift": {"prob": 1.0, "offsets": 0.1}}, seed=2), image, label)
    d = (x - image).flatten(1)
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-6)  # one offset per channel
    offsets = d[:, 0]
    assert offsets.abs().max() <= 0.1 + 1e-6 and len(set(offsets.tolist())) == 3
    assert torch.equal(y, label)


@pytest.mark.parametrize("kind", COLOUR)
def test_colour_keeps_labels_and_range(kind):
    image, label = sample(3)
    image[:, :4] = 1.0
    image[:, 4:8] = 0.0
    augment = build_augment({kind: dict(DEFAULT_AUGMENT[kind], prob=1.0)}, seed=5)
    for _ in range(5):
        x, y = apply(augment, image, label)
        assert x.shape == image.shape and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1
        assert torch.equal(y, label)


def test_transform_on_its_own_range_and_metatensor():
    from monai.data import MetaTensor

    image, label = sample(3)
    t = RandColord("image", "value", [0.5, 0.5], prob=1.0)  # brightness x 1.5, clipped at 1
    out = t({"image": MetaTensor(image), "label": label})
    assert isinstance(out["image"], MetaTensor) and out["label"] is label
    assert torch.allclose(out["image"].as_tensor(), (image * 1.5).clamp(0, 1), atol=1e-6)
    with pytest.raises(ValueError):
        RandColord("image", "tint", 0.1)
    with pytest.raises(ValueError):
        RandColord("image", "hue", 0.7)


@pytest.mark.parametrize("channels", [1, 3])
def test_default_augment_runs_on_grey_and_rgb(channels):
    image = torch.rand(channels, 64, 64)
    label = torch.zeros(1, 64, 64)
    label[0, 10:30, 10:50] = 1
    label[0, 40:55, 20:30] = 2
    augment = build_augment(default_augment(), seed=7)
    for _ in range(8):
        x, y = apply(augment, image, label)
        assert x.shape == image.shape and y.shape == label.shape
        assert 0 <= x.min() and x.max() <= 1
        assert set(y.unique().tolist()) <= {0.0, 1.0, 2.0}
    every = default_augment()
    for v in every.values():
        v["prob"] = 1.0
    x, y = apply(build_augment(every, seed=7), image, label)
    assert 0 <= x.min() and x.max() <= 1 and set(y.unique().tolist()) <= {0.0, 1.0, 2.0}
