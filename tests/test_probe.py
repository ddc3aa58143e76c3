"""A probe of bad inputs and faults, one table row each, across every command.

Each row: an id saying what is done, the files it needs (``make``, given a fresh
folder ``Env``), the command line, the expected exit code, and a phrase the single
error line must hold. Every row also checks that nothing printed a traceback: the
command runs in this process through ``main`` (an exception escaping it is a
traceback), or, for the signal rows, as ``python -m partlearn`` in a subprocess.
No row runs the pipeline past the dataset stage, but for the model rows, which share one
tiny exported model (``Env.model``, made once): the whole table takes well under two
minutes on the tiny dataset.

Rows marked ``(CONFIG)`` test a config value's range, checked by the settings'
declarations in ``partlearn/config.py``.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from partlearn.cli import main
from partlearn.config import dump_toml, load_config

ROOT = Path(__file__).resolve().parents[1]
INTERRUPTED = "partlearn: interrupted; finished shards are kept and a re-run resumes"
@dataclass
class Env:
    """A row's folder (``top``) and the module's tiny dataset."""
    top: Path
    tiny: Path

    @property
    def data(self) -> Path:
        return self.tiny / "data"

    @property
    def config(self) -> Path:
        return self.tiny / "p.toml"

    def write(self, rel: str, text, mode="w") -> Path:
        path = self.top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def csv_data(self, rows: str, header="path,label,split") -> Path:
        """A copy of the tiny images with ``labels.csv`` holding ``rows``."""
        root = self.top / "csvdata"
        if not root.exists():
            shutil.copytree(self.data, root)
        (root / "labels.csv").write_text(header + "\n" + rows)
        return root

    def cub(self, boxes: str | None = None, classes="1 001.Cat\n2 002.dog\n") -> Path:
        """The tiny images as a CUB layout (image ids 1..10)."""
        root = self.top / "cub"
        if root.exists():
            shutil.rmtree(root)
        files = sorted(p.relative_to(self.data).as_posix() for p in self.data.rglob("*.png"))
        lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": [],
                 "bounding_boxes.txt": []}
        for i, rel in enumerate(files, 1):
            split, cls, name = rel.split("/")
            dest = root / "images" / cls / f"{split}_{name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.data / rel, dest)
            lines["images.txt"].append(f"{i} {cls}/{split}_{name}")
            lines["image_class_labels.txt"].append(f"{i} {1 if cls == 'Cat' else 2}")
            lines["train_test_split.txt"].append(f"{i} {int(split == 'train')}")
            lines["bounding_boxes.txt"].append(f"{i} 1 1 20 20")
        for name, rows in lines.items():
            (root / name).write_text("\n".join(rows) + "\n")
        (root / "classes.txt").write_text(classes)
        if boxes is not None:
            (root / "bounding_boxes.txt").write_text(boxes)
        return root

    def fake_run(self, name="run", **change) -> Path:
        """A finished run directory made by hand (results.json, predictions.csv,
        config.toml), its test images those of the tiny dataset."""
        from partlearn.evaluation import metrics

        run = self.top / name
        run.mkdir(parents=True, exist_ok=True)
        tests = [f"test/{c}/{i}.png" for c in ("Cat", "dog") for i in (0, 1)]
        y = np.array([0, 0, 1, 1])
        methods = {m: metrics(y, y, 2) | {"C": 1.0, "C_at_edge": False, "cv_accuracy": 1.0,
                                          "dim": 4, "train_seconds": 0.1}
                   for m in ("global", "parts")}
        summary = {"name": "fake", "dataset": str(self.data), "backbone": "resnet18",
                   "classes": ["Cat", "dog"], "methods": methods, "comparisons": [],
                   "timings": {}, "stages": {}, "peak_memory_mb": 1} | change
        (run / "results.json").write_text(json.dumps(summary))
        (run / "predictions.csv").write_text("path,label,global,parts\n" + "".join(
            f"{p},{c},{c},{c}\n" for p, c in zip(tests, ["Cat", "Cat", "dog", "dog"])))
        cfg = load_config(None, [f"data.root={self.data}", "data.format=folders",
                                 f"cache_dir={self.top / 'cache'}"])
        (run / "config.toml").write_text(dump_toml(cfg))
        return run

    def model(self, name="model") -> Path:
        """A copy of the tiny model (``global`` only, exported once per module)."""
        src = self.tiny / "model"
        if not src.exists():
            run_dir = self.tiny / "model_run"
            args = run(self, 'classifier.methods=["global"]', "dpnet.variants=[]", until=None,
                       cache=self.tiny / "model_cache", out=run_dir)
            assert main(["-q", *map(str, args)]) == 0
            assert main(["-q", "export", str(run_dir), str(src)]) == 0
        shutil.copytree(src, self.top / name)
        return self.top / name

    def image(self) -> Path:
        return self.data / "test" / "Cat" / "0.png"

    def other_weights(self) -> Path:
        """A resnet18 state dict other than the tiny run's."""
        import torch
        import torchvision

        torch.manual_seed(1)
        path = self.top / "other.pth"
        torch.save(torchvision.models.resnet18().state_dict(), path)
        return path

    def external(self, rows: str, header="image_id,predicted_label") -> Path:
        return self.write("ext.csv", header + "\n" + rows)


