"""A projection of a full run's wall time, storage and peak memory per worker, from
measured per-image and per-class costs, for CUB-200, MIT-67 and ImageNet-1k on 1, 8
and 64 workers.

    python benchmarks/project_scale.py [--inputs benchmarks/scale_inputs.json]
                                       [--workers 1 8 64] [--parts-per-class 12]

Nothing is run: the costs come from ``scale_inputs.json`` (each with where it was
measured; BENCHMARKS.md "Beyond one machine") and the stages' work is counted. Each
cost is measured at an anchor (a real set) and carried to another size by the growth
exponents that ``benchmarks/bench_scaling.py`` measured (``exp_*``: the log-log slope of
the stage's time in the images per class and in the classes), not by assumed
linearity: ``t = t_anchor x (size / size_anchor) ** exponent``. An exponent is the
steeper of the bench's two slopes (over all scales, over the last two), floored at what
counting the work gives (``FLOOR``: 1 per image, the encoding 2 in the classes, a part
task 0 in the classes past its negatives' cap): a smaller slope there says the fixed
costs still dominated at the bench's sizes (at most 288 images), not that the work
per image shrinks, and is not carried to a million images.

- **features**: ``anchor images / (workers x images/s per worker) x (images / anchor
  images) ** exp_features_images``: a CPU worker is one core (the 2-core figure
  halved), a GPU worker one GPU (two figures: the measured end-to-end rate of a small
  set, start included, and the steady forward, the bound a decode-fast loader would
  approach). Storage: bytes per image x images.
- **parts**: one task per class, ``t = a + b x positives`` (``a``, ``b`` fitted to the
  per-class times of two real sets), times ``(classes / anchor classes) **
  (exp_parts_classes - 1)`` (a task's own growth with the classes: its negatives, capped
  at ``parts.n_negative_images``); ``ceil(classes / workers)`` rounds of the mean
  class (the longest class bounds it when workers >= classes). Peak memory of a
  worker: the process baseline + the negative pool's regions in float32 + one class's
  positives in float32 + the background model (D x D).
- **encoding**: region x part products, ``c x images x parts`` at the anchor (``c``
  from a real run), carried by ``(images / anchor) ** exp_encoding_images x (parts /
  anchor parts) ** (exp_encoding_classes - exp_encoding_images)`` (the classes axis
  grows both); images split over workers.
- **classifier**: the part code's one-vs-rest SVMs by the batched torch solver, whose
  cost grew as ``(classes / 20) ** e`` from the measured 20-class time with 30 images
  per class; scaled by ``(images per class / 30) ** exp_classifier_images``. It solves
  every fold, class and C as one problem in one process, so workers do not shorten it
  (a GPU would). Memory: the code matrix ``n x (classes x parts x cells)`` float32 when
  it fits ``classifier.memory_mb``, else the budget (the solver streams it in row
  blocks).

Read the output as orders of magnitude: it says which stage dominates and where a
setting has to change (for ImageNet, the part code's size), not a promise.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: the least growth counting the work allows (see the module)
FLOOR = {"exp_features_images": 1.0, "exp_parts_classes": 1.0, "exp_encoding_images": 1.0,
         "exp_encoding_classes": 2.0, "exp_classifier_images": 1.0}

DATASETS = {  # train, test images, classes (official splits)
    "CUB-200": (5_994, 5_794, 200),
    "MIT-67": (5_360, 1_340, 67),
    "ImageNet-1k": (1_281_167, 50_000, 1_000),
}


def human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1024 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def project(m: dict, name: str, workers: int, parts_per_class: int) -> dict:
    train, test, classes = DATASETS[name]
    n = train + test
    per_class = train / classes
    dim, regions = m["dim"], m["regions_per_image"]
    out = {"dataset": name, "workers": workers}
    # features: the anchor's time, carried by the measured growth in the images
    n_a = m["features_anchor_images"]
    grow = (n / n_a) ** m["exp_features_images"]
    out["features_cpu"] = n_a / (workers * m["features_cpu_img_s_per_core"]) * grow
    out["features_gpu"] = n_a / (workers * m["features_gpu_img_s_measured"]) * grow
    out["features_gpu_bound"] = n_a / (workers * m["features_gpu_img_s_steady"]) * grow
    out["storage"] = n * m["feature_bytes_per_image"]
    # parts: a class is one task
    a, b = m["parts_class_s_intercept"], m["parts_class_s_per_positive"]
    t_class = (a + b * per_class) * (classes / m["parts_anchor_classes"]) ** (
        m["exp_parts_classes"] - 1)
    out["parts"] = math.ceil(classes / workers) * t_class
    pool = m["negative_pool_images"] * regions * dim * 4
    positives = per_class * regions * dim * 4
    out["parts_memory"] = m["worker_baseline_bytes"] + pool + positives + 2 * dim * dim * 4
    # encoding
    n_parts = classes * parts_per_class
    n_a, p_a = m["encoding_anchor_images"], m["encoding_anchor_parts"]
    e_img, e_cls = m["exp_encoding_images"], m["exp_encoding_classes"]
    out["encoding"] = (m["encoding_s_per_image_part"] * n_a * p_a * (n / n_a) ** e_img
                       * (n_parts / p_a) ** (e_cls - e_img) / workers)
    # classifier (the part code's SVMs)
    code_dim = n_parts * m["cells"]
    ref_classes, ref_s, e = m["svm_ref_classes"], m["svm_ref_seconds"], m["svm_exponent"]
    scale = (classes / ref_classes) ** e * (per_class / m["svm_ref_images_per_class"]) ** m[
        "exp_classifier_images"]
    out["classifier"] = ref_s * scale  # one process, whatever the workers
    matrix = train * code_dim * 4
    budget = m["classifier_memory_mb"] * 2**20
    out["classifier_memory"] = m["worker_baseline_bytes"] + min(matrix, budget)
    out["code_matrix"] = matrix
    out["total_cpu"] = out["features_cpu"] + out["parts"] + out["encoding"] + out["classifier"]
    out["total_gpu"] = out["features_gpu"] + out["parts"] + out["encoding"] + out["classifier"]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", default=str(HERE / "scale_inputs.json"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--parts-per-class", type=int, default=12)
    args = ap.parse_args(argv)
    measured = json.loads(Path(args.inputs).read_text())
    m = {k: max(v["value"], FLOOR.get(k, v["value"])) for k, v in measured.items()}
    print("Measured inputs:")
    for k, v in measured.items():
        used = f"; used: {m[k]:g} (the floor)" if m[k] != v["value"] else ""
        print(f"- {k} = {v['value']:g}{used} ({v['source']})")
    print(f"\n{args.parts_per_class} parts per class, {m['cells']} cells; CPU workers are one "
          "core each; GPU: one GPU per worker (measured rate; steady-forward bound)\n")
    print("| dataset | workers | features CPU | features GPU (bound) | parts | encoding "
          "| classifier | total, CPU features | total, GPU features | feature store "
          "| peak / parts worker | part code (train) | peak / SVM worker |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in DATASETS:
        for w in args.workers:
            r = project(m, name, w, args.parts_per_class)
            print(f"| {name} | {w} | {human(r['features_cpu'])} | {human(r['features_gpu'])} "
                  f"({human(r['features_gpu_bound'])}) | {human(r['parts'])} | "
                  f"{human(r['encoding'])} | {human(r['classifier'])} | "
                  f"{human(r['total_cpu'])} | {human(r['total_gpu'])} | {size(r['storage'])} | "
                  f"{size(r['parts_memory'])} | {size(r['code_matrix'])} | "
                  f"{size(r['classifier_memory'])} |")


if __name__ == "__main__":
    main()
