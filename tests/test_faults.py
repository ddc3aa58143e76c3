"""End-to-end faults: the real CLI in subprocesses on a tiny dataset, killed, raced, garbage
collected under, damaged, or given a bad config. Each run ends with the results of a
clean run, or with a defined one-line error and exit code.

"The same results": ``results.json`` equal once timings, memory, paths and the ``cached``
flags are dropped (``normalise``), and ``predictions.csv`` byte-identical.

To keep the file fast, a test whose fault lies in a later stage starts from a cache
holding copies of the reference run's earlier entries (``seed_cache``: the stages it
names, plus the ``_memo`` folder of backbone identity and figures); a copied entry is
verified by the store like any other. Synchronisation is by marker files only.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from partlearn.cli import main

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("dataset", "regions", "features", "parts", "encoding", "encoding_cv", "classifier",
          "dpnet")
TIMEOUT = 300  # seconds, per subprocess: only a hung run gets near it


@pytest.fixture(scope="module")
def tiny(tiny):
    """conftest's tiny dataset, with a pipeline file."""
    (tiny / "p.toml").write_text('name = "tiny"\n')
    return tiny


def settings(tiny, *extra):
    """--set pairs: every stage of the full pipeline, one DP-Net variant and seed, 5 shards."""
    pairs = [f"data.root={tiny / 'data'}", "data.format=folders", "data.min_train_per_class=1",
             "backbone.name=resnet18", f"backbone.weights={tiny / 'r18.pth'}",
             "features.short_side=64", "features.workers=0", "features.shard_size=2",
             "features.device=cpu", "regions.scales=[0.5, 0.8]", "parts.n_parts=2",
             "parts.min_images=2", "encoding.device=cpu", "classifier.n_bootstrap=100",
             'classifier.methods=["global", "parts", "parts+global"]', 'dpnet.variants=["wo"]',
             "dpnet.seeds=[0]", "dpnet.epochs=2", "dpnet.parts_per_class=2",
             "dpnet.batch_size=2", "dpnet.device=cpu", "n_jobs=1", *extra]
    return [x for p in pairs for x in ("--set", p)]


def run_argv(tiny, cache, out, *extra):
    return ["run", str(tiny / "p.toml"), *settings(tiny, *extra), "--cache-dir", str(cache),
            "--out", str(out)]