def base(env: Env, *extra) -> list[str]:
    """--set pairs of a run on the tiny dataset, stopped after the dataset stage."""
    pairs = [f"data.root={env.data}", "data.format=folders", "data.min_train_per_class=1",
             "backbone.name=resnet18", f"backbone.weights={env.tiny / 'r18.pth'}",
             "features.short_side=64", "features.workers=0", "features.device=cpu",
             "regions.scales=[0.5, 0.8]", "parts.n_parts=2", "encoding.device=cpu",
             'dpnet.variants=["wo"]', "dpnet.seeds=[0]", "dpnet.device=cpu", "n_jobs=1",
             *extra]
    return [x for p in pairs for x in ("--set", p)]


def run(env: Env, *extra, until="dataset", config=None, cache=None, out=None) -> list[str]:
    return (["run", str(config or env.config), *base(env, *extra),
             "--cache-dir", str(cache or env.top / "cache"), "--out", str(out or env.top / "out")]
            + (["--until", until] if until else []))


def tune(env, *search, extra=(), sets=()) -> list[str]:
    """``partlearn tune`` on the tiny dataset, with ``--search`` of each of ``search``; every
    row fails before a trial runs (the run directory is not made)."""
    return (["tune", str(env.config), *base(env, *sets), "--cache-dir", str(env.top / "cache"),
             "--out", str(env.top / "out")]
            + [x for s in search for x in ("--search", s)] + list(extra))


def status(env, *extra, config=None, cache=None):
    return ["status", str(config or env.config), *base(env, *extra),
            "--cache-dir", str(cache or env.top / "cache")]


def audit(env, *extra, out=None):
    return (["datasets", "audit", str(env.config), *base(env, *extra)]
            + (["--out", str(out)] if out else []))


def csv_run(env, rows, *extra, header="path,label,split", until="dataset"):
    root = env.csv_data(rows, header)
    return run(env, f"data.root={root}", "data.format=csv", *extra, until=until)


NL = "\n"
FAR = "".join(f"{i} 500 500 5 5\n" for i in range(1, 11))  # boxes outside 64x48 images


def ext(e, rows, name="x", header="image_id,predicted_label"):
    """compare a fake run with an external predictions file holding ``rows``."""
    return ["compare", str(e.fake_run()), "--external", f"{name}={e.external(rows, header)}"]


def cub_run(e, boxes=None, classes="1 001.Cat\n2 002.dog\n", *extra):
    return run(e, f"data.root={e.cub(boxes, classes)}", "data.format=cub", *extra)


TRAIN = "".join(f"train/{c}/{i}.png,{c},train\n" for c in ("Cat", "dog") for i in range(3))
TEST = "".join(f"test/{c}/{i}.png,{c},test\n" for c in ("Cat", "dog") for i in range(2))


# ---- faults injected by patching (in this process)

def full_disk_numpy(env, monkeypatch):
    """numpy's short write: an OSError without errno, from the dataset stage's save."""
    def short(*a, **k):
        raise OSError("5 requested and 0 written")
    monkeypatch.setattr(np, "save", short)


def full_disk_run_dir(env, monkeypatch):
    import partlearn.runner as runner

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(env.top / "out/config.toml"))
    monkeypatch.setattr(runner, "dump_toml", full)


def read_only_cache(env, monkeypatch):
    """A read-only, empty cache folder (EROFS on every file it would open)."""
    import partlearn.cache as cache_mod

    def ro(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(a[0]) if a else None)
    monkeypatch.setattr(cache_mod, "open", ro, raising=False)


def permission_denied_out(env, monkeypatch):
    from pathlib import Path as P

    real = P.mkdir

    def mkdir(self, *a, **k):
        if self == env.top / "out":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *a, **k)
    monkeypatch.setattr(P, "mkdir", mkdir)


# ---- the table: (id, argv(env) [, files made first], exit code, phrase)
# ``argv`` may create the files it needs (through ``env``) before returning the command.

