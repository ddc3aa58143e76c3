"""DP-Net training speed per device, on region features of the CUB c001-020 run's shape.

    python benchmarks/bench_dpnet.py --devices cpu cuda --amp

Synthetic float16 region features shaped like the cached EfficientNet-Lite0
features of ``pipelines/cub200.toml`` (600 training images of 20 classes,
``--regions`` per image, D = 1280): every image holds clutter regions shared by
all classes plus noisy copies of a few prototypes of its class, so the task is
learnable and the held-out accuracy says whether a device trains as well as
another. For every device (and, on CUDA, with and without ``--amp``'s
bfloat16 autocast) DP-Net trains with ``DPNetConfig``'s settings for
``--epochs`` epochs without early stopping or refitting, the variant's
constraints on (``--variant``); printed: seconds per epoch, the ratio to the
first device, and the held-out accuracy and loss after the last epoch. ``--streamed``:
on the CPU also without the host copy of the normalised rows (``HOST_COPY_BYTES`` 0:
every image read and normalised again each epoch, as before 2026-12-02).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import numpy as np
import torch

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from partlearn.dpnet import _model as _dpnet_model
from partlearn.config import DPNetConfig
from partlearn.dpnet import settings, train_dpnet


def cub_like(n_images: int, n_classes: int, regions: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    clutter = rng.standard_normal((512, dim)).astype(np.float32)
    protos = rng.standard_normal((n_classes, 4, dim)).astype(np.float32)
    X, y = [], []
    for i in range(n_images):
        c = i % n_classes
        r = int(rng.integers(regions * 3 // 4, regions + 1))
        x = clutter[rng.integers(len(clutter), size=r)]
        x[rng.choice(r, 4, replace=False)] = protos[c]
        X.append((x + 1.5 * rng.standard_normal(x.shape, dtype=np.float32)).astype(np.float16))
        y.append(c)
    return X, np.asarray(y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", nargs="+", default=["cpu"])
    ap.add_argument("--amp", action="store_true", help="on CUDA also time bfloat16 autocast")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--regions", type=int, default=276, help="at most, per image")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--variant", default="wo", help="constraints, e.g. cs+orth+assign")
    ap.add_argument("--streamed", action="store_true",
                    help="on the CPU also time without the host copy of the rows")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    X, y = cub_like(args.images, args.classes, args.regions, args.dim)
    kw = dict(settings(DPNetConfig(), args.variant), epochs=args.epochs,
              patience=args.epochs, refit=False)
    runs = [(d, False, False) for d in args.devices]
    runs += [(d, True, False) for d in args.devices if args.amp and d.startswith("cuda")]
    runs += [(d, False, True) for d in args.devices if args.streamed and d == "cpu"]
    print(f"# DP-Net, {args.images} images x <= {args.regions} regions x D={args.dim}, "
          f"{args.classes} classes, variant {args.variant}, {args.epochs} epochs")
    print(f"# CPU: {cpu_model()}, {torch.get_num_threads()} torch threads; "
          f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}; "
          f"torch {torch.__version__}, Python {platform.python_version()}")
    print("| device | s/epoch | vs first | held-out accuracy | held-out loss |")
    print("|---|---|---|---|---|")
    for device in {d for d, *_ in runs if d.startswith("cuda")}:  # CUDA's start-up, untimed
        train_dpnet(X[:2 * args.classes], y[:2 * args.classes], **dict(kw, epochs=1),
                    device=device, progress=False)
    rows = []
    for device, amp, streamed in runs:
        budget = _dpnet_model.HOST_COPY_BYTES
        _dpnet_model.HOST_COPY_BYTES = 0 if streamed else budget
        try:
            m = train_dpnet(X, y, **kw, device=device, amp=amp, progress=False)
        finally:
            _dpnet_model.HOST_COPY_BYTES = budget
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        row = {"device": device + (" + bf16 autocast" if amp else "")
               + (", streamed (no host copy)" if streamed else ""),
               "seconds_per_epoch": m["train_seconds"] / m["epochs_run"],
               "val_accuracy": float(m["history"]["val_accuracy"][-1]),
               "val_loss": float(m["history"]["val_loss"][-1])}
        rows.append(row)
        print(f"| {row['device']} | {row['seconds_per_epoch']:.3f} | "
              f"{rows[0]['seconds_per_epoch'] / row['seconds_per_epoch']:.1f}x | "
              f"{100 * row['val_accuracy']:.1f}% | {row['val_loss']:.3f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