# Idle OpenMP threads sleep instead of spinning: on a busy machine a spinning torch is
# many times slower. It changes no thread count, so no result.
ENV = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def cli(*argv, timeout=TIMEOUT):
    """``python -m partlearn ARGV`` from the repository root (the package is importable
    from there whatever PYTHONPATH says)."""
    return subprocess.run([sys.executable, "-m", "partlearn", *map(str, argv)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=timeout)


# A run with one library function patched: killed with SIGKILL, or held until a marker.
HOOK = r"""
import os, signal, sys, time
from pathlib import Path

mode, marks, argv = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]


def kill():
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def hold():
    (marks / "held").touch()
    for _ in range(6000):  # 300 s: the test lost track of us, give up
        if (marks / "go").exists():
            return
        time.sleep(0.05)
    os._exit(3)


if mode in ("kill-features", "hold-features"):
    import partlearn.features as features
    real_extract, done = features.extract_features, []

    def extract(*a, **k):  # called once per shard
        if mode == "hold-features":
            hold()
        for item in real_extract(*a, **k):
            if len(done) == 3 and mode == "kill-features":  # 3 images: shard 0 is on disk
                kill()
            done.append(1)
            yield item

    features.extract_features = extract
elif mode in ("kill-parts", "hold-parts", "kill-encoding_cv"):
    import partlearn.parts._learner as parts
    real_learn, calls = parts.learn_class_parts, []

    def learn(*a, **k):
        calls.append(k.get("name"))
        if mode == "kill-parts" and len(calls) == 2:  # the first class's shard is on disk
            kill()
        if mode == "kill-encoding_cv" and len(calls) == 3:  # 2 classes: fold 0 is on disk
            kill()
        if mode == "hold-parts" and len(calls) == 1:
            hold()
        return real_learn(*a, **k)

    parts.learn_class_parts = learn
elif mode == "kill-dpnet":
    import partlearn.dpnet as dpnet

    def train(*a, **k):
        kill()

    dpnet.train_dpnet = train
else:
    raise SystemExit(f"unknown mode {mode}")

import partlearn.cli
sys.exit(partlearn.cli.main(argv))
"""


def hooked(mode, marks, argv):
    """The command of a ``HOOK`` run: ``partlearn ARGV`` with ``mode``'s patch; its
    markers (``held``, which it makes; ``go``, which the test makes) in ``marks``."""
    marks.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-c", HOOK, mode, str(marks), *map(str, argv)]


def wait_for(path: Path, proc=None, what="the run"):
    """Poll until ``path`` exists; fail at once if ``proc`` ends first."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if path.exists():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} ended (rc {proc.returncode}) before {path} appeared")
        time.sleep(0.05)
    raise AssertionError(f"{what} never made {path}")


def wait_for_text(path: Path, text: str, proc, what="the run"):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"{what} ended (rc {proc.returncode}) before it logged {text!r}")
        time.sleep(0.05)
    raise AssertionError(f"{what} never logged {text!r}")


# ---- the reference and the comparison

VOLATILE = {"timings", "peak_memory_mb", "memory", "cached", "created"}


def _pathlike(v) -> bool:
    return isinstance(v, str) and (os.path.isabs(v) or v.startswith(("./", "../")))


def normalise(obj):
    """``results.json`` without what differs between equal runs: timings (any
    ``*seconds`` too), peak memory, dates, the ``cached`` flags, absolute paths."""
    if isinstance(obj, dict):
        return {k: normalise(v) for k, v in obj.items()
                if k not in VOLATILE and not k.endswith("seconds") and not _pathlike(v)}
    if isinstance(obj, list):
        return [normalise(v) for v in obj if not _pathlike(v)]
    return obj


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def assert_same_as_reference(out: Path, ref):
    assert normalise(results(out)) == ref["normalised"]
    assert (out / "predictions.csv").read_bytes() == ref["predictions"]


def leftovers(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.name.endswith((".tmp", ".partial")) or ".damaged-" in p.name)


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """One clean run (n_jobs=1) on a fresh cache, in this process (which has imported
    torch already: a subprocess would only cost its start)."""
    top = tmp_path_factory.mktemp("reference")
    cache, out = top / "cache", top / "run"
    assert main(run_argv(tiny, cache, out)) == 0
    summary = results(out)
    assert list(summary["stages"]) == list(STAGES)
    assert not any(s["cached"] for s in summary["stages"].values())
    assert set(summary["methods"]) == {"global", "parts", "parts+global", "dpnet"}
    assert (out / "predictions.csv").read_text().splitlines()[0] == \
        "path,label,global,parts,parts+global,dpnet"
    return {"cache": cache, "out": out, "normalised": normalise(summary),
            "predictions": (out / "predictions.csv").read_bytes(),
            "keys": {s: v["key"] for s, v in summary["stages"].items()}}


def seed_cache(reference, dest: Path, stages=()) -> Path:
    """A cache holding copies of the reference's ``_memo`` and of these stages' entries."""
    src = reference["cache"]
    shutil.copytree(src / "_memo", dest / "_memo")
    for s in stages:
        key = reference["keys"][s]
        shutil.copytree(src / s / key, dest / s / key)
    return dest


# ---- 1. kill -9 inside a stage, then a plain re-run

KILLS = {  # stage: the stages already cached when it starts, the resume log line
    "features": ((), "shards already done, resuming"),
    "parts": (("dataset", "regions", "features"), "classes already learnt, resuming"),
    "encoding_cv": (("dataset", "regions", "features", "parts", "encoding"),
                    "folds already done, resuming"),
    "dpnet": (("dataset", "regions", "features", "parts", "encoding", "encoding_cv",
               "classifier"), None),
}


@pytest.mark.parametrize("stage", list(KILLS))
def test_kill_9_inside_a_stage_then_rerun(tiny, reference, tmp_path, stage):
    before, resumed = KILLS[stage]
    cache = seed_cache(reference, tmp_path / "cache", before)
    key = reference["keys"][stage]
    p = subprocess.run(hooked(f"kill-{stage}", tmp_path / "marks",
                              run_argv(tiny, cache, tmp_path / "killed")),
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    assert not (cache / stage / key).exists()  # nothing half-done was committed
    partial = cache / stage / f"{key}.partial"
    if stage != "dpnet":  # its single (variant, seed) shard had not begun
        assert (partial / "shard_00000").is_dir()  # the finished shard survived the kill

    p = cli(*run_argv(tiny, cache, tmp_path / "rerun"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_as_reference(tmp_path / "rerun", reference)
    if resumed:
        assert any(line for line in p.stderr.splitlines()
                   if f" {stage}: " in line and resumed in line), p.stderr[-3000:]
    assert leftovers(cache) == []


# ---- 2. n_jobs changes no result


def close(a, b, where="results"):
    """Equal structure, strings and flags; numbers equal to 1e-3 (float rounding)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), where
        for k in a:
            close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-3, abs=1e-4), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def n_jobs_2(tiny, reference, tmp_path_factory):
    """A run with n_jobs=2. n_jobs parallelises the parts (threads over classes) and the
    classifier's CV: those stages and the later ones are computed afresh."""
    top = tmp_path_factory.mktemp("n_jobs_2")
    cache = seed_cache(reference, top / "cache", ("dataset", "regions", "features"))
    p = cli(*run_argv(tiny, cache, top / "run", "n_jobs=2"))
    assert p.returncode == 0, p.stderr[-3000:]
    stages = results(top / "run")["stages"]
    assert [s for s, v in stages.items() if not v["cached"]] == [
        "parts", "encoding", "encoding_cv", "classifier", "dpnet"]
    return top / "run"


