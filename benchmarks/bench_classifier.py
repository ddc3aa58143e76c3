"""What the classifier stage's SVMs cost: liblinear against the batched torch solver.

    python benchmarks/bench_classifier.py [--classes 20 50 100 200] [--max-seconds 1800]
                                          [--threads N] [--device auto]
                                          [--solvers torch liblinear]

Synthetic part codes shaped like the pipeline's: 30 training and 10 test images per
class, D = classes x 24 parts x 5 cells, nonnegative part responses (gamma noise whose
mean is class-dependent, a class's own parts firing more), square-rooted and
L2-normalised per image. For each number of classes, ``fit_svm`` (5-fold CV over C in
0.01 ... 100, the grid extended at an edge, then the final fit) with each solver, and
their agreement: the same C, the largest relative L2 difference of a class's
``[coef, intercept]``, the fraction of equal test predictions, the largest difference of
a CV accuracy. liblinear runs in a child process (``n_jobs`` loky workers) stopped after
``--max-seconds``: then its time is reported as "> X s". ``--solvers torch`` skips
liblinear (its row says "not run"), for sizes where it would take hours.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from partlearn.classify import CVSettings, fit_svm

PARTS, CELLS, TRAIN, TEST = 24, 5, 30, 10


def codes(classes: int, seed: int = 0, signal: float = 0.05):
    """``(x_train, y_train, x_test, y_test)``, float32 codes ``(n, classes * 120)``."""
    rng = np.random.default_rng(seed)
    d = classes * PARTS * CELLS
    y = np.repeat(np.arange(classes), TRAIN + TEST)
    owner = np.tile(np.repeat(np.arange(classes), PARTS), CELLS)  # cell-major, like the codes
    own = owner[None, :] == np.arange(classes)[:, None]
    mean = 1.0 + signal * rng.gamma(2.0, 1.0, (classes, d)) * (1.0 + 2.0 * own)
    x = np.empty((len(y), d), np.float32)
    for c in range(classes):  # by class: 200 classes are 8,000 x 24,000
        rows = y == c
        x[rows] = np.sqrt(rng.gamma(2.0, 1.0, (rows.sum(), d)) * mean[c])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    test = np.tile(np.arange(TRAIN + TEST) >= TRAIN, classes)
    return x[~test], y[~test], x[test], y[test]


def _fit(solver: str, classes: int, n_jobs: int, device: str) -> dict:
    x, y, _, _ = codes(classes)
    t0 = time.perf_counter()
    model = fit_svm(x, y, CVSettings(solver=solver, device=device, n_jobs=n_jobs))
    return {"coef": model.coef, "intercept": model.intercept, "C": model.C, "cv": model.cv,
            "seconds": time.perf_counter() - t0}


def _liblinear(classes: int, n_jobs: int, max_seconds: float) -> dict | None:
    """liblinear's fit in a child process (its own session, so that its loky workers
    stop with it), or None past ``max_seconds``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.npz"
        proc = subprocess.Popen([sys.executable, __file__, "--worker", str(classes),
                                 "--n-jobs", str(n_jobs), "--out", str(out)],
                                start_new_session=True)
        try:
            proc.wait(timeout=max_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
        if proc.returncode:
            raise RuntimeError(f"the liblinear worker failed ({proc.returncode})")
        with np.load(out) as f:
            return {"coef": f["coef"], "intercept": f["intercept"], "C": float(f["C"]),
                    "seconds": float(f["seconds"]),
                    "cv": dict(zip(f["cv_C"].tolist(), f["cv_accuracy"].tolist()))}


def _agreement(a: dict, b: dict, x_test) -> tuple[float, float, float]:
    wa = np.c_[a["coef"], a["intercept"]].astype(np.float64)
    wb = np.c_[b["coef"], b["intercept"]].astype(np.float64)
    rel = float((np.linalg.norm(wa - wb, axis=1) / np.linalg.norm(wa, axis=1)).max())
    same = float(((x_test @ wa[:, :-1].T + wa[:, -1]).argmax(1)
                  == (x_test @ wb[:, :-1].T + wb[:, -1]).argmax(1)).mean())
    cv = max(abs(a["cv"][c] - b["cv"][c]) for c in set(a["cv"]) & set(b["cv"]))
    return rel, same, float(cv)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[20, 50, 100, 200])
    ap.add_argument("--max-seconds", type=float, default=1800.0, help="liblinear's time box")
    ap.add_argument("--n-jobs", type=int, default=-1, help="liblinear's processes")
    ap.add_argument("--threads", type=int, default=None, help="torch's CPU threads")
    ap.add_argument("--device", default="auto", help="the torch solver's")
    ap.add_argument("--solvers", nargs="+", choices=("torch", "liblinear"),
                    default=["torch", "liblinear"], help="liblinear is skipped without it")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        m = _fit("liblinear", args.worker, args.n_jobs, "cpu")
        np.savez(args.out, coef=m["coef"], intercept=m["intercept"], C=m["C"],
                 seconds=m["seconds"], cv_C=list(m["cv"]), cv_accuracy=list(m["cv"].values()))
        return 0
    import torch

    from partlearn._device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} torch thread(s)")
    print(f"# {cpu_model()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; torch solver on {where} (float64); liblinear: "
          f"n_jobs={args.n_jobs}, time box {args.max_seconds:g} s")
    print("# fit_svm: 5-fold CV over C in 0.01, 0.1, 1, 10, 100 (extended at an edge) "
          "+ the final fit; 30 training, 10 test images per class\n")
    print("| classes | train x D | liblinear | torch | speed-up | C (liblinear / torch) "
          "| max rel. coef diff | equal test predictions | max CV accuracy diff |")
    print("|---:|---|---:|---:|---:|---|---:|---:|---:|")
    for k in args.classes:
        x, y, xt, _ = codes(k)
        t = _fit("torch", k, args.n_jobs, str(device))
        lib = (_liblinear(k, args.n_jobs, args.max_seconds) if "liblinear" in args.solvers
               else "not run")
        if lib == "not run":
            row = ["not run", f"{t['seconds']:.1f} s", "—", f"— / {t['C']:g}", "—", "—", "—"]
        elif lib is None:
            row = [f"> {args.max_seconds:g} s", f"{t['seconds']:.1f} s",
                   f"> {args.max_seconds / t['seconds']:.0f}x", f"— / {t['C']:g}", "—", "—", "—"]
        else:
            rel, same, cv = _agreement(lib, t, xt)
            row = [f"{lib['seconds']:.1f} s", f"{t['seconds']:.1f} s",
                   f"{lib['seconds'] / t['seconds']:.1f}x", f"{lib['C']:g} / {t['C']:g}",
                   f"{rel:.1e}", f"{same:.4f}", f"{cv:.4f}"]
        print(f"| {k} | {len(y):,} x {x.shape[1]:,} | " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