ROWS = [
    # -- run: the config file
    ("run: config missing", lambda e: run(e, config=e.top / "nope.toml"), 2, "does not exist"),
    ("run: config is a folder", lambda e: run(e, config=e.top), 2, "is a folder"),
    ("run: config not UTF-8", lambda e: run(e, config=e.write("c.toml", b"name = '\xff\xfe'\n")),
     2, "is not UTF-8 text"),
    ("run: config not TOML", lambda e: run(e, config=e.write("c.toml", "name = [\n")), 2,
     "is not valid TOML"),
    ("run: config unknown section", lambda e: run(e, config=e.write("c.toml", "[bogus]\nx=1\n")),
     2, "bogus"),
    ("run: config key typo", lambda e: run(e, config=e.write("c.toml", "[parts]\nn_part=3\n")),
     2, "n_part"),
    ("run: config value of the wrong type",
     lambda e: run(e, config=e.write("c.toml", '[classifier]\ncv_folds="many"\n')), 2,
     "classifier.cv_folds"),
    ("run: --set without =", lambda e: run(e) + ["--set", "parts.n_parts"], 2,
     "should look like section.key=value"),
    ("run: --set unknown key", lambda e: run(e, "features.mdoe=roi"), 2, "did you mean 'mode'"),
    ("run: --set unparsable value", lambda e: run(e, "parts.n_parts=[1,"), 2, "parts.n_parts"),
    ("run: unknown data.format", lambda e: run(e, "data.format=xml"), 2, "data.format"),
    ("run: unknown classifier method", lambda e: run(e, 'classifier.methods=["prats"]'), 2,
     "prats"),
    ("run: unknown backbone", lambda e: run(e, "backbone.name=vgg99", until=None), 2,
     "vgg99"),
    ("run: unknown device", lambda e: run(e) + ["--device", "tpu"], 2, "tpu"),
    # -- run: command-line paths
    ("run: --cache-dir is a file", lambda e: run(e, cache=e.write("f", "x")), 2,
     "--cache-dir"),
    ("run: --out is a file", lambda e: run(e, out=e.write("f", "x")), 2, "--out"),
    ("run: --out under a file", lambda e: run(e, out=e.write("f", "x") / "sub"), 1,
     "expected a folder"),
    ("run: --until unknown stage", lambda e: run(e, until="bogus"), 2, "invalid choice"),
    ("run: --force unknown stage", lambda e: run(e) + ["--force", "bogus"], 2, "invalid choice"),
    ("run: --until a stage this pipeline skips", lambda e: run(e, until="pca"), 2,
     "--until 'pca'"),
    ("no command", lambda e: [], 2, "required"),
    ("unknown command", lambda e: ["bogus"], 2, "invalid choice"),
    ("run: --cache-dir under a file", lambda e: run(e, cache=e.write("f", "x") / "c"), 1,
     "expected a folder"),
    ("run: weights file not a state dict",
     lambda e: run(e, f"backbone.weights={e.write('w.pth', 'junk')}", until="features"), 1,
     "could not be read as a state dict"),
    ("run: weights file missing",
     lambda e: run(e, f"backbone.weights={e.top / 'nope.pth'}", until="features"), 2,
     "does not exist"),
    ("run: --device cuda without a GPU",
     lambda e: run(e, "backbone.weights=none", until="features") + ["--device", "cuda"], 1,
     "CUDA is not available"),
    ("run: a name leaving runs/", lambda e: run(e, 'name="../../evil"')[:-4] + [
        "--until", "dataset"], 2, "give a plain name"),
    # -- run: data.root
    ("run: data.root missing", lambda e: run(e, f"data.root={e.top / 'nope'}"), 1,
     "does not exist"),
    ("run: data.root is a file", lambda e: run(e, f"data.root={e.write('f', 'x')}"), 1,
     "is not a folder"),
    ("run: data.root empty, format auto",
     lambda e: (e.top / "empty").mkdir() or run(e, f"data.root={e.top / 'empty'}",
                                                "data.format=auto"), 1, "cannot tell the format"),
    ("run: folders without test/",
     lambda e: (e.top / "d" / "train" / "a").mkdir(parents=True) or run(
         e, f"data.root={e.top / 'd'}"), 1, "test is missing"),
    ("run: folders with no images",
     lambda e: [(e.top / "d" / s).mkdir(parents=True) for s in ("train", "test")] and run(
         e, f"data.root={e.top / 'd'}"), 1, "lists no images"),
    # -- run: CSV datasets
    ("csv: header only", lambda e: csv_run(e, ""), 1, "lists no images"),
    ("csv: missing column", lambda e: csv_run(e, TRAIN, header="path,label"), 1,
     "lacks column(s) split"),
    ("csv: bad split", lambda e: csv_run(e, TRAIN + "test/Cat/0.png,Cat,Test\n"), 1,
     "did you mean 'test'"),
    ("csv: absolute path", lambda e: csv_run(e, TRAIN + "/etc/passwd,Cat,test\n"), 1,
     "is absolute"),
    ("csv: path leaving data.root", lambda e: csv_run(e, TRAIN + "../../x.png,Cat,test\n"), 1,
     "leads outside data.root"),
    ("csv: duplicate path", lambda e: csv_run(e, TRAIN + TRAIN.splitlines()[0] + "\n"), 1,
     "is already listed on line 2"),
    ("csv: empty label", lambda e: csv_run(e, TRAIN + "test/Cat/0.png,,test\n"), 1,
     "empty label"),
    ("csv: too many fields", lambda e: csv_run(e, TRAIN + "test/Cat/0.png,Cat,test,x\n"), 1,
     "4 fields, expected 3"),
    ("csv: bad md5", lambda e: csv_run(e, "train/Cat/0.png,Cat,train,xyz\n",
                                       header="path,label,split,md5"), 1, "md5 'xyz'"),
    ("csv: not UTF-8", lambda e: (e.csv_data("") / "labels.csv").write_bytes(
        b"path,label,split\n\xff\xfe,a,train\n") and run(
        e, f"data.root={e.top / 'csvdata'}", "data.format=csv"), 1, "not readable as CSV"),
    ("csv: unclosed quote", lambda e: csv_run(e, TRAIN + '"test/Cat/0.png,Cat,test\n'), 1,
     "fields, expected 3"),
    ("csv: a listed path that is a folder",
     lambda e: csv_run(e, TRAIN + TEST + "test/Cat,Cat,test\n"), 1, "bad image(s)"),
    ("csv: image file missing", lambda e: csv_run(e, TRAIN + TEST + "test/Cat/9.png,Cat,test\n"),
     1, "9.png"),
    ("csv: image not an image", lambda e: (e.csv_data("") / "train/Cat/junk.png").write_text(
        "junk") and csv_run(e, TRAIN + TEST + "train/Cat/junk.png,Cat,train\n"), 1,
     "bad image(s)"),
    ("csv: labels differing in case are one class (warned), one class left",
     lambda e: csv_run(e, "train/Cat/0.png,Cat,train\ntrain/dog/0.png,cat,train\n"
                       "test/Cat/0.png,CAT,test\n", until=None), 1, "has 1 class"),
    # -- run: what the later stages need, said after the dataset stage
    ("run: no test images", lambda e: csv_run(e, TRAIN, until=None), 1, "has no test images"),
    ("run: a class without test images",
     lambda e: csv_run(e, TRAIN + "test/Cat/0.png,Cat,test\n", until=None), 1,
     "have no test images: dog"),
    ("run: one class", lambda e: csv_run(
        e, "".join(l + "\n" for l in (TRAIN + TEST).splitlines() if "Cat" in l), until=None),
     1, "has 1 class"),
    ("run: fewer than parts.min_images", lambda e: csv_run(e, TRAIN + TEST, "parts.min_images=4",
                                                           until=None), 1,
     "fewer training images than parts.min_images=4"),
    ("run: exactly parts.min_images, too few for a CV fold",
     lambda e: csv_run(e, TRAIN + TEST, "parts.min_images=3", until=None), 1,
     "fold 1 leaves 2, fewer than parts.min_images=3"),
    # -- run: data.classes and the name rule
    ("run: unknown class", lambda e: run(e, 'data.classes=["cow"]'), 1, "unknown class 'cow'"),
    ("run: class name matching two CUB classes",
     lambda e: cub_run(e, None, "1 001.Owl\n2 002.Owl\n", 'data.classes=["owl"]'), 1,
     "matches 2 classes"),
    # -- run: the transfer class split (the tiny set's 2 classes)
    ("run: unknown novel class",
     lambda e: run(e, 'transfer.novel_classes=["cow"]'), 1,
     "unknown class 'cow'"),
    ("run: too few novel classes for the episodes",
     lambda e: run(e, "transfer.n_novel=1"), 2, "transfer.ways=5 needs at least 5"),
    ("run: both ways of naming novel classes",
     lambda e: run(e, "transfer.n_novel=1", 'transfer.novel_classes=["dog"]'), 2,
     "both name the novel classes"),
    ("run: parts_from names nothing",
     lambda e: run(e, f"transfer.parts_from={e.top / 'nope'}"), 2,
     "no such run directory or pipeline file"),
    ("run: parts_from a folder that is not a run",
     lambda e: run(e, f"transfer.parts_from={e.top}"), 2, "config.toml is missing"),
    ("run: parts_from another feature space",
     lambda e: run(e, f"transfer.parts_from={e.write('src.toml', dump_toml(load_config(None, [f'data.root={e.data}', 'features.short_side=96'])))}"),
     2, "features.short_side = 96 there"),
    # -- run: CUB annotations
    ("cub: zero-area box", lambda e: cub_run(e, "1 1 1 0 5\n"), 1, "a box with no area"),
    ("cub: box outside its image",
     lambda e: cub_run(e, FAR), 1, "has no area inside its"),
    ("cub: NaN in a box", lambda e: cub_run(e, "1 nan 1 5 5\n"), 1, "is not a finite number"),
    ("cub: missing split file",
     lambda e: (e.cub() / "train_test_split.txt").unlink() or run(
         e, f"data.root={e.top / 'cub'}", "data.format=cub"), 1, "train_test_split.txt is missing"),
    ("cub: id not an integer",
     lambda e: (e.cub() / "image_class_labels.txt").write_text("one 1\n") and run(
         e, f"data.root={e.top / 'cub'}", "data.format=cub"), 1, "is not an integer"),
    ("cub: class id not in classes.txt",
     lambda e: cub_run(e, None, "1 001.Cat\n"), 1, "is not in"),
    # -- run: disks and permissions
    ("run: full disk, numpy short write without errno", lambda e: run(e), 1,
     "the disk is full"),
    ("run: full disk writing the run directory", lambda e: run(e), 1,
     "No space left on device;"),
    ("run: read-only empty cache", lambda e: run(e), 1, "writable"),
    ("run: cache folder not permitted (EPERM)", lambda e: run(e), 1,
     "Operation not permitted; "),
    ("run: --out not writable", lambda e: run(e), 1, "Permission denied; it cannot be written"),
    # -- run: config values (CONFIG: the declared range checks)
    ("run: n_jobs=0", lambda e: run(e, "n_jobs=0"), 2, "n_jobs"),
    ("run: features.short_side=0 (CONFIG)", lambda e: run(e, "features.short_side=0"), 2,
     "features.short_side"),
    ("run: parts.n_parts=0 (CONFIG)", lambda e: run(e, "parts.n_parts=0"), 2, "parts.n_parts"),
    ("run: seed=-1 (CONFIG)", lambda e: run(e, "seed=-1"), 2, "seed"),
    ("run: seeds=[0, 0] (CONFIG)", lambda e: run(e, "seeds=[0, 0]"), 2,
     "seeds=[0, 0] lists [0] more than once"),
    ("run: features.shard_size=0 (CONFIG)", lambda e: run(e, "features.shard_size=0"), 2,
     "features.shard_size"),
    ("run: regions.scales=[] (CONFIG)", lambda e: run(e, "regions.scales=[]"), 2,
     "regions.scales"),
    ("run: data.min_side=-5 (CONFIG)", lambda e: run(e, "data.min_side=-5"), 2, "data.min_side"),
    ("run: features.batch_size=0 (CONFIG)", lambda e: run(e, "features.batch_size=0"), 2,
     "features.batch_size"),
    ("run: parts.min_images=0 (CONFIG)", lambda e: run(e, "parts.min_images=0"), 2,
     "parts.min_images"),
    ("run: regions.scales=[-1] (CONFIG)", lambda e: run(e, "regions.scales=[-1]"), 2,
     "regions.scales"),
    ("run: classifier.n_bootstrap=-1 (CONFIG)", lambda e: run(e, "classifier.n_bootstrap=-1"), 2,
     "classifier.n_bootstrap"),
    ("run: classifier.cv_folds=1 (CONFIG)", lambda e: run(e, "classifier.cv_folds=1"), 2,
     "classifier.cv_folds"),
    ("run: classifier.deletion_images=-1 (CONFIG)",
     lambda e: run(e, "classifier.deletion_images=-1"), 2, "classifier.deletion_images"),
    ("run: data.on_bad_image unknown", lambda e: run(e, 'data.on_bad_image="ignore"'), 2,
     "data.on_bad_image"),
    # -- status
    ("status: config missing", lambda e: status(e, config=e.top / "nope.toml"), 2,
     "does not exist"),
    ("status: --cache-dir is a file", lambda e: status(e, cache=e.write("f", "x")), 2,
     "--cache-dir"),
    ("status: data.root missing", lambda e: status(e, f"data.root={e.top / 'nope'}"), 1,
     "does not exist"),
    ("status: data.root not set", lambda e: status(e, 'data.root=""'), 2,
     "data.root is not set"),
    ("status: data.format=cub on a folders dataset", lambda e: status(e, "data.format=cub"), 1,
     "images.txt is missing"),
    # -- compare
    ("compare: no such run", lambda e: ["compare", str(e.top / "nope")], 1,
     "results.json is missing"),
    ("compare: results.json cut short",
     lambda e: (e.fake_run() / "results.json").write_text('{"name": "fa') and [
         "compare", str(e.top / "run")], 1, "does not parse"),
    ("compare: results.json not UTF-8",
     lambda e: (e.fake_run() / "results.json").write_bytes(b"\xff\xfe{}") and [
         "compare", str(e.top / "run")], 1, "does not parse"),
    ("compare: results.json a list",
     lambda e: (e.fake_run() / "results.json").write_text("[]") and [
         "compare", str(e.top / "run")], 1, "holds no run summary"),
    ("compare: results.json without methods",
     lambda e: ["compare", str(e.fake_run(methods={}))], 1, "holds no methods"),
    ("compare: a run that is a file", lambda e: ["compare", str(e.write("f", "x"))], 1,
     "is a file"),
    ("compare: --markdown into a folder that does not exist",
     lambda e: ["compare", str(e.fake_run()), "--markdown", str(e.top / "nope" / "R.md")], 2,
     "/nope/R.md: its folder"),
    ("compare: --markdown a folder", lambda e: ["compare", str(e.fake_run()), "--markdown",
                                                str(e.top)], 2, "is a folder; expected a file"),
    ("compare: --markdown with --out",
     lambda e: ["compare", str(e.fake_run()), "--markdown", "-", "--out", str(e.top)], 2,
     "--markdown writes headlines only"),
    ("compare: predictions.csv empty",
     lambda e: (e.fake_run() / "predictions.csv").write_text("") or [
         "compare", str(e.top / "run")], 1, "damaged or cut short"),
    ("compare: config.toml damaged",
     lambda e: (e.fake_run() / "config.toml").write_text("[[[") and [
         "compare", str(e.top / "run")], 2, "is not valid TOML"),
    ("compare: runs on different datasets",
     lambda e: ["compare", str(e.fake_run("a")), str(e.fake_run("b", dataset="/elsewhere"))], 1,
     "not run on the same dataset"),
    ("compare: one run given twice",
     lambda e: ["compare", str(e.fake_run()), str(e.top / "run")], 1, "is given twice"),
    ("compare: two runs given one NAME",
     lambda e: ["compare", f"A={e.fake_run('a')}", f"A={e.fake_run('b')}"], 1, "both named 'A'"),
    ("compare: runs sharing a folder name stay apart",
     lambda e: ["compare", str(e.fake_run("x/run")), str(e.fake_run("y/run")), "--out",
                str(e.top / "cmp")], 0, "report written"),
    ("compare: --out is a file", lambda e: ["compare", str(e.fake_run()), "--out",
                                            str(e.write("f", "x"))], 2, "--out"),
    ("compare: --external without =", lambda e: ["compare", str(e.fake_run()), "--external",
                                                 "x.csv"], 2, "NAME=FILE.csv"),
    ("compare: --external missing", lambda e: ["compare", str(e.fake_run()), "--external",
                                               f"x={e.top / 'nope.csv'}"], 1, "do not exist"),
    ("compare: --external is a folder", lambda e: ["compare", str(e.fake_run()), "--external",
                                                   f"x={e.top}"], 1, "is a folder"),
    ("compare: --external valid", lambda e: ext(e, "test/Cat/0.png,Cat\ntest/Cat/1.png,Cat\n"
                                                  "test/dog/0.png,dog\ntest/dog/1.png,Cat\n"),
     0, "report written"),
    ("compare: --external duplicate rows",
     lambda e: ext(e, "test/Cat/0.png,Cat\ntest/Cat/0.png,dog\n"), 1,
     "is predicted already on line 2"),
    ("compare: --external unknown image", lambda e: ext(e, "cow.png,Cat\n"), 1,
     "is not a test image"),
    ("compare: --external missing images", lambda e: ext(e, "test/Cat/0.png,Cat\n"), 1,
     "predictions for 1 of the 4 test images"),
    ("compare: --external unknown label", lambda e: ext(e, "test/Cat/0.png,cta\n"), 1,
     "is not one of the 2 classes"),
    ("compare: --external bad header", lambda e: ext(e, "", header="id,label"), 1,
     "are missing; expected image_id,predicted_label"),
    ("compare: --external not UTF-8", lambda e: ["compare", str(e.fake_run()), "--external",
                                                 f"x={e.write('ext.csv', bytes([255, 254, 10]))}"],
     1, "not readable as UTF-8 CSV"),
    ("compare: --external named like a method", lambda e: ext(e, "", name="global"), 1,
     "has a method 'global' already"),
    ("compare: --external short row", lambda e: ext(e, "test/Cat/0.png\n"), 1,
     "expected 2 fields"),
    ("compare: --external valid, BOM, CRLF, labels in another case",
     lambda e: ext(e, "test/Cat/0.png,cat\r\ntest/Cat/1.png,CAT\r\ntest/dog/0.png,Dog\r\n"
                      "test/dog/1.png,dog\r\n", header="\ufeffimage_id,predicted_label"),
     0, "report written"),
    ("compare: a method of results.json damaged",
     lambda e: ["compare", str(e.fake_run(methods={"global": {"top1": 0.5}}))], 1,
     "method 'global' lacks mean_class_accuracy"),
    # -- explain
    ("explain: not a run directory", lambda e: ["explain", str(e.top), str(e.write("i.png", "x"))],
     2, "config.toml is missing"),
    ("explain: image missing", lambda e: ["explain", str(e.fake_run()), str(e.top / "nope.png")],
     2, "does not exist"),
    ("explain: image is a folder", lambda e: ["explain", str(e.fake_run()), str(e.top)], 2,
     "is a folder"),
    ("explain: --top 0", lambda e: ["explain", str(e.fake_run()), str(e.write("i.png", "x")),
                                    "--top", "0"], 2, "--top 0"),
    ("explain: --top not a number", lambda e: ["explain", str(e.fake_run()), "i.png", "--top",
                                               "x"], 2, "invalid int value"),
    ("explain: unknown model", lambda e: ["explain", str(e.fake_run()), "i.png", "--model",
                                          "vit"], 2, "invalid choice"),
    ("explain: config.toml not UTF-8",
     lambda e: (e.fake_run() / "config.toml").write_bytes(b"\xff\xfe") and [
         "explain", str(e.top / "run"), str(e.write("i.png", "x"))], 2, "is not UTF-8 text"),
    ("explain: nothing cached", lambda e: ["explain", str(e.fake_run()),
                                           str(e.data / "test" / "Cat" / "0.png")], 1,
     "is not cached yet"),
    ("explain: --cache-dir is a file", lambda e: ["explain", str(e.fake_run()),
                                                  str(e.write("i.png", "x")), "--cache-dir",
                                                  str(e.write("f", "x"))], 2, "--cache-dir"),
    # -- export and predict (the model rows share one tiny exported model)
    ("export: not a run directory", lambda e: ["export", str(e.top), str(e.top / "m")], 2,
     "config.toml is missing"),
    ("export: nothing cached", lambda e: ["export", str(e.fake_run()), str(e.top / "m")], 1,
     "is not cached yet"),
    ("export: out is a folder of other files",
     lambda e: ["export", str(e.fake_run()), str(e.write("m/notes.txt", "x").parent)], 2,
     "holds other files"),
    ("export: out is a file", lambda e: ["export", str(e.fake_run()), str(e.write("m", "x"))], 2,
     "is a file"),
    ("predict: model folder missing", lambda e: ["predict", str(e.top / "nope"), "i.png"], 2,
     "does not exist"),
    ("predict: not a model folder", lambda e: ["predict", str(e.top), str(e.image())], 2,
     "model.json is missing"),
    ("predict: input missing", lambda e: ["predict", str(e.model()), str(e.top / "nope.png")], 2,
     "nope.png does not exist"),
    ("predict: --out into a folder that does not exist",
     lambda e: ["predict", str(e.model()), str(e.image()), "--out",
                str(e.top / "nope" / "p.csv")], 2, "/nope/p.csv: its folder"),
    ("predict: --out a folder", lambda e: ["predict", str(e.model()), str(e.image()), "--out",
                                           str(e.top)], 2, "is a folder; expected a file"),
    ("predict: --top-k 0", lambda e: ["predict", str(e.model()), str(e.image()), "--top-k", "0"],
     2, "--top-k 0"),
    ("predict: unknown method", lambda e: ["predict", str(e.model()), str(e.image()), "--method",
                                           "prats"], 2, "is not one of the model's"),
    ("predict: model array missing",
     lambda e: (e.model() / "clf_global_coef.npy").unlink() or [
         "predict", str(e.top / "model"), str(e.image())], 1, "clf_global_coef.npy: missing"),
    ("predict: model array damaged",
     lambda e: (e.model() / "clf_global_coef.npy").write_bytes(b"\x93NUMPY garbage") and [
         "predict", str(e.top / "model"), str(e.image())], 1, "clf_global_coef.npy: damaged"),
    ("predict: model.json not JSON",
     lambda e: (e.model() / "model.json").write_text("{") and [
         "predict", str(e.top / "model"), str(e.image())], 1, "model.json: damaged, not JSON"),
    ("predict: other backbone weights",
     lambda e: ["predict", str(e.model()), str(e.image()), "--weights", str(e.other_weights())],
     2, "the model was trained with"),
    ("predict: unknown device", lambda e: ["predict", str(e.model()), str(e.image()), "--device",
                                           "tpu"], 2, "features.device='tpu'"),
    ("predict: unreadable image", lambda e: ["predict", str(e.model()),
                                             str(e.write("i.png", "x"))], 1,
     "i.png: truncated or corrupt"),
    ("predict: --boxes without parts", lambda e: ["predict", str(e.model()), str(e.image()),
                                                  "--boxes"], 2, "--boxes needs"),
    # -- tune: every trial's config checked before any runs
    ("tune: unknown key", lambda e: tune(e, "parts.n_part=2,3"), 2, "did you mean 'n_parts'"),
    ("tune: a value its setting rejects", lambda e: tune(e, "parts.n_parts=2,0"), 2,
     "--search parts.n_parts=0"),
    ("tune: a value of the wrong type", lambda e: tune(e, "encoding.top_k=1,two"), 2,
     "encoding.top_k='two'"),
    ("tune: empty value list", lambda e: tune(e, "parts.n_parts="), 2, "no values"),
    ("tune: an empty value", lambda e: tune(e, "parts.n_parts=2,,3"), 2, "an empty value"),
    ("tune: --search without =", lambda e: tune(e, "parts.n_parts"), 2, "should look like"),
    ("tune: a key given twice", lambda e: tune(e, "parts.n_parts=2", "parts.n_parts=3"), 2,
     "given twice"),
    ("tune: a combination no config allows (CONFIG)",
     lambda e: tune(e, "parts.beta_start=0.5,4", "parts.beta_end=8,2"), 2,
     "the combination parts.beta_start=4; parts.beta_end=2 is not a valid config"),
    ("tune: --rounds 0", lambda e: tune(e, "parts.n_parts=2,3", extra=["--rounds", "0"]), 2,
     "--rounds 0"),
    ("tune: --rounds not a number", lambda e: tune(e, "parts.n_parts=2,3", extra=["--rounds",
                                                                                  "x"]), 2,
     "invalid int value"),
    ("tune: nothing to search", lambda e: tune(e), 2, "nothing to choose from"),
    ("tune: a method the config does not fit",
     lambda e: tune(e, "parts.n_parts=2,3", extra=["--method", "parts[unsup]"]), 2,
     "--method 'parts[unsup]' is not among"),
    ("tune: a searched value dropping the method",
     lambda e: tune(e, 'classifier.methods=["parts"];["global"]'), 2,
     "--method 'parts' is not among"),
    ("tune: --try unknown key", lambda e: tune(e, extra=["--try", "parts.slak=2"]), 2,
     "--try parts.slak=2"),
    ("tune: --out is a file", lambda e: tune(e, "parts.n_parts=2,3")[:-2] + [
        "--out", str(e.write("f", "x")), "--search", "parts.n_parts=2,3"], 2, "--out"),
    ("tune: config missing", lambda e: ["tune", str(e.top / "nope.toml"), "--search",
                                        "parts.n_parts=2,3"], 2, "does not exist"),
    # -- datasets audit
    ("audit: data.root not set", lambda e: audit(e, 'data.root=""'), 2, "data.root is not set"),
    ("audit: data.root missing", lambda e: audit(e, f"data.root={e.top / 'nope'}"), 1,
     "does not exist"),
    ("audit: a path leaving data.root, as run says",
     lambda e: audit(e, f"data.root={e.csv_data(TRAIN + '../../x.png,Cat,test' + NL)}",
                     "data.format=csv"), 1, "leads outside data.root"),
    ("audit: no images", lambda e: audit(e, f"data.root={e.csv_data('')}", "data.format=csv"),
     1, "lists no images"),
    ("audit: --out is a file", lambda e: audit(e, out=e.write("f", "x")), 2, "--out"),
    ("audit: box outside its image, as run says",
     lambda e: audit(e, f"data.root={e.cub(FAR)}", "data.format=cub"), 1,
     "has no area inside its"),
    ("datasets: no subcommand", lambda e: ["datasets"], 2, "required"),
    # -- cache
    ("cache: --cache-dir is a file", lambda e: ["cache", "--cache-dir", str(e.write("f", "x")),
                                                "ls"], 2, "--cache-dir"),
    ("cache: ls of a cache that does not exist", lambda e: ["cache", "--cache-dir",
                                                            str(e.top / "nope"), "ls"], 0,
     "0 entries"),
    ("cache: rm without selectors", lambda e: ["cache", "--cache-dir", str(e.top), "rm"], 2,
     "the following arguments are required"),
    ("cache: gc --keep config missing", lambda e: ["cache", "--cache-dir", str(e.top), "gc",
                                                   "--keep", str(e.top / "nope.toml")], 2,
     "does not exist"),
    ("cache: gc --keep a folder", lambda e: ["cache", "--cache-dir", str(e.top), "gc", "--keep",
                                             str(e.top)], 2, "is a folder"),
    ("cache: unknown subcommand", lambda e: ["cache", "ls2"], 2, "invalid choice"),
]

