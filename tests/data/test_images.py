"""load_image / probe_image on small images drawn here: bad files, conversions, EXIF rotation."""

import hashlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from partlearn.data import BadImageError, load_image, probe_image
from partlearn._validation import DataError


def _noise(h=24, w=32, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, im, fmt=None, **kw):
    im.save(path, fmt, **kw)
    return path


def _cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# --------------------------------------------------------------------------- bad files

def test_missing_file(tmp_path):
    with pytest.raises(BadImageError) as e:
        load_image(tmp_path / "nope.jpg")
    assert e.value.reason == "missing"
    assert e.value.path == str(tmp_path / "nope.jpg")
    assert isinstance(e.value, DataError)
    assert str(tmp_path / "nope.jpg") in str(e.value)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImageError, match="zero bytes") as e:
        probe_image(tmp_path / "empty.jpg")
    assert e.value.reason == "zero bytes"


def test_corrupt_bytes(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image" * 50)
    with pytest.raises(BadImageError) as e:
        load_image(tmp_path / "junk.jpg")
    assert e.value.reason == "truncated or corrupt: cannot identify image file"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path, fmt):
    path = _cut_in_half(_save(tmp_path / f"cut.{fmt.lower()}", Image.fromarray(_noise(64, 80)),
                              fmt))
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    for fn in (load_image, probe_image):
        with pytest.raises(BadImageError) as e:
            fn(path)
        assert e.value.reason.startswith("truncated or corrupt: image file is truncated")
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(BadImageError, match="is a directory"):
        load_image(tmp_path)


def test_bad_image_error_pickles():
    import pickle

    e = pickle.loads(pickle.dumps(BadImageError("a.jpg", "zero bytes")))
    assert (e.path, e.reason, str(e)) == ("a.jpg", "zero bytes", "a.jpg: zero bytes")


# --------------------------------------------------------------------------- conversions

def test_rgb_is_returned_unchanged(tmp_path):
    a = _noise()
    path = _save(tmp_path / "rgb.png", Image.fromarray(a))
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (32, 24)
    np.testing.assert_array_equal(np.asarray(im), a)
    info = probe_image(path)
    assert (info.mode, info.width, info.height, info.orientation) == ("RGB", 32, 24, 1)
    assert info.md5 == hashlib.md5(path.read_bytes()).hexdigest()
    assert not info.converted and not info.rotated


def test_cmyk_to_rgb(tmp_path):
    cmyk = np.zeros((8, 10, 4), np.uint8)
    cmyk[:, :5, 0] = 255  # cyan on the left, white on the right
    path = _save(tmp_path / "cmyk.tif", Image.fromarray(cmyk, "CMYK"))
    im = load_image(path)
    assert im.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(im)[0, 0], [0, 255, 255])
    np.testing.assert_array_equal(np.asarray(im)[0, 9], [255, 255, 255])
    assert probe_image(path).mode == "CMYK"
    # a CMYK JPEG, the usual case in the wild
    jpg = _save(tmp_path / "cmyk.jpg", Image.fromarray(cmyk, "CMYK"), quality=95)
    im = load_image(jpg)
    assert im.mode == "RGB" and im.size == (10, 8)
    assert probe_image(jpg).mode == "CMYK"


def test_palette_with_transparency_to_rgb(tmp_path):
    p = Image.new("P", (6, 4))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.paste(1, (0, 0, 3, 4))  # left half colour 1 (blue), right half colour 0 (red)
    path = _save(tmp_path / "pal.png", p, transparency=0)
    assert Image.open(path).info.get("transparency") == 0
    im = load_image(path)
    assert im.mode == "RGB"
    a = np.asarray(im)
    np.testing.assert_array_equal(a[0, 0], [0, 0, 255])
    np.testing.assert_array_equal(a[0, 5], [255, 0, 0])  # transparent: its colour, alpha dropped
    assert probe_image(path).mode == "P"
    # and a plain palette GIF
    gif = _save(tmp_path / "pal.gif", p)
    np.testing.assert_array_equal(np.asarray(load_image(gif))[0, 0], [0, 0, 255])


