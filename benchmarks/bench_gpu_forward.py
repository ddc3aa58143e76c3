"""A backbone's forward on the GPU per precision: the first call at a new input shape, then steady.

    python benchmarks/bench_gpu_forward.py [--backbones efficientnet_lite0 resnet50]

For float32, float16 autocast, bfloat16 autocast and float16 with cuDNN off,
a batch of 8 random images at 4 input shapes never seen before by that
precision (448-608 px high, 576-704 px wide, as CUB's images come): the time
of the first forward at each shape (what the features stage pays for every
distinct batch shape) and the best of 5 after it. ResNet-50 runs with random
weights (the time does not depend on them). Needs CUDA.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from partlearn.features import create_backbone

PRECISIONS = [("float32", None, True), ("float16", torch.float16, True),
              ("bfloat16", torch.bfloat16, True), ("float16, cuDNN off", torch.float16, False)]


def forward_ms(net, x, dtype) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float16,
                                         enabled=dtype is not None):
        net(x)
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "resnet50"])
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu_forward: no CUDA device", file=sys.stderr)
        return 1
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for name in args.backbones:
        net = create_backbone(name, "DEFAULT" if name.startswith("efficientnet") else "none")
        net = net.model.cuda()
        for k, (label, dtype, cudnn) in enumerate(PRECISIONS):
            torch.backends.cudnn.enabled = cudnn
            first, steady = [], []
            for h, w in [(448, 576), (448, 608), (480, 640), (512, 704)]:
                x = torch.rand(8, 3, h + 32 * k, w, device="cuda")  # new to this precision
                first.append(forward_ms(net, x, dtype))
                steady.append(min(forward_ms(net, x, dtype) for _ in range(5)))
            torch.backends.cudnn.enabled = True
            print(f"{name} {label}: first call per shape "
                  f"{', '.join(f'{v:.0f}' for v in first)} ms; steady "
                  f"{', '.join(f'{v:.1f}' for v in steady)} ms per batch of 8", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