def test_n_jobs_2_gives_the_predictions_of_n_jobs_1(n_jobs_2, reference):
    assert (n_jobs_2 / "predictions.csv").read_bytes() == reference["predictions"]
    close(reference["normalised"], normalise(results(n_jobs_2)))


def test_n_jobs_2_gives_the_results_of_n_jobs_1_exactly(n_jobs_2, reference):
    assert_same_as_reference(n_jobs_2, reference)


# ---- 2b. the dask backend changes no result, also when a worker dies mid-task

# the workers of the run's own LocalCluster declare the resource: the feature tasks ask for it
DASK_RUN = ("backend=dask", "dask.n_workers=2", "dask.gpu_resource=GPU")


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 single-threaded worker processes (the CI's own)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c:
        yield c


def test_dask_local_cluster_gives_the_results_of_local_exactly(tiny, reference, tmp_path):
    """Every stage computed afresh on a LocalCluster the run starts and stops itself."""
    out = tmp_path / "run"
    assert main(run_argv(tiny, tmp_path / "cache", out, *DASK_RUN)) == 0
    assert not any(v["cached"] for v in results(out)["stages"].values())
    assert_same_as_reference(out, reference)


KILL_ONCE = """
import os, partlearn.parts._learner as parts
real = parts.learn_class_parts
def learn(*a, **k):
    try:  # the first class learnt anywhere kills its worker, mid-task
        os.close(os.open({marker!r}, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return real(*a, **k)
    os._exit(1)
parts.learn_class_parts = learn
"""


def test_a_worker_killed_mid_task_is_replaced_and_the_results_are_unchanged(
        tiny, reference, tmp_path, cluster):
    import runpy

    from distributed import Client

    marker, hook = tmp_path / "killed", tmp_path / "kill_once.py"
    hook.write_text(KILL_ONCE.format(marker=str(marker)))
    with Client(cluster) as client:
        client.run(runpy.run_path, str(hook))  # every worker's parts learner, patched
        cache = seed_cache(reference, tmp_path / "cache", ("dataset", "regions", "features"))
        out = tmp_path / "run"
        assert main(run_argv(tiny, cache, out, "backend=dask",
                             f"dask.scheduler={cluster.scheduler_address}")) == 0
    assert marker.exists()  # a worker did die inside a class's task
    assert_same_as_reference(out, reference)


KILL_ONCE_TASK = """
import os
def task(item, value, marker):
    try:  # the first task anywhere kills its worker
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return item * float(value.sum())
    os._exit(1)
"""


def test_shared_data_lost_with_its_only_worker_is_scattered_again(tmp_path):
    """A one-worker cluster: the worker dies inside a task and takes the only copy of the
    scattered ``shared`` values with it (the two-worker test above can lose them the same
    way, by chance); the map scatters them again to the restarted worker and every task's
    result comes back once."""
    import numpy as np

    distributed = pytest.importorskip("distributed")
    from partlearn.backend import DaskBackend

    ns = {"__name__": "kill_once_task"}  # not an importable module: pickled by value
    exec(KILL_ONCE_TASK, ns)
    marker = tmp_path / "killed"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as one:
        backend = DaskBackend(one.scheduler_address, timeout=30)
        try:
            out = list(backend.map(ns["task"], [1.0, 2.0, 3.0],
                                   shared={"value": np.ones(1000), "marker": str(marker)}))
        finally:
            backend.close()
    assert marker.exists()  # the worker did die
    assert sorted(out) == [(0, 1000.0), (1, 2000.0), (2, 3000.0)]


def test_liblinear_cv_on_dask_workers_gives_local_liblinear_exactly(
        tiny, reference, tmp_path, cluster):
    """``classifier.solver = "liblinear"`` sends the CV's (C, fold) fits to the workers
    (the default torch solver runs in the run's process): the same results as local."""
    before = [s for s in reference["keys"] if s != "classifier"]
    outs = {}
    for name, extra in (("local", ()), ("dask", ("backend=dask",
                                                  f"dask.scheduler={cluster.scheduler_address}"))):
        cache = seed_cache(reference, tmp_path / name / "cache", before)
        outs[name] = tmp_path / name / "run"
        assert main(run_argv(tiny, cache, outs[name], "classifier.solver=liblinear",
                             *extra)) == 0
        assert [s for s, v in results(outs[name])["stages"].items() if not v["cached"]] == [
            "classifier"]
    assert normalise(results(outs["dask"])) == normalise(results(outs["local"]))
    assert (outs["dask"] / "predictions.csv").read_bytes() == \
        (outs["local"] / "predictions.csv").read_bytes()


def test_an_unreachable_scheduler_is_one_line_naming_it(tiny, tmp_path, capsys):
    pytest.importorskip("distributed")
    out = tmp_path / "run"
    assert main(run_argv(tiny, tmp_path / "cache", out, "backend=dask",
                         "dask.scheduler=tcp://127.0.0.1:9", "dask.timeout=2")) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tcp://127.0.0.1:9" in err and "scheduler" in err, err
    assert not out.exists()  # before the run directory and any stage


def test_a_resource_no_worker_declares_is_one_line(tiny, tmp_path, cluster, capsys):
    out = tmp_path / "run"
    assert main(run_argv(tiny, tmp_path / "cache", out, "backend=dask",
                         f"dask.scheduler={cluster.scheduler_address}",
                         "dask.gpu_resource=GPU")) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'GPU'" in err and "--resources GPU=1" in err, err
    assert not out.exists()  # before the run directory: the tasks would have waited forever


def test_a_scheduler_without_workers_is_one_line(tiny, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=0, dashboard_address=":0") as empty:
        assert main(run_argv(tiny, tmp_path / "cache", tmp_path / "run", "backend=dask",
                             f"dask.scheduler={empty.scheduler_address}",
                             "dask.timeout=2")) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no workers" in err, err


# ---- 3. two runs on one fresh cache


@pytest.fixture(scope="module")
def concurrent(tiny, reference, tmp_path_factory):
    """Run A holds inside its feature extraction (the entry's lock held) until run B, a
    plain CLI run on the same fresh cache, has said it computes the features too, so B
    waits for A there; from then on both race freely."""
    top = tmp_path_factory.mktemp("concurrent")
    cache = seed_cache(reference, top / "cache")
    marks = top / "marks"
    logs = {name: (top / f"{name}.out", top / f"{name}.err") for name in "AB"}
    procs = {}
    files = []
    try:
        for name, argv in (("A", hooked("hold-features", marks,
                                        run_argv(tiny, cache, top / "A"))),
                           ("B", [sys.executable, "-m", "partlearn",
                                  *run_argv(tiny, cache, top / "B")])):
            out, err = (open(f, "w") for f in logs[name])
            files += [out, err]
            procs[name] = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=out, stderr=err,
                                           text=True)
            if name == "A":
                wait_for(marks / "held", procs["A"], "run A")
        wait_for_text(logs["B"][1], "features: not cached, computing", procs["B"], "run B")
        (marks / "go").touch()
        rcs = {name: p.wait(TIMEOUT) for name, p in procs.items()}
    finally:
        (marks / "go").touch()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()
    return {"cache": cache, "top": top, "rcs": rcs,
            "stderr": {name: logs[name][1].read_text() for name in "AB"}}