def test_16bit_grayscale_scaled_not_clipped(tmp_path):
    values = np.array([[0, 0x00FF, 0x0100, 0x1234], [0x7FFF, 0x8000, 0xFF00, 0xFFFF]], np.uint16)
    path = _save(tmp_path / "g16.png", Image.fromarray(values))
    assert Image.open(path).mode == "I;16"
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (4, 2)
    a = np.asarray(im)
    np.testing.assert_array_equal(a[..., 0], values >> 8)  # 0x00FF -> 0, not clipped to 255
    np.testing.assert_array_equal(a[..., 0], a[..., 2])
    assert probe_image(path).mode == "I;16"


def test_32bit_integer_mode_I(tmp_path):
    values = np.array([[0, 300, 0x8000, 65535]], np.int32)
    path = _save(tmp_path / "i32.tif", Image.fromarray(values))
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(path))[..., 1], values >> 8)
    big = _save(tmp_path / "big.tif", Image.fromarray(np.array([[0, 70000]], np.int32)))
    with pytest.raises(BadImageError, match="outside|0..65535"):
        probe_image(big)


def test_float_mode_is_unsupported(tmp_path):
    path = _save(tmp_path / "f.tif", Image.fromarray(np.ones((4, 4), np.float32)))
    with pytest.raises(BadImageError, match="unsupported mode F"):
        load_image(path)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "1"])
def test_other_modes_to_rgb(tmp_path, mode):
    a = _noise(6, 8)
    src = Image.fromarray(a).convert(mode)
    path = _save(tmp_path / f"{mode}.png", src)
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (8, 6)
    np.testing.assert_array_equal(np.asarray(im), np.asarray(src.convert("RGB")))
    if mode in ("L", "LA"):
        np.testing.assert_array_equal(np.asarray(im)[..., 0], np.asarray(src.convert("L")))
    assert probe_image(path).mode == mode


# --------------------------------------------------------------------------- EXIF orientation

def _with_orientation(path, a, orientation, fmt):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(path, fmt, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation,expected", [
    (1, lambda a: a),
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),  # stored rotated 90 counter-clockwise: turn it clockwise
    (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1]),
])
def test_exif_orientation_applied(tmp_path, orientation, expected):
    a = _noise(20, 40)  # 40 wide, 20 high
    path = _with_orientation(tmp_path / "o.png", a, orientation, "PNG")
    im = load_image(path)
    np.testing.assert_array_equal(np.asarray(im), expected(a))
    info = probe_image(path)
    assert (info.width, info.height) == im.size
    assert info.orientation == orientation and info.rotated == (orientation != 1)


def test_exif_rotated_jpeg_size(tmp_path):
    path = _with_orientation(tmp_path / "o.jpg", _noise(20, 40), 6, "JPEG")
    assert Image.open(path).size == (40, 20)
    assert load_image(path).size == (20, 40)
    info = probe_image(path)
    assert (info.width, info.height, info.orientation) == (20, 40, 6)


def test_invalid_orientation_value_is_ignored(tmp_path):
    path = _with_orientation(tmp_path / "o.png", _noise(20, 40), 9, "PNG")
    assert load_image(path).size == (40, 20)
    assert probe_image(path).orientation == 1


@pytest.mark.parametrize("factor", [1.5, 3])  # Pillow's warning band, and beyond its error
def test_decompression_bomb_sized_images_are_bad_images(tmp_path, monkeypatch, factor):
    from PIL import Image

    from partlearn.data import BadImageError, load_image, probe_image

    path = tmp_path / "big.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(1600 / factor))
    for fn in (probe_image, load_image):
        with pytest.raises(BadImageError, match="too large, a decompression bomb"):
            fn(path)
