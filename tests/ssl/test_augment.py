"""View recipes: shapes, ranges, randomness, seeding (incl. DataLoader workers), errors, preview."""

from __future__ import annotations

import random

import albumentations as A
import numpy as np
import pytest
import torch
from albumentations.augmentations.pixel import functional as album_pixel
from PIL import Image

from histoclr.ssl.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIEW_RECIPES,
    FastHEStain,
    FastNormalize,
    FastRandomRotate90,
    MultiViewTransform,
    augment_worker_init_fn,
    build_views,
    he_stain_uint8,
    histology_views,
    natural_views,
    normalize_views,
    save_view_preview,
    seed_transforms,
    seed_views,
)

SIZES = {"natural": 32, "histology": 48}


def he_like_image(h: int = 80, w: int = 96, seed: int = 0) -> np.ndarray:
    """A synthetic H&E-looking uint8 RGB image: pink stroma with purple blobs and texture."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (230, 160, 200)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(12):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, 10)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (90, 50, 150)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return he_like_image()


@pytest.mark.parametrize("recipe", list(VIEW_RECIPES))
def test_views_shape_dtype_range(recipe, image):
    size = SIZES[recipe]
    views = MultiViewTransform(build_views(recipe, image_size=size), n_views=3)(image)
    assert len(views) == 3
    lo = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    hi = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    for v in views:
        assert isinstance(v, torch.Tensor) and v.shape == (3, size, size) and v.dtype == torch.float32
        assert torch.isfinite(v).all()
        assert lo - 1e-4 <= v.min() and v.max() <= hi + 1e-4
        assert v.std() > 0.05  # not a constant image
    assert not torch.equal(views[0], views[1])


def test_pil_input_equals_array_input(image):
    t = MultiViewTransform(natural_views(image_size=24))
    seed_views(t, 3)
    a = t(image)
    seed_views(t, 3)
    b = t(Image.fromarray(image))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_bad_image_rejected():
    t = MultiViewTransform(natural_views(image_size=24))
    with pytest.raises(ValueError, match="uint8 RGB"):
        t(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        t(np.zeros((10, 10, 3), np.float32))


def test_identity_settings_give_the_normalised_image(image):
    # every random op off and a full-area crop of a square image at its own size
    t = histology_views(image_size=80, scale=(1.0, 1.0), hflip_p=0, vflip_p=0, rot90_p=0, hestain_p=0,
                        jitter_p=0, blur_p=0)
    square = np.ascontiguousarray(image[:, :80])
    view = MultiViewTransform(t, 1)(square)[0]
    expected = ((torch.from_numpy(square).permute(2, 0, 1).float() / 255
                 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None])
    torch.testing.assert_close(view, expected, atol=1e-5, rtol=0)


def test_hestain_changes_colour_not_layout(image):
    t = histology_views(image_size=48, scale=(1.0, 1.0), hflip_p=0, vflip_p=0, rot90_p=0, hestain_p=1.0,
                        jitter_p=0, blur_p=0)
    seed_views(t, 0)
    sq = np.ascontiguousarray(image[:, :80])
    a, b = MultiViewTransform(t, 2)(sq)
    assert (a - b).abs().mean() > 0.02  # different stains
    # nuclei stay where they are: per-pixel darkness is strongly correlated between the views
    corr = np.corrcoef(a.mean(0).flatten().numpy(), b.mean(0).flatten().numpy())[0, 1]
    assert corr > 0.8


@pytest.mark.parametrize("recipe", list(VIEW_RECIPES))
def test_same_seed_same_views(recipe, image):
    t1 = MultiViewTransform(build_views(recipe, image_size=SIZES[recipe]))
    t2 = MultiViewTransform(build_views(recipe, image_size=SIZES[recipe]))  # a separate instance
    seed_views(t1, 123)
    seed_views(t2, 123)
    for _ in range(3):  # the whole sequence repeats, not only the first draw
        assert all(torch.equal(x, y) for x, y in zip(t1(image), t2(image)))
    seed_views(t1, 124)
    seed_views(t2, 123)
    assert not all(torch.equal(x, y) for x, y in zip(t1(image), t2(image)))


def test_flips_are_not_correlated():
    # one shared RNG stream per pipeline: hflip and vflip decisions must be independent
    img = np.zeros((8, 8, 3), np.uint8)
    img[0, 0] = 255  # marker in the top-left corner
    t = histology_views(image_size=8, scale=(1.0, 1.0), rot90_p=0, hestain_p=0, jitter_p=0, blur_p=0)
    seed_views(t, 0)
    corners = set()
    for _ in range(40):
        v = MultiViewTransform(t, 1)(img)[0][0]
        corners.add(tuple(int(i) for i in np.unravel_index(int(v.argmax()), v.shape)))
    assert corners == {(0, 0), (0, 7), (7, 0), (7, 7)}


class _Views(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform
        self.image = he_like_image(40, 40)

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.stack(self.transform(self.image))


class _Wrapper(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i]


def test_seed_transforms_finds_nested_pipelines(image):
    inner = _Views(MultiViewTransform(natural_views(image_size=16)))
    assert seed_transforms(_Wrapper(inner), 5) == 1
    a = inner.transform(image)
    seed_transforms(torch.utils.data.ConcatDataset([inner]), 5)
    assert all(torch.equal(x, y) for x, y in zip(a, inner.transform(image)))
    assert seed_transforms(object(), 5) == 0


def _load(seed: int) -> list[torch.Tensor]:
    ds = _Wrapper(_Views(MultiViewTransform(natural_views(image_size=16), 2)))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2,
                                         worker_init_fn=augment_worker_init_fn,
                                         generator=torch.Generator().manual_seed(seed),
                                         multiprocessing_context="fork", timeout=120)
    return list(loader)  # worker 0 -> batch 0 (items 0, 1), worker 1 -> batch 1 (items 2, 3)


def test_worker_init_fn_reproducible_and_distinct_per_worker():
    first, again, other = _load(7), _load(7), _load(8)
    assert all(torch.equal(x, y) for x, y in zip(first, again))          # same base seed
    assert not torch.equal(first[0], first[1])                            # workers differ
    assert not all(torch.equal(x, y) for x, y in zip(first, other))       # base seed matters


def test_worker_init_fn_outside_worker_is_noop():
    state = np.random.get_state()[1].copy()
    augment_worker_init_fn(0)
    assert np.array_equal(state, np.random.get_state()[1])


def test_unknown_recipe_and_param():
    with pytest.raises(ValueError, match="unknown view recipe 'imagenet'.*natural, histology"):
        build_views("imagenet")
    with pytest.raises(ValueError, match="unknown parameter.*vflip_p.*'natural'.*valid:.*hflip_p"):
        build_views("natural", vflip_p=0.5)


@pytest.mark.parametrize("kwargs,match", [
    ({"image_size": 4}, "image_size"), ({"scale": (0.5, 0.2)}, "scale"), ({"hflip_p": 1.5}, "hflip_p"),
    ({"blur_sigma": (0.0, 1.0)}, "blur_sigma"), ({"jitter_strength": 5.0}, "jitter_strength"),
])
def test_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_views("natural", **kwargs)


def test_multiview_rejects_zero_views():
    with pytest.raises(ValueError, match="n_views"):
        MultiViewTransform(natural_views(), 0)


@pytest.mark.parametrize("as_multiview", [True, False])
def test_preview_png_size_and_state_restored(tmp_path, image, as_multiview):
    t = histology_views(image_size=32)
    transform = MultiViewTransform(t) if as_multiview else t
    seed_views(t, 11)
    expected_next = MultiViewTransform(t, 1)(image)[0]
    seed_views(t, 11)
    path = save_view_preview([image, he_like_image(seed=1)], transform, tmp_path / "sub" / "p.png",
                             n_pairs=2, tile_inches=1.0, dpi=50)
    assert path == tmp_path / "sub" / "p.png"
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == ((1 + 2 * 2) * 50, 2 * 50)
        assert np.asarray(im.convert("RGB")).std() > 10  # has content
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["p.png"]  # no temp file left
    # the preview did not consume the pipeline's own random stream
    assert torch.equal(MultiViewTransform(t, 1)(image)[0], expected_next)


def test_preview_same_seed_same_picture(tmp_path, image):
    t = histology_views(image_size=32)
    a = save_view_preview([image], t, tmp_path / "a.png", n_pairs=1, seed=4, dpi=40)
    b = save_view_preview([image], t, tmp_path / "b.png", n_pairs=1, seed=4, dpi=40)
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_histology_on_real_tile(shared_data):
    import tifffile

    path = min((shared_data / "monuseg2018" / "unlabeled" / "images").glob("*.tif"))
    tile = np.ascontiguousarray(tifffile.imread(path)[:256, :256, :3])
    t = MultiViewTransform(histology_views(image_size=64), 2)
    seed_views(t, 0)
    a, b = t(tile)
    assert a.shape == (3, 64, 64) and torch.isfinite(a).all() and not torch.equal(a, b)


# --------------------------------------------------------------------------- fast ops
def _test_images() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    noise[0, :3] = [[0, 0, 0], [255, 255, 255], [0, 255, 0]]     # the extremes of the log lookup
    glass = np.full((24, 24, 3), 245, np.uint8)                  # background only (luminosity >= 0.85)
    return [he_like_image(), noise, glass]


@pytest.mark.parametrize("preset", ["ruifrok", "standard", "high_contrast", "dark", "light"])
@pytest.mark.parametrize("augment_background", [False, True])
def test_he_stain_uint8_matches_albumentations(preset, augment_background):
    rng = np.random.default_rng(0)
    matrix = album_pixel.STAIN_MATRICES[preset]
    for img in _test_images():
        for _ in range(3):
            scale, shift = rng.uniform(0.7, 1.3, 2), rng.uniform(-0.1, 0.1, 2)
            want = album_pixel.apply_he_stain_augmentation(img, matrix, scale, shift, augment_background)
            got = he_stain_uint8(img, matrix, scale, shift, augment_background)
            assert got.dtype == np.uint8 and got.shape == img.shape
            diff = np.abs(got.astype(int) - want)
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_fast_hestain_draws_like_hestain_and_falls_back_for_float():
    img = he_like_image()
    fast, ref = (cls(method="random_preset", intensity_shift_range=(-0.1, 0.1), p=1.0)
                 for cls in (FastHEStain, A.HEStain))
    for t in (fast, ref):
        t.set_random_state(np.random.default_rng(3), random.Random(3))
    for _ in range(5):   # the same preset, scales and shifts drawn: the same images within one level
        diff = np.abs(fast(image=img)["image"].astype(int) - ref(image=img)["image"])
        assert diff.max() <= 1
    f32 = img.astype(np.float32) / 255
    params = {"stain_matrix": album_pixel.STAIN_MATRICES["standard"], "scale_factors": np.array([1.2, 0.8]),
              "shift_values": np.array([0.05, -0.05])}
    np.testing.assert_array_equal(fast.apply(f32, **params), ref.apply(f32, **params))


def test_fast_rot90_equals_numpy():
    img = he_like_image(30, 44)
    t = FastRandomRotate90(p=1.0)
    for factor in range(4):
        out = t.apply(img, factor=factor)
        assert np.array_equal(out, np.rot90(img, factor)) and out.flags.c_contiguous


def test_fast_normalize_equals_normalize(image):
    fast, ref = FastNormalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    a, b = fast(image=image)["image"], ref(image=image)["image"]
    assert a.dtype == np.float32 and a.shape == image.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    f32 = image.astype(np.float32)      # not uint8: the original's own code path
    np.testing.assert_array_equal(fast(image=f32)["image"], ref(image=f32)["image"])


def test_fast_ops_same_views_as_reference_for_the_same_seed(image):
    fast, ref = histology_views(image_size=48), histology_views(image_size=48, fast_ops=False)
    names = [type(t).__name__ for t in fast.transforms]
    assert names[3:5] == ["FastRandomRotate90", "FastHEStain"] and "FastNormalize" in names
    names = [type(t).__name__ for t in ref.transforms]
    assert names[3:5] == ["RandomRotate90", "HEStain"] and "Normalize" in names
    seed_views(fast, 9)
    seed_views(ref, 9)
    level = 1 / (255 * max(IMAGENET_STD))     # one grey level in normalised units
    for _ in range(20):
        a, b = fast(image=image)["image"], ref(image=image)["image"]
        # same crop, flips, stain, jitter and blur draws; one-level differences can grow a little
        # through the jitter (contrast uses the image mean) and the blur
        assert (a - b).abs().max() <= 4 * level + 1e-6
        assert (a - b).abs().mean() <= 0.05 * level


def _view_stats(transform, image, seed: int, n: int) -> np.ndarray:
    """Per view: RGB means and stds, then the haematoxylin / eosin / DAB means (skimage rgb2hed)."""
    from skimage.color import rgb2hed

    seed_views(transform, seed)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    rows = []
    for _ in range(n):
        rgb = (transform(image=image)["image"] * std + mean).clamp(0, 1)
        hed = rgb2hed(rgb.permute(1, 2, 0).numpy())
        rows.append(np.concatenate([rgb.mean((1, 2)).numpy(), rgb.std((1, 2)).numpy(), hed.mean((0, 1))]))
    return np.array(rows)


def test_fast_ops_same_distribution_as_reference_with_independent_seeds(image):
    # different seeds: only the distributions can agree; compare the mean and spread over many views
    n = 150
    fast = _view_stats(histology_views(image_size=32), image, seed=1, n=n)
    ref = _view_stats(histology_views(image_size=32, fast_ops=False), image, seed=2, n=n)
    se = np.sqrt((fast.var(0) + ref.var(0)) / n)     # standard error of the difference of the means
    assert np.all(np.abs(fast.mean(0) - ref.mean(0)) < 4 * se + 1e-6)
    assert np.all(np.abs(np.log(fast.std(0) + 1e-9) - np.log(ref.std(0) + 1e-9)) < 0.35)


@pytest.mark.parametrize("recipe", ["natural", "histology"])
def test_uint8_views_normalised_on_device_equal_the_recipes_normalisation(recipe, image):
    """normalize=False: the same draws as uint8 (3, S, S); normalize_views gives the float views."""
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    as_float = build_views(recipe, image_size=32, mean=mean, std=std)
    as_uint8 = build_views(recipe, image_size=32, mean=mean, std=std, normalize=False)
    seed_views(as_float, 7)
    seed_views(as_uint8, 7)
    for _ in range(3):
        f, u = as_float(image=image)["image"], as_uint8(image=image)["image"]
        assert u.dtype == torch.uint8 and u.shape == f.shape == (3, 32, 32)
        torch.testing.assert_close(normalize_views(u[None], mean, std)[0], f, atol=1e-5, rtol=0)
    assert torch.equal(normalize_views(f[None], mean, std), f[None])  # float views pass through
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        normalize_views(u)