def not_permitted_cache(env, monkeypatch):
    """EPERM wherever the cache folder is made or locked (a read-only, empty cache)."""
    import partlearn.cache as cache_mod

    real_mkdir, real_open = Path.mkdir, os.open

    def mkdir(self, *a, **k):
        if str(self).startswith(str(env.top / "cache")):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(self))
        return real_mkdir(self, *a, **k)

    def os_open(path, *a, **k):
        if str(path).startswith(str(env.top / "cache")):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))
        return real_open(path, *a, **k)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(cache_mod.os, "open", os_open)


PATCHES = {
    "run: cache folder not permitted (EPERM)": not_permitted_cache,
    "run: full disk, numpy short write without errno": full_disk_numpy,
    "run: full disk writing the run directory": full_disk_run_dir,
    "run: read-only empty cache": read_only_cache,
    "run: --out not writable": permission_denied_out,
}


# the CONFIG rows that fail today for want of a declared range check (the others pass)
def _params():
    for row in ROWS:
        yield pytest.param(*row, id=row[0])


@pytest.fixture(scope="module")
def tiny(tiny):
    (tiny / "p.toml").write_text('name = "tiny"\n')
    return tiny


@pytest.mark.parametrize("what, argv, code, phrase", list(_params()))
def test_probe(tiny, tmp_path, capsys, monkeypatch, what, argv, code, phrase):
    env = Env(tmp_path, tiny)
    args = [str(a) for a in argv(env)]
    if what in PATCHES:
        PATCHES[what](env, monkeypatch)
    monkeypatch.chdir(tmp_path)  # a row that writes by default writes here
    capsys.readouterr()
    try:
        rc = main(["-q", *args])
    except SystemExit as e:  # argparse: usage errors
        rc = e.code
    except BaseException as e:  # noqa: BLE001 -- an escape is the traceback the probe hunts
        pytest.fail(f"{what}: {type(e).__name__} escaped main (a traceback): {e}")
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    assert rc == code, f"{what}: exit {rc}, expected {code}: {err}"
    if code == 0:
        assert phrase in out + err, out + err
        return
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert phrase in errors[0], errors[0]