def test_two_concurrent_runs_on_one_fresh_cache(concurrent, reference, capsys):
    assert concurrent["rcs"] == {"A": 0, "B": 0}, concurrent["stderr"]["B"][-3000:]
    for name in "AB":
        assert_same_as_reference(concurrent["top"] / name, reference)
        assert "Traceback" not in concurrent["stderr"][name]
    cache = concurrent["cache"]
    assert leftovers(cache) == []
    capsys.readouterr()
    assert main(["cache", "--cache-dir", str(cache), "ls"]) == 0
    listing = capsys.readouterr().out
    assert f"{len(STAGES)} entries" in listing and "(partial)" not in listing
    assert "damaged" not in listing


def test_each_stage_computed_once_and_the_waiting_run_says_cached(concurrent, reference):
    """Exactly one of the two runs computed each stage (it logged the commit); the other
    reports that stage cached, also where it waited for the first to finish it."""
    assert concurrent["rcs"] == {"A": 0, "B": 0}
    for stage in STAGES:
        committed = {name: f" {stage}: cached {reference['keys'][stage]} as " in err
                     for name, err in concurrent["stderr"].items()}
        assert sum(committed.values()) == 1, (stage, committed)
        for name in "AB":
            flag = results(concurrent["top"] / name)["stages"][stage]["cached"]
            assert flag == (not committed[name]), (stage, name, flag)


