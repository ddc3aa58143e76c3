"""Choose DP-Net's training settings on the training split, never the test split.

    python benchmarks/select_dpnet_by_cv.py pipelines/cub200.toml \\
        --try dpnet.lr=0.03 --try "dpnet.lr=0.003;dpnet.epochs=60" --variant wo
    python benchmarks/select_dpnet_by_cv.py pipelines/cub200.toml --variant wo \\
        --try "variant=orth;dpnet.lambda_orth=1" --try "variant=cs;dpnet.lambda_cs=1"

For the config as it is and each ``--try`` (``--set`` overrides, ``;``-separated),
trains DP-Net (``--variant``'s constraints) ``--repeats`` times, each on a
different stratified split of the *training* images (``--val-fraction`` held
out, seeds 100, 101, ...), for all ``dpnet.epochs`` epochs without early
stopping or refitting, and prints, at the epoch where the held-out
cross-entropy averaged over the repeats is lowest (the epoch the trainer's
early stopping looks for), the mean held-out accuracy and loss, and the
seconds per run. For scale it also prints the global descriptor's SVM (C by
cross-validation within each split's training part, as in the classifier
stage) on the same held-out images. Cached stages are reused; nothing here
touches the test images.

A ``--try`` may start with ``variant=NAME;`` to train other constraints than
``--variant``'s. For every setting it also measures, on each split's held-out
images with the model of the chosen epoch, what the constraints act on: the share
of held-out predictions that differ from the first setting's (the config), part
diversity (mean |cos| between two parts; the orthogonality term lowers it), the
assignment entropy of the held-out regions' softmax over the parts (nats; the
assignment term lowers it) and the class specificity CS(V) (the mean weight a class
gives to other classes' parts; the CS term lowers it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from partlearn.classify import CVSettings, fit_svm
from partlearn.config import load_config
from partlearn.dpnet._train import _holdout
from partlearn.dpnet import settings, train_dpnet
from partlearn import Pipeline


def constraint_measures(model: dict, images, cfg) -> dict:
    """What DP-Net's constraints act on, for a trained ``model`` on ``images`` (held out):
    ``pred`` (each image's predicted class index), ``diversity`` (mean |cos| between two
    parts of ``U``), ``entropy`` (mean over the images' regions of the entropy of their
    softmax over the parts at ``cfg.assign_temperature``, nats) and ``cs`` (CS(V))."""
    import torch

    from partlearn.dpnet import assignment, class_specificity, predict_scores

    U = np.asarray(model["U"], np.float32)
    u = U / np.linalg.norm(U, axis=1, keepdims=True)
    cos = np.abs(u @ u.T)
    P = len(u)
    diversity = float((cos.sum() - np.trace(cos)) / (P * (P - 1)))
    ent, n = 0.0, 0
    for x in images:
        x = np.asarray(x, np.float32)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        S = torch.from_numpy(u @ x.T)  # (P, R): as the model's similarities
        ent += float(assignment(S, temperature=cfg.assign_temperature)) * len(x)
        n += len(x)
    cs = float(class_specificity(torch.from_numpy(np.asarray(model["V"], np.float32)),
                                 model["part_class"]))
    return {"pred": predict_scores(model, images).argmax(axis=1), "diversity": diversity,
            "entropy": ent / max(n, 1), "cs": cs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--try", dest="variants", action="append", default=[],
                    help="overrides of one setting, ';'-separated")
    ap.add_argument("--set", action="append", default=[], help="overrides of every setting")
    ap.add_argument("--variant", default="wo", help="constraints, e.g. cs+orth+assign")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--val-fraction", type=float, default=0.33)
    ap.add_argument("--out", default="runs/select_dpnet")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")

    base = load_config(args.config, args.set)
    pipe = Pipeline(base)
    pipe.run(until="features", out=Path(args.out))
    feats = pipe.load(pipe.features_stage)
    m = pipe.kept_manifest
    train = np.flatnonzero(m.split == "train")
    images = [feats.image(i) for i in train]
    labels = m.label[train]
    glob = feats.global_features(base.encoding.flip_average)[train]

    seeds = [100 + r for r in range(args.repeats)]
    classes, y = np.unique(labels, return_inverse=True)
    svm_acc = []
    for seed in seeds:  # the splits train_dpnet makes for these seeds
        tr, va = _holdout(y, classes, args.val_fraction, seed)
        svm = fit_svm(glob[tr], labels[tr],
                      CVSettings(Cs=base.classifier.C, n_jobs=base.n_jobs))
        svm_acc.append(float((svm.predict(glob[va]) == labels[va]).mean()))
    print(f"global SVM on the same held-out images: {100 * np.mean(svm_acc):.2f}% "
          f"(per split {', '.join(f'{100 * a:.1f}' for a in svm_acc)})", flush=True)

    rows, reference = [], {}
    for setting in [""] + args.variants:
        pieces = [v.strip() for v in setting.split(";") if v.strip()]
        variant = next((v.partition("=")[2] for v in pieces if v.startswith("variant=")),
                       args.variant)
        cfg = load_config(args.config, args.set + [v for v in pieces
                                                   if not v.startswith("variant=")])
        curves = {"acc": [], "loss": []}
        seconds, measured = [], []
        for seed in seeds:
            model = train_dpnet(images, labels, **dict(
                settings(cfg.dpnet, variant), val_fraction=args.val_fraction,
                patience=cfg.dpnet.epochs, refit=False), seed=seed, progress=False)
            curves["acc"].append(model["history"]["val_accuracy"])
            curves["loss"].append(model["history"]["val_loss"])
            seconds.append(model["train_seconds"])
            _, va = _holdout(y, classes, args.val_fraction, seed)
            m = constraint_measures(model, [images[i] for i in va], cfg.dpnet)
            pred = m.pop("pred")
            reference.setdefault(seed, pred)  # the first setting's predictions
            m["changed"] = float(np.mean(pred != reference[seed]))
            measured.append(m)
        acc, loss = np.mean(curves["acc"], axis=0), np.mean(curves["loss"], axis=0)
        best = int(np.argmin(loss))
        means = {k: float(np.mean([m[k] for m in measured])) for k in measured[0] if k != "pred"}
        row = {"setting": f"[{variant}] {setting or '(config)'}", "best_epoch": best,
               "val_accuracy": float(acc[best]), "val_loss": float(loss[best]),
               "max_val_accuracy": float(acc.max()), "seconds": float(np.mean(seconds)),
               "accuracy_curve": acc.round(4).tolist(), "loss_curve": loss.round(4).tolist(),
               **means}
        rows.append(row)
        print(f"{row['setting']:48s} held-out {100 * acc[best]:.2f}% (loss {loss[best]:.3f}, "
              f"epoch {best + 1} of {len(loss)}; best accuracy {100 * acc.max():.2f}%), "
              f"{row['seconds']:.0f} s per run; changed {100 * means['changed']:.1f}%, "
              f"|cos| {means['diversity']:.3f}, entropy {means['entropy']:.3f}, "
              f"CS {means['cs']:.4f}", flush=True)
    best = min(rows, key=lambda r: r["val_loss"])
    print(f"lowest held-out loss: {best['setting']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"global_svm": svm_acc, "settings": rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