# ---- signals: a subprocess each, the command held in a patched step

SIGNAL_SCRIPT = """
import os, signal, sys, time
import partlearn.cli as cli

mode = sys.argv[1]


def held(args):
    if mode == "twice":  # a second signal while the first one unwinds the command
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
        finally:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGINT if mode == "int" else signal.SIGTERM)
    time.sleep(60)
    return 0


cli.cmd_status = cli.cmd_cache = cli.cmd_audit = cli.cmd_compare = held
sys.argv = ["partlearn", *sys.argv[2:]]
cli.entry_point()
"""

SIGNALS = [
    ("SIGTERM during status", "term", ["status", "p.toml"]),
    ("SIGINT during cache ls", "int", ["cache", "ls"]),
    ("SIGTERM during datasets audit", "term", ["datasets", "audit", "p.toml"]),
    ("SIGTERM, then SIGINT while unwinding", "twice", ["compare", "x"]),
]


@pytest.mark.parametrize("what, mode, argv", SIGNALS, ids=[s[0] for s in SIGNALS])
def test_probe_signals(tmp_path, what, mode, argv):
    p = subprocess.run([sys.executable, "-c", SIGNAL_SCRIPT, mode, *argv], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 130, (what, p.returncode, p.stderr)
    assert p.stderr.strip().splitlines()[-1] == INTERRUPTED


def test_probe_output_into_a_closed_pipe(tmp_path):
    """``partlearn cache ls | head -0``: the reader is gone before the listing is written;
    exit 141 (as if by SIGPIPE), nothing on stderr."""
    for i in range(3):
        (tmp_path / "cache" / "dataset" / f"{i:024x}").mkdir(parents=True)
    p = subprocess.Popen([sys.executable, "-m", "partlearn", "cache", "--cache-dir",
                          str(tmp_path / "cache"), "ls"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_the_table_is_large_enough():
    assert len(ROWS) + len(SIGNALS) + 1 >= 60