# ---- 4. gc and rm while a run is live


def test_gc_and_rm_during_a_run_keep_its_entries(tiny, reference, tmp_path, capsys):
    """``cache gc`` and ``cache rm`` (run here: another process than the live run) skip
    what a run holds: its partial write and the entries it has pinned."""
    cache = seed_cache(reference, tmp_path / "cache", ("dataset", "regions", "features"))
    marks, err = tmp_path / "marks", tmp_path / "run.err"
    with open(err, "w") as f:
        run = subprocess.Popen(hooked("hold-parts", marks,
                                      run_argv(tiny, cache, tmp_path / "run")),
                               cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=f, text=True)
    try:
        wait_for(marks / "held", run)  # inside the parts stage: its partial write is open
        parts = reference["keys"]["parts"]
        assert (cache / "parts" / f"{parts}.partial").is_dir()
        capsys.readouterr()
        assert main(["cache", "--cache-dir", str(cache), "gc"]) == 0
        gc = capsys.readouterr().out
        assert f"kept    parts {parts} " in gc and "in use by a live run" in gc, gc
        assert "0 entries removed" in gc
        assert main(["cache", "--cache-dir", str(cache), "rm", "dataset", "regions",
                     "features"]) == 0
        rm = capsys.readouterr().out
        for stage in ("dataset", "regions", "features"):  # pinned by the live run
            assert f"kept    {stage} {reference['keys'][stage]} " in rm, rm
            assert "in use by a live run" in rm
            assert (cache / stage / reference["keys"][stage] / "meta.json").is_file()
        assert "0 entries removed" in rm
    finally:
        (marks / "go").touch()
        rc = run.wait(TIMEOUT)
    assert rc == 0, err.read_text()[-3000:]
    assert_same_as_reference(tmp_path / "run", reference)
    assert leftovers(cache) == []


# ---- 5. files damaged inside complete entries


