import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from partlearn._arrays import signed_sqrt_l2
from partlearn._validation import ConfigError, DataError
from partlearn.features import apply_pca, extract_features, fit_pca
from partlearn.features._extract import _batches, _resized_size, _signed_sqrt_l2_torch
from partlearn.features._roi import _pool_regions


def load_rgb(path):
    with Image.open(path) as img:
        return img.convert("RGB")


def smooth_noise(width, height, seed):
    rng = np.random.default_rng(seed)
    small = (rng.random((height // 8 + 1, width // 8 + 1, 3)) * 255).astype(np.uint8)
    return np.array(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Five PNGs of two sizes, interleaved, and their mirrored copies."""
    root = tmp_path_factory.mktemp("images")
    sizes = [(96, 64), (64, 80), (96, 64), (96, 64), (64, 80)]
    paths, mirrored = [], []
    for i, (w, h) in enumerate(sizes):
        arr = smooth_noise(w, h, seed=i)
        paths.append(str(root / f"img{i}.png"))
        mirrored.append(str(root / f"img{i}_mirror.png"))
        Image.fromarray(arr).save(paths[-1])
        Image.fromarray(arr[:, ::-1]).save(mirrored[-1])
    return paths, mirrored, np.array(sizes)


def some_boxes(w, h, seed, n=6):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0, w * 0.6, n)
    y0 = rng.uniform(0, h * 0.6, n)
    x1 = np.minimum(x0 + rng.uniform(8, w * 0.6, n), w)
    y1 = np.minimum(y0 + rng.uniform(8, h * 0.6, n), h)
    return np.stack([x0, y0, x1, y1], 1).astype(np.float32)


def run(paths, boxes, flips, sizes, backbone, **kw):
    kw = {"device": "cpu", "workers": 0, "short_side": 64, **kw}
    return list(extract_features(paths, boxes, flips, sizes, backbone, load_image=load_rgb, **kw))


def test_signed_sqrt_l2_properties():
    x = np.array([[4.0, -9.0, 0.0], [0.0, 0.0, 0.0], [1e-8, 2.0, -2.0]], dtype=np.float64)
    y = signed_sqrt_l2(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y[[0, 2]], axis=1), 1.0, rtol=1e-6)
    assert not y[1].any()  # zero rows stay zero
    assert np.array_equal(np.sign(y), np.sign(x))
    np.testing.assert_allclose(y[0], np.array([2.0, -3.0, 0.0]) / np.sqrt(13), rtol=1e-6)
    # squares are |x| normalised to sum 1
    np.testing.assert_allclose(y[2] ** 2, np.abs(x[2]) / np.abs(x[2]).sum(), atol=1e-7)
    cols = signed_sqrt_l2(x.T, axis=0)
    np.testing.assert_allclose(cols, y.T, atol=1e-7)
    on_device = _signed_sqrt_l2_torch(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(on_device, y, atol=1e-7)


def test_resized_size_and_batches():
    assert _resized_size(500, 333, 448) == (673, 448)
    assert _resized_size(333, 500, 448) == (448, 673)
    assert _resized_size(448, 448, 448) == (448, 448)
    assert _resized_size(500, 333, 448, 32) == (672, 448)  # 672.7 -> 21 * 32
    assert _resized_size(333, 500, 448, 32) == (448, 672)
    assert _resized_size(500, 360, 448, 32) == (608, 448)  # 622.2 -> 19 * 32 (nearest)
    assert _resized_size(100, 10, 448, 32) == (4480, 448)
    targets = [(1, 2), (1, 2), (1, 2), (3, 4), (1, 2), (1, 2)]
    assert _batches(targets, 2) == [[0, 1], [2], [3], [4, 5]]
    assert _batches(targets, 8) == [[0, 1, 2], [3], [4, 5]]


@pytest.mark.parametrize("stride", [32, 16])
def test_mean_pooling_is_roi_align_mean_and_max_is_roi_align_max(stride):
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(3, 8, 7, 11, generator=g)
    k = 300
    x0 = torch.rand(k, generator=g) * 400 - 30
    y0 = torch.rand(k, generator=g) * 260 - 30
    wh = torch.rand(k, 2, generator=g) * 250 + 0.01
    rois = torch.stack([x0, y0, x0 + wh[:, 0], y0 + wh[:, 1]], 1)
    edges = torch.tensor([[0, 0, 11 * stride, 7 * stride], [0, 0, stride, stride],
                          [10 * stride, 6 * stride, 11 * stride, 7 * stride],
                          [-3 * stride, -3 * stride, -2 * stride, -2 * stride]], dtype=torch.float)
    rois = torch.cat([rois, edges])
    owner = torch.randint(0, 3, (len(rois),), generator=g)
    ref = torchvision.ops.roi_align(fmap, torch.cat([owner[:, None].float(), rois], 1),
                                    output_size=3, spatial_scale=1 / stride, sampling_ratio=2,
                                    aligned=True)
    mean = _pool_regions(fmap, rois, owner, stride, 3, "mean")
    torch.testing.assert_close(mean, ref.mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)
    mx = _pool_regions(fmap, rois, owner, stride, 3, "max")
    torch.testing.assert_close(mx, ref.amax(dim=(2, 3)))


def test_output_shapes_and_order_with_workers(images, resnet18):
    paths, _, sizes = images
    boxes = [some_boxes(w, h, i, n=3 + i) for i, (w, h) in enumerate(sizes)]
    flips = [np.arange(len(b)) % 2 == 0 for b in boxes]
    serial = run(paths, boxes, flips, sizes, resnet18, batch_size=2, with_global_flip=True)
    assert [o[0] for o in serial] == list(range(len(paths)))
    for (i, reg, glob, glob_flip), b in zip(serial, boxes):
        assert reg.shape == (len(b), 512) and reg.dtype == np.float32
        assert glob.shape == (512,) and glob_flip.shape == (512,)
        np.testing.assert_allclose(np.linalg.norm(reg, axis=1), 1.0, rtol=1e-5)
    parallel = run(paths, boxes, flips, sizes, resnet18, batch_size=2, workers=2,
                   with_global_flip=True)
    assert [o[0] for o in parallel] == list(range(len(paths)))
    for a, b in zip(serial, parallel):
        for x, y in zip(a[1:], b[1:]):
            np.testing.assert_array_equal(x, y)
    # batching does not change any image's features
    for i in (0, 4):
        (alone,) = run([paths[i]], [boxes[i]], [flips[i]], sizes[[i]], resnet18,
                       with_global_flip=True)
        np.testing.assert_allclose(alone[1], serial[i][1], atol=1e-5)
        np.testing.assert_allclose(alone[2], serial[i][2], atol=1e-5)


def test_full_image_region_approximates_global(images, lite0, resnet18):
    paths, _, sizes = images
    w, h = sizes[0]
    boxes = np.array([[0, 0, w, h], [0, 0, w / 4, h / 4]], np.float32)
    for backbone in (lite0, resnet18):
        ((_, reg, glob, _),) = run(paths[:1], [boxes], [np.zeros(2, bool)], sizes[:1],
                                   backbone, short_side=128, postprocess=False)
        cos = reg @ glob / np.linalg.norm(reg, axis=1) / np.linalg.norm(glob)
        assert cos[0] > 0.99
        assert cos[0] > cos[1]
        np.testing.assert_allclose(reg[0], glob, rtol=0.25, atol=0.05 * np.abs(glob).max())


@pytest.mark.parametrize("short_side", [64, 80])  # 64: no resize; 80: resized
def test_flipped_region_equals_region_of_mirrored_file(images, resnet18, short_side):
    paths, mirrored, sizes = images
    w, h = sizes[0]
    boxes = some_boxes(w, h, seed=1, n=5)
    mirror_boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    ((_, flipped, glob, glob_flip),) = run(paths[:1], [boxes], [np.ones(5, bool)], sizes[:1],
                                           resnet18, short_side=short_side,
                                           with_global_flip=True)
    ((_, direct, mglob, _),) = run(mirrored[:1], [mirror_boxes], [np.zeros(5, bool)],
                                   sizes[:1], resnet18, short_side=short_side)
    np.testing.assert_allclose(flipped, direct, atol=1e-5)
    np.testing.assert_allclose(glob_flip, mglob, atol=1e-5)
    assert not np.allclose(glob, glob_flip, atol=1e-3)


def test_unflipped_and_flipped_regions_keep_their_order(images, resnet18):
    paths, _, sizes = images
    w, h = sizes[0]
    boxes = some_boxes(w, h, seed=2, n=6)
    flips = np.array([True, False, False, True, False, True])
    ((_, mixed, _, _),) = run(paths[:1], [boxes], [flips], sizes[:1], resnet18)
    for value in (False, True):
        sel = flips == value
        ((_, part, _, _),) = run(paths[:1], [boxes[sel]], [flips[sel]], sizes[:1], resnet18)
        np.testing.assert_allclose(mixed[sel], part, atol=1e-6)


def quadrant_image(path):
    """Four clearly different textures, one per 112 px quadrant of a 224 px image."""
    yy, xx = np.mgrid[0:112, 0:112]
    arr = np.zeros((224, 224, 3), np.uint8)
    arr[:112, :112] = smooth_noise(112, 112, seed=0)
    arr[:112, 112:] = ((np.sin(xx / 3.0) > 0)[..., None] * np.array([255, 50, 50]))
    arr[112:, :112] = (((xx // 8 + yy // 8) % 2)[..., None] * np.array([40, 200, 90]))
    r = np.hypot(xx - 56, yy - 56)
    arr[112:, 112:] = ((np.cos(r / 2.0) > 0)[..., None] * np.array([30, 60, 250]))
    Image.fromarray(arr.astype(np.uint8)).save(path)


def test_roi_features_correlate_with_crop_features(tmp_path, lite0):
    path = str(tmp_path / "quadrants.png")
    quadrant_image(path)
    boxes = np.array([[0, 0, 112, 112], [112, 0, 224, 112], [0, 112, 112, 224],
                      [112, 112, 224, 224]], np.float32)
    out = {}
    for mode in ("roi", "crop"):
        ((_, reg, glob, _),) = run([path], [boxes], [np.zeros(4, bool)], [(224, 224)], lite0,
                                   mode=mode, short_side=448, crop_size=224)
        out[mode] = reg, glob
    np.testing.assert_array_equal(out["roi"][1], out["crop"][1])  # same full-image pass
    cos = out["roi"][0] @ out["crop"][0].T  # rows are unit vectors
    same = np.diag(cos)
    other = np.where(np.eye(4, dtype=bool), -np.inf, cos).max(axis=1)
    assert (same > other + 0.15).all() and (same > 0.8).all(), cos


def test_crop_mode_flips_use_the_mirrored_image(images, resnet18):
    paths, mirrored, sizes = images
    w, h = sizes[0]
    boxes = some_boxes(w, h, seed=3, n=3)
    mirror_boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    ((_, flipped, _, _),) = run(paths[:1], [boxes], [np.ones(3, bool)], sizes[:1], resnet18,
                                mode="crop", crop_size=32)
    ((_, direct, _, _),) = run(mirrored[:1], [mirror_boxes], [np.zeros(3, bool)], sizes[:1],
                               resnet18, mode="crop", crop_size=32)
    np.testing.assert_allclose(flipped, direct, atol=1e-5)


def test_max_pooling_postprocess_and_empty_regions(images, resnet18):
    paths, _, sizes = images
    boxes = [some_boxes(*sizes[0], seed=4, n=4), np.zeros((0, 4), np.float32)]
    flips = [np.zeros(4, bool), np.zeros(0, bool)]
    raw = run(paths[:2], boxes, flips, sizes[:2], resnet18, postprocess=False)
    post = run(paths[:2], boxes, flips, sizes[:2], resnet18)
    np.testing.assert_allclose(post[0][1], signed_sqrt_l2(raw[0][1]), atol=1e-6)
    np.testing.assert_allclose(post[0][2], signed_sqrt_l2(raw[0][2]), atol=1e-6)
    assert post[1][1].shape == (0, 512) and post[1][3] is None
    mx = run(paths[:2], boxes, flips, sizes[:2], resnet18, postprocess=False,
             roi_pooling="max")
    assert mx[0][1].shape == (4, 512)
    assert (mx[0][1] >= raw[0][1] - 1e-6).all()  # max over bins >= mean over bins
    crop = run(paths[:2], boxes, flips, sizes[:2], resnet18, mode="crop", crop_size=32)
    assert crop[0][1].shape == (4, 512) and crop[1][1].shape == (0, 512)


def test_input_errors(images, resnet18):
    paths, _, sizes = images
    box = [np.array([[0, 0, 10, 10]], np.float32)]
    flip = [np.zeros(1, bool)]
    with pytest.raises(ConfigError, match="one entry per image"):  # raised at the call
        extract_features(paths[:2], box, flip, sizes[:2], resnet18, load_image=load_rgb)
    with pytest.raises(DataError, match="box 0"):
        run(paths[:1], [np.array([[0, 0, 200, 10]], np.float32)], flip, sizes[:1], resnet18)
    with pytest.raises(DataError, match=r"\(R, 4\)"):
        run(paths[:1], [np.zeros((1, 3), np.float32)], flip, sizes[:1], resnet18)
    with pytest.raises(ConfigError, match="mode="):
        run(paths[:1], box, flip, sizes[:1], resnet18, mode="grid")
    with pytest.raises(ConfigError, match="roi_pooling="):
        run(paths[:1], box, flip, sizes[:1], resnet18, roi_pooling="median")
    wrong = np.array([[50, 50]])
    with pytest.raises(DataError, match="sizes\\[0\\] says 50x50"):
        run(paths[:1], box, flip, wrong, resnet18)


def test_load_errors_from_workers_are_clean(images, resnet18):
    paths, _, sizes = images

    def broken(path):
        raise DataError(f"{path}: cannot identify image file")

    box = [np.array([[0, 0, 10, 10]], np.float32)] * 2
    flip = [np.zeros(1, bool)] * 2
    with pytest.raises(DataError) as e:
        list(extract_features(paths[:2], box, flip, sizes[:2], resnet18, load_image=broken,
                              device="cpu", workers=1))
    assert str(e.value) == f"{paths[0]}: cannot identify image file"


def test_pca_fit_apply():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 20)) @ rng.normal(size=(20, 20)) + 3.0
    pca = fit_pca(x, 8)
    assert set(pca) == {"mean", "components", "explained_variance"}
    assert pca["mean"].shape == (20,) and pca["components"].shape == (8, 20)
    assert pca["explained_variance"].shape == (8,)
    assert all(v.dtype == np.float32 for v in pca.values())
    np.testing.assert_allclose(pca["components"] @ pca["components"].T, np.eye(8), atol=1e-5)
    assert (np.diff(pca["explained_variance"]) <= 0).all()
    y = apply_pca(x, pca)
    assert y.shape == (500, 8) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
    white = apply_pca(x, pca, whiten=True, normalize=False)
    np.testing.assert_allclose(white.var(axis=0, ddof=1), 1.0, rtol=1e-3)
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=1e-4)
    raw = apply_pca(x, pca, normalize=False)
    np.testing.assert_allclose(raw.var(axis=0, ddof=1), pca["explained_variance"], rtol=1e-3)
    whitened = apply_pca(x, pca, whiten=True)
    np.testing.assert_allclose(np.linalg.norm(whitened, axis=1), 1.0, rtol=1e-5)
    # wide data (fewer rows than dimensions) goes through the other solver
    assert fit_pca(x[:10], 5)["components"].shape == (5, 20)
    with pytest.raises(ConfigError, match="n_components"):
        fit_pca(x, 30)
    with pytest.raises(DataError, match="dimension 20"):
        apply_pca(x[:, :5], pca)


def test_pooled_retrieval_descriptors(images, resnet18):
    """SPoC is the (normalised) mean map, GeM is it at p = 1 (ReLU maps) and tends to MAC
    as p grows; rmac holds every region's max-pooled vector; all unit-norm."""
    paths, _, sizes = images
    w, h = sizes[0]
    boxes = np.array([[0, 0, w, h], [0, 0, w / 2, h / 2]], np.float32)
    flips = [np.zeros(2, bool)]
    every = ("mac", "gem", "spoc", "rmac")
    ((_, _, glob, _, low),) = run(paths[:1], [boxes], flips, sizes[:1], resnet18,
                                  postprocess=False, descriptors=every, gem_p=1.0)
    ((*_, high),) = run(paths[:1], [boxes], flips, sizes[:1], resnet18, descriptors=every,
                        gem_p=60.0)
    np.testing.assert_allclose(low["spoc"], glob / np.linalg.norm(glob), atol=1e-5)
    np.testing.assert_allclose(low["gem"], low["spoc"], atol=1e-4)
    assert high["gem"] @ high["mac"] > 0.99 > low["gem"] @ low["mac"]
    assert low["rmac"].shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(low["rmac"], axis=1), 1, atol=1e-5)
    assert low["rmac"][0] @ low["mac"] > low["rmac"][1] @ low["mac"]  # the whole image
    with pytest.raises(ConfigError, match="rmac"):
        run(paths[:1], [boxes], flips, sizes[:1], resnet18, mode="crop", descriptors=every)


def test_heap_kept_once_and_never_against_the_users_malloc_settings(monkeypatch):
    """glibc's thresholds are set at most once per process, and not where the user set
    them (the extraction itself is covered by every features test)."""
    import ctypes

    from partlearn import _device

    calls = []

    class Libc:
        def mallopt(self, option, value):
            calls.append((option, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    monkeypatch.setattr(_device, "_HEAP_KEPT", False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not _device.keep_heap_for_cpu_activations() and not calls
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert _device.keep_heap_for_cpu_activations()
    assert calls == [(-3, 1 << 30), (-1, 1 << 30)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert not _device.keep_heap_for_cpu_activations() and len(calls) == 2


def test_noise_is_seeded_per_image_whatever_the_order(images, resnet18):
    """``noise``: each image's perturbation comes from its own path's seed, so a shard
    extracted in another order or batch gives the same rows; without noise, the clean
    rows."""
    paths, _, sizes = images
    boxes = [some_boxes(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    flips = [np.zeros(len(b), bool) for b in boxes]
    clean = run(paths, boxes, flips, sizes, resnet18)
    noisy = run(paths, boxes, flips, sizes, resnet18, noise=0.2)
    order = [4, 2, 0, 3, 1]
    shuffled = run([paths[i] for i in order], [boxes[i] for i in order],
                   [flips[i] for i in order], sizes[order], resnet18, noise=0.2, batch_size=1)
    for k, i in enumerate(order):
        np.testing.assert_allclose(shuffled[k][1], noisy[i][1], atol=1e-5)
    for c, n in zip(clean, noisy):
        assert not np.allclose(c[1], n[1], atol=1e-4)  # perturbed ...
        assert (c[1] * n[1]).sum(axis=1).min() > 0.5  # ... but still the same image
    with pytest.raises(ConfigError, match="features.noise"):
        run(paths, boxes, flips, sizes, resnet18, noise=0.2, mode="crop")