def test_damaged_files_inside_entries_are_reported_and_recomputed(tiny, reference, tmp_path,
                                                                  capsys):
    cache = seed_cache(reference, tmp_path / "cache", STAGES)
    keys = reference["keys"]
    npy = sorted((cache / "features" / keys["features"]).rglob("*.npy"))[-1]
    with open(npy, "r+b") as f:
        f.truncate(npy.stat().st_size // 2)
    (cache / "parts" / keys["parts"] / "meta.json").unlink()
    (cache / "classifier" / keys["classifier"] / "meta.json").write_text("{not json")
    damaged = ("features", "parts", "classifier")

    capsys.readouterr()
    assert main(["status", str(tiny / "p.toml"), *settings(tiny), "--cache-dir", str(cache)]) == 0
    status = capsys.readouterr()
    assert "Traceback" not in status.err
    states = {line.split()[0]: line for line in status.out.splitlines() if line.strip()}
    assert set(states) == set(STAGES)
    for stage in STAGES:
        assert ("damaged" in states[stage]) == (stage in damaged), states[stage]
    assert "meta.json is missing" in states["parts"]
    assert "does not parse" in states["classifier"]
    assert npy.name in states["features"]

    p = cli(*run_argv(tiny, cache, tmp_path / "rerun"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    stages = results(tmp_path / "rerun")["stages"]
    assert {s for s, v in stages.items() if not v["cached"]} == set(damaged)
    assert_same_as_reference(tmp_path / "rerun", reference)
    assert leftovers(cache) == []


def test_damaged_memos_are_recomputed_with_a_warning_and_gc_removes_them(tiny, reference,
                                                                        tmp_path, capsys):
    """A garbled JSON memo (the backbone's identity, the report's figures) and a truncated
    gallery PNG in ``_memo/`` are not served: the run warns, draws them again and ends
    with the reference's results and figures; ``cache gc`` removes such memos, and those
    of an entry that is gone."""
    cache = seed_cache(reference, tmp_path / "cache", STAGES)
    memo = cache / "_memo"
    garbled = sorted(memo.glob("*.json"))  # the backbone's identity, the report's figures
    assert len(garbled) >= 2
    for f in garbled:
        f.write_text(f.read_text()[:-7])
    gallery = sorted(memo.glob("galleries-*"))[0]
    png = sorted(gallery.glob("*.png"))[0]
    with open(png, "r+b") as f:
        f.truncate(png.stat().st_size // 2)

    capsys.readouterr()
    assert main(["status", str(tiny / "p.toml"), *settings(tiny), "--cache-dir", str(cache)]) == 0
    status = capsys.readouterr()
    assert all(line.split()[-1] == "cached" for line in status.out.splitlines())
    p = cli(*run_argv(tiny, cache, tmp_path / "rerun"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert f"memo {gallery} {png.name} is " in p.stderr
    # each damaged memo is named by whichever reads it first: status (the backbone's
    # identity, for the features key) or the run
    assert all(str(f) in status.err + p.stderr for f in garbled), p.stderr[-3000:]
    assert all(s["cached"] for s in results(tmp_path / "rerun")["stages"].values())
    assert_same_as_reference(tmp_path / "rerun", reference)
    drawn = sorted((reference["out"] / "figures").glob("*.png"))
    assert drawn and [f.read_bytes() for f in drawn] == [
        (tmp_path / "rerun" / "figures" / f.name).read_bytes() for f in drawn]

    for f in garbled:
        f.write_text("{garbled")
    (png := sorted(sorted(memo.glob("galleries-*"))[0].glob("*.png"))[0]).write_bytes(b"")
    assert main(["cache", "--cache-dir", str(cache), "gc"]) == 0
    gc = capsys.readouterr().out
    assert "0 entries removed" in gc
    assert all(f"removed memo {f.name} " in gc for f in garbled), gc
    assert f"removed memo {png.parent.name} " in gc and not png.parent.exists()
    assert main(["cache", "--cache-dir", str(cache), "rm", "features"]) == 0
    assert main(["cache", "--cache-dir", str(cache), "gc"]) == 0
    gc = capsys.readouterr().out
    assert not list(memo.glob("galleries-*")) and not list(memo.glob("heatmap-*"))
    assert f"its entry features/{reference['keys']['features']} is gone" in gc
    assert leftovers(cache) == []


# ---- 6. bad configs: exit 2, one line naming the field, before any stage

BAD = [
    ("n_jobs=0", "n_jobs"),
    ("classifier.C=[inf]", "classifier.C"),
    ("classifier.C=[nan]", "classifier.C"),
    ("parts.tol=nan", "parts.tol"),
    ("parts.slack=-100", "parts.slack"),
    ("dpnet.lr=-1", "dpnet.lr"),
    ("dpnet.epochs=0", "dpnet.epochs"),
    ("dpnet.batch_size=0", "dpnet.batch_size"),
    ("dpnet.val_fraction=1.5", "dpnet.val_fraction"),
    ("dpnet.patience=-1", "dpnet.patience"),
    ("dpnet.lambda_orth=-1", "dpnet.lambda_orth"),
    ("dpnet.seeds=[0, 0]", "dpnet.seeds"),
    ('dpnet.variants=["wo", "wo"]', "dpnet.variants"),
    ("regions.strid=0.3", "regions.strid"),
    ('features.pools=["max"]', "features.pools"),
    ('retrieval.rerank=["bogus"]', "retrieval.rerank"),
]


@pytest.mark.parametrize("setting, field", BAD)
def test_bad_config_is_one_line_exit_2_before_any_stage(tiny, tmp_path, capsys, setting, field):
    cache, out = tmp_path / "cache", tmp_path / "out"
    # --until dataset: a setting that slips through costs one cheap stage, not a run
    rc = main(["-q", *run_argv(tiny, cache, out, setting), "--until", "dataset"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("partlearn: error: "), err
    assert field in lines[0] and "Traceback" not in err
    if field == "regions.strid":
        assert "--set" in lines[0] and "'stride'" in lines[0]
    assert not cache.exists() and not out.exists()


# ---- 7. SIGTERM and SIGINT inside the features stage's threads: always exit 130

SLOW_FEATURES = r"""
import sys, time
import partlearn.features as features

real = features.extract_features


def extract(*a, **k):  # each image a little slower: the stage lasts long enough to be hit
    for item in real(*a, **k):
        time.sleep(0.05)
        yield item


features.extract_features = extract
import partlearn.cli
sys.argv = ["partlearn", *sys.argv[1:]]
partlearn.cli.entry_point()
"""


def test_signals_inside_the_feature_threads_always_exit_130(tiny, reference, tmp_path):
    """10 runs (n_jobs=2: the shards are extracted on 2 threads), each sent SIGTERM or
    SIGINT at a random moment of its features stage: every one exits 130 with the resume
    hint as its last line, no traceback, no abort (an interpreter torn down under a torch
    thread printed "terminate called without an active exception" and exited 134)."""
    import random

    rng = random.Random(28)
    hit = 0
    for i in range(10):
        cache = seed_cache(reference, tmp_path / f"cache{i}", ("dataset", "regions"))
        err = tmp_path / f"run{i}.err"
        sig = (signal.SIGTERM, signal.SIGINT)[i % 2]
        with open(err, "w") as f:
            p = subprocess.Popen([sys.executable, "-c", SLOW_FEATURES,
                                  *run_argv(tiny, cache, tmp_path / f"run{i}", "n_jobs=2"),
                                  "--until", "features"],
                                 cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=f)
        try:
            wait_for_text(err, "features: not cached, computing", p, f"run {i}")
            time.sleep(rng.uniform(0, 0.8))
            finished = p.poll() is not None
            if not finished:
                p.send_signal(sig)
            rc = p.wait(TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        text = err.read_text()
        assert "Traceback" not in text and "terminate called" not in text, text[-3000:]
        if finished:
            assert rc == 0, text[-3000:]
            continue
        hit += 1
        assert rc == 130, (i, sig, rc, text[-3000:])
        assert text.strip().splitlines()[-1] == (
            "partlearn: interrupted; finished shards are kept and a re-run resumes"), text[-3000:]
    assert hit >= 8  # the signals did land inside the stage
