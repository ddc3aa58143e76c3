"""partlearn command line: run a pipeline, compare runs, explain and predict images.

Exit codes: 0 success, 2 usage or configuration error, 1 runtime error
(bad data included), 130 interrupted, 141 output pipe closed by its reader. A user's mistake gets one clear line,
never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from . import _files
from ._validation import ConfigError, PartlearnError

logger = logging.getLogger("partlearn")


def _config_file(path) -> Path:
    """``path`` checked to be a readable UTF-8 file before the TOML parser sees it (a
    folder, or bytes that are not text, are one line, not a traceback)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; expected a TOML file "
                          "(e.g. pipelines/cub200.toml)")
    if path.exists():
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {path} is not UTF-8 text ({e.reason} at byte "
                              f"{e.start}); expected a TOML file") from None
    return path


def _load_config(path, overrides=()):
    from .config import load_config

    return load_config(_config_file(path), list(overrides))


def _config(args):
    overrides = list(args.set or [])
    if getattr(args, "device", None):
        overrides.append(f'features.device="{args.device}"')
    return _load_config(args.config, overrides)


def _folder_arg(option: str, value) -> None:
    """``--cache-dir``/``--out`` must name a folder (or nothing yet), not a file."""
    if value and Path(value).exists() and not Path(value).is_dir():
        raise ConfigError(f"{option} {value}: is a file; expected a folder (or a path that "
                          "does not exist yet)")


def _file_arg(option: str, value) -> None:
    """An output file option (``--out FILE.csv``, ``--markdown FILE``) must name a file in a
    folder that exists: checked before any work, naming the user's path."""
    path = Path(value)
    if path.is_dir():
        raise ConfigError(f"{option} {value}: is a folder; expected a file name")
    if not path.parent.is_dir():
        raise ConfigError(f"{option} {value}: its folder {path.parent} does not exist")


def _pipeline(args):
    from .runner import Pipeline

    _folder_arg("--cache-dir", args.cache_dir)
    return Pipeline(_config(args), cache_dir=args.cache_dir)


def cmd_run(args) -> int:
    _folder_arg("--out", args.out)
    pipe = _pipeline(args)
    summary = pipe.run(until=args.until, force=args.force or (), out=args.out)
    for stage, info in summary["stages"].items():
        print(f"{stage:14s} {info['key']}  {'cached' if info['cached'] else 'computed':8s} "
              f"{summary['timings'][stage]:9.2f} s")
    for name, m in summary.get("methods", {}).items():
        if "weight" in m:
            extra = f"late fusion, weight {m['weight']:g} on the first"
        elif "C" in m:
            extra = f"C={m['C']:g}{'  (at the edge of the grid)' if m['C_at_edge'] else ''}"
        else:
            extra = ""
        if len(m.get("seeds", ())) > 1:
            extra += (f"{'  ' if extra else ''}± {100 * m['top1_std']:.1f} "
                      f"[{100 * m['top1_min']:.1f}, {100 * m['top1_max']:.1f}] "
                      f"over {len(m['seeds'])} seeds")
        print(f"{name:20s} top-1 {100 * m['top1']:5.1f}%  "
              f"mean class {100 * m['mean_class_accuracy']:5.1f}%  {extra}")
    anon = (summary.get("memory") or {}).get("peak_anon_mb")
    print(f"peak memory {summary['peak_memory_mb']:.0f} MB resident"
          + (f", {anon:.0f} MB the process's own (anonymous)" if anon is not None else ""))
    return 0


def cmd_tune(args) -> int:
    from .tune import parse_search, tune

    _folder_arg("--cache-dir", args.cache_dir)
    _folder_arg("--out", args.out)
    sets = list(args.set or []) + ([f'features.device="{args.device}"'] if args.device else [])
    variants = [[v.strip() for v in item.split(";") if v.strip()] for item in args.variants or []]
    result = tune(_config_file(args.config), [parse_search(s) for s in args.search or []],
                  method=args.method, rounds=args.rounds, sets=sets, variants=variants,
                  cache_dir=args.cache_dir, out=args.out)
    for t in result.trials:
        print(f"trial {t.number:2d}  CV {100 * t.cv_accuracy:6.2f}%  C={t.C:<6g} "
              f"{'computed' if t.computed else 'cached  '}  {', '.join(t.changes) or '(config)'}")
    chosen = next(t for t in result.trials if t.number == result.chosen_trial)
    print(f"chosen: trial {chosen.number}, {', '.join(chosen.changes) or 'the config as given'}"
          f" (CV {100 * chosen.cv_accuracy:.2f}%)"
          + ("" if result.converged or not result.search else "; not converged"))
    print(f"report written to {Path(result.out) / 'report.html'}; the chosen config: "
          f"`partlearn run {Path(result.out) / 'chosen.toml'}`")
    return 0


def cmd_settings(args) -> int:
    from .config import settings_table, with_settings_table

    if not args.write:
        print(settings_table(), end="")
        return 0
    path = Path(args.write)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"--write {path}: no such file") from None
    new = with_settings_table(text)
    if new != text:
        path.write_text(new)
    print(f"{path}: settings table {'rewritten' if new != text else 'up to date'}")
    return 0


def cmd_compare(args) -> int:
    from .report import compare_runs

    externals = {}
    for item in args.external or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--external {item!r} should look like NAME=FILE.csv")
        externals[name] = path
    names, runs = [], []
    for item in args.runs:  # RUN_DIR, or NAME=RUN_DIR where RUN_DIR is no folder as given
        name, sep, path = item.partition("=")
        if sep and not Path(item).exists():
            if not name or not path:
                raise ConfigError(f"{item!r} should be RUN_DIR or NAME=RUN_DIR")
            names.append(name)
            runs.append(path)
        else:
            names.append(None)
            runs.append(item)
    if args.markdown:
        from .report import headline_markdown

        if externals or args.out:
            raise ConfigError("--markdown writes headlines only; drop --external and --out")
        if args.markdown != "-":
            _file_arg("--markdown", args.markdown)
        text = headline_markdown(runs, names, command=shlex.join(
            ["partlearn", "compare", *args.runs, "--markdown", args.markdown]))
        if args.markdown == "-":
            sys.stdout.write(text)
        else:
            _files.write_text(Path(args.markdown), text)
            print(f"headlines written to {args.markdown}")
        return 0
    _folder_arg("--out", args.out)
    out = args.out or runs[0]
    compare_runs(runs, externals, out, names=names)
    print(f"report written to {Path(out) / 'report.html'} and {Path(out) / 'report.md'}")
    return 0


def cmd_explain(args) -> int:
    from .explain import explain_image
    from .runner import Pipeline

    run = Path(args.run)
    if not (run / "config.toml").is_file():
        raise ConfigError(f"{run / 'config.toml'} is missing: is {run} a run directory of "
                          "`partlearn run`?")
    if not Path(args.image).is_file():
        raise ConfigError(f"image {args.image} " + ("is a folder; expected an image file"
                                                    if Path(args.image).is_dir()
                                                    else "does not exist"))
    if args.top < 1:
        raise ConfigError(f"--top {args.top}: expected 1 or more parts to draw")
    _folder_arg("--cache-dir", args.cache_dir)
    _folder_arg("--out", args.out)
    pipe = Pipeline(_load_config(run / "config.toml"), cache_dir=args.cache_dir)
    info = explain_image(pipe, args.image, args.out or run / "explain", top=args.top,
                         model=args.model)
    print(f"predicted {info['predicted']}; top parts: "
          + ", ".join(f"{d['part']} ({d['score']:.1f})" for d in info["parts"]))
    print(f"written to {info['figure']}")
    return 0


def _run_or_model(path, cache_dir) -> None:
    """``path`` is a run directory or a model folder (the one-line errors before work)."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path} " + ("is a file" if path.exists() else "does not exist")
                          + "; expected a run directory or a model folder (`partlearn export`)")
    if (path / "config.toml").is_file() and not (path / "model.json").is_file():
        _config_file(path / "config.toml")
    _folder_arg("--cache-dir", cache_dir)


def cmd_export(args) -> int:
    from .cache import human_size
    from .model import export_model

    run = Path(args.run)
    if not (run / "config.toml").is_file():
        raise ConfigError(f"{run / 'config.toml'} is missing: is {run} a run directory of "
                          "`partlearn run`?")
    _config_file(run / "config.toml")
    _folder_arg("--cache-dir", args.cache_dir)
    out = export_model(run, args.out, cache_dir=args.cache_dir)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"model written to {out} ({human_size(size)}); use it with `partlearn predict "
          f"{out} IMAGES...` or partlearn.load_model({str(out)!r})")
    return 0


def cmd_predict(args) -> int:
    from .model import image_inputs, load_model, predict_files, write_csv

    _run_or_model(args.model, args.cache_dir)
    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: expected 1 or more classes")
    if args.boxes is not None and args.boxes < 1:
        raise ConfigError(f"--boxes {args.boxes}: expected 1 or more parts")
    if args.out:
        _file_arg("--out", args.out)
    paths = image_inputs(args.inputs)
    model = load_model(args.model, weights=args.weights, device=args.device,
                       cache_dir=args.cache_dir)
    method = model.resolve_method(args.method)
    top_k = min(args.top_k, len(model.classes))
    rows = predict_files(model, paths, method=method, top_k=top_k, boxes=args.boxes or 0,
                         on_bad_image=args.on_bad_image)
    if args.out:
        with _files.replacing(Path(args.out)) as tmp, open(tmp, "w", newline="") as f:
            counts = write_csv(rows, f, top_k, args.boxes or 0)
        where = args.out
    else:
        counts = write_csv(rows, sys.stdout, top_k, args.boxes or 0)
        where = "stdout"
    logger.info("predict: %d images by %s (%s) to %s%s", counts["images"], method,
                args.model, where,
                f", {counts['skipped']} unreadable skipped" if counts["skipped"] else "")
    return 0


def cmd_status(args) -> int:
    for row in _pipeline(args).status():
        print(f"{row['stage']:14s} {row['key']}  {row['state']}")
    return 0


def cmd_audit(args) -> int:
    from . import data as datasets
    from .stages.dataset import check_manifest

    cfg = _config(args)
    d = cfg.data
    if not d.root:
        raise ConfigError("data.root is not set: give it in the config or with --set data.root=PATH")
    _folder_arg("--out", args.out)
    manifest = datasets.read_dataset(d.root, format=d.format, csv=d.csv, classes=d.classes)
    check_manifest(manifest)  # the checks the run's dataset stage makes before the audit
    audit = datasets.audit_dataset(manifest, min_side=d.min_side,
                                   min_train_per_class=d.min_train_per_class)
    datasets.clip_boxes(manifest, audit.width, audit.height)  # the run's box policy too
    text = datasets.audit_markdown(audit.report)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _files.write_text(out / "audit.json", json.dumps(audit.report, indent=1))
        _files.write_text(out / "audit.md", text)
        logger.info("audit written to %s", out)
    print(text)
    return 0


def cmd_cache(args) -> int:
    from .cache import Cache, human_size

    cache_dir = args.cache_dir or "cache"
    _folder_arg("--cache-dir", cache_dir)
    cache = Cache(cache_dir)
    if args.cache_cmd == "ls":
        rows = cache.entries()
        for r in rows:
            state = ("" if r["complete"] else "  (damaged; gc removes it)" if r["damaged"]
                     else "  (partial)")
            print(f"{r['stage']:14s} {r['key']}  {human_size(r['bytes']):>9s}  {r['created']}{state}")
        print(f"{len(rows)} entries, {human_size(sum(r['bytes'] for r in rows))} in {cache_dir}")
        return 0
    if args.cache_cmd == "rm":
        removed = cache.remove(args.selectors)
    else:
        keep = None
        if args.keep:
            from .runner import Pipeline

            keep = set()
            for path in args.keep:
                pipe = Pipeline(_load_config(path), cache_dir=cache_dir)
                keep.update(pipe.entries())
        removed = cache.gc(keep)
    memos = [r for r in removed if r.get("memo")]
    for r in memos:
        print(f"removed memo {r['key']} ({human_size(r['bytes'])}): {r['reason']}")
    skipped = [r for r in removed if "skipped" in r]
    removed = [r for r in removed if "skipped" not in r and not r.get("memo")]
    for r in removed:
        print(f"removed {r['stage']} {r['key']} ({human_size(r['bytes'])})")
    for r in skipped:
        print(f"kept    {r['stage']} {r['key']} ({human_size(r['bytes'])}): {r['skipped']}")
    print(f"{len(removed)} entries removed, {human_size(sum(r['bytes'] for r in removed))} freed")
    if memos:
        print(f"{len(memos)} memos removed (damaged, or their entries gone)")
    return 0


# long: one argparse table, every subcommand and its options in the order --help shows them
def build_parser() -> argparse.ArgumentParser:
    from .stages import NAMES as STAGES

    p = argparse.ArgumentParser(prog="partlearn", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("config", help="pipeline TOML file (e.g. pipelines/cub200.toml)")
        sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override a config value (repeatable)")
        sp.add_argument("--cache-dir", help="stage store (default: the config's cache_dir)")
        sp.add_argument("--device", help="auto, cpu, cuda or cuda:N")

    run = sub.add_parser("run", help="run the pipeline's stages")
    with_config(run)
    run.add_argument("--until", choices=STAGES, help="last stage to run (default: all)")
    run.add_argument("--force", action="append", choices=STAGES,
                     help="recompute this stage and those after it (repeatable)")
    run.add_argument("--out", help="run directory (default: runs/NAME-TIMESTAMP)")
    run.set_defaults(func=cmd_run)

    tune = sub.add_parser("tune", help="choose settings by the training-split CV (coordinate "
                          "ascent; never reads the test split)")
    with_config(tune)
    tune.add_argument("--search", action="append", metavar="KEY=V1,V2,...",
                      help="a key and its values (repeatable; separate values by ';' when "
                           "one holds commas)")
    tune.add_argument("--try", dest="variants", action="append", metavar="KEY=V[;KEY=V...]",
                      help="a variant tried beside the search: overrides joined by ';' "
                           "(repeatable)")
    tune.add_argument("--method", default="parts",
                      help="the method whose CV accuracy decides (default: parts)")
    tune.add_argument("--rounds", type=int, default=3, help="at most this many rounds over "
                      "the keys (default: 3)")
    tune.add_argument("--out", help="report directory (default: runs/NAME-tune-TIMESTAMP)")
    tune.set_defaults(func=cmd_tune)

    compare = sub.add_parser("compare", help="rebuild the comparison report from finished "
                             "runs (nothing is recomputed)")
    compare.add_argument("runs", nargs="+", metavar="[NAME=]RUN_DIR",
                         help="finished run directories; NAME= names a run in the report "
                              "(default: the shortest end of its path that tells it apart)")
    compare.add_argument("--external", action="append", metavar="NAME=FILE.csv",
                         help="another implementation's test predictions "
                              "(image_id,predicted_label), scored on the same split")
    compare.add_argument("--out", help="where to write the report (default: the first run)")
    compare.add_argument("--markdown", metavar="FILE", help="instead of the report, write each "
                         "run's headline figures (top-1 and paired difference to global, "
                         "DP-Net's best variant, retrieval mAP, the cold cost) to FILE ('-': "
                         "standard output); the runs may be on different datasets")
    compare.set_defaults(func=cmd_compare)

    explain = sub.add_parser("explain", help="where the parts fire in one image (any file)")
    explain.add_argument("run", metavar="RUN_DIR")
    explain.add_argument("image", metavar="IMAGE")
    explain.add_argument("--top", type=int, default=5, help="parts to draw")
    explain.add_argument("--model", choices=("parts", "dpnet"), default="parts",
                         help="the two-stage parts (default) or DP-Net's (the run's first "
                              "variant, first seed)")
    explain.add_argument("--out", help="where to write the figure (default: RUN_DIR/explain)")
    explain.add_argument("--cache-dir", help="the stage store the run used")
    explain.set_defaults(func=cmd_explain)

    export = sub.add_parser("export", help="write a finished run's model (what predict "
                            "needs: .npy + JSON) into a folder")
    export.add_argument("run", metavar="RUN_DIR")
    export.add_argument("out", metavar="OUT_DIR", help="the model folder (new, empty, or a "
                        "model folder, replaced)")
    export.add_argument("--cache-dir", help="the stage store the run used")
    export.set_defaults(func=cmd_export)

    predict = sub.add_parser("predict", help="predict the class of images with a finished "
                             "run or an exported model; one CSV row per image")
    predict.add_argument("model", metavar="RUN_DIR|MODEL_DIR")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image files, folders (recursive) or CSV files of paths")
    predict.add_argument("--method", help="the classifier method (default: the run's last, "
                         "e.g. parts+global)")
    predict.add_argument("--top-k", type=int, default=5, help="classes listed per image")
    predict.add_argument("--out", metavar="FILE.csv", help="write the CSV here (default: "
                         "stdout)")
    predict.add_argument("--boxes", type=int, nargs="?", const=3, metavar="N",
                         help="add each image's N (default 3) top parts and their best boxes")
    predict.add_argument("--on-bad-image", choices=("error", "skip"),
                         help="an unreadable image stops (error) or is listed and skipped "
                              "(default: the run's data.on_bad_image)")
    predict.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the run's)")
    predict.add_argument("--weights", help="the backbone's weights file, where the run's "
                         "path does not hold it (checked by its sha256)")
    predict.add_argument("--cache-dir", help="the stage store the run used (RUN_DIR only)")
    predict.set_defaults(func=cmd_predict)

    settings = sub.add_parser("settings", help="print every setting as a Markdown table "
                              "(key, default, allowed values, meaning)")
    settings.add_argument("--write", metavar="FILE", help="replace the table between the "
                          "<!-- settings:begin --> and <!-- settings:end --> markers of FILE "
                          "(README.md) instead")
    settings.set_defaults(func=cmd_settings)

    status = sub.add_parser("status", help="say which stages are cached and which are stale")
    with_config(status)
    status.set_defaults(func=cmd_status)

    ds = sub.add_parser("datasets", help="dataset tools")
    ds_sub = ds.add_subparsers(dest="datasets_cmd", required=True)
    audit = ds_sub.add_parser("audit", help="audit the config's dataset")
    with_config(audit)
    audit.add_argument("--out", help="also write audit.json and audit.md here")
    audit.set_defaults(func=cmd_audit)

    cache = sub.add_parser("cache", help="inspect and clean the stage store")
    cache.add_argument("--cache-dir", help="stage store (default: cache)")
    cache_sub = cache.add_subparsers(dest="cache_cmd", required=True)
    cache_sub.add_parser("ls", help="list entries with sizes")
    rm = cache_sub.add_parser("rm", help="remove entries by stage name or key prefix")
    rm.add_argument("selectors", nargs="+", metavar="STAGE|KEY")
    gc = cache_sub.add_parser("gc", help="remove partial writes, and with --keep every "
                                         "entry the given configs do not use")
    gc.add_argument("--keep", action="append", metavar="CONFIG")
    cache.set_defaults(func=cmd_cache)
    return p


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("partlearn")
    root.handlers[:] = [handler]
    root.setLevel(level)


class _Interrupts:
    """SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's time limit) stop the command:
    the first one raises ``KeyboardInterrupt`` in the main thread (Python runs handlers
    there, whichever thread the signal hit); later ones are ignored while the command
    unwinds, so a second signal cannot turn the one-line exit into a traceback. The
    previous handlers are back when ``main`` returns. Only the main thread can set
    handlers: elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.previous = {}
        self.fired = False

    def _handle(self, signum, frame):
        if self.fired:
            return
        self.fired = True
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        return False


_INTERRUPTED = "partlearn: interrupted; finished shards are kept and a re-run resumes"


def _free(path) -> str:
    """Free space on the disk holding ``path`` (or its nearest existing parent)."""
    import shutil

    from .cache import human_size

    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return human_size(shutil.disk_usage(p).free)
    except OSError:
        return "unknown"


def _os_error_line(e: OSError) -> str:
    """One line for an ``OSError`` a user can cause: what path, what went wrong, and
    what to do."""
    where = e.filename or "a file"
    if e.errno in (errno.ENOSPC, errno.EDQUOT) or (e.errno is None and "written" in str(e)):
        return (f"{where}: {e.strerror or e}; {_free(e.filename or '.')} free on that disk, "
                "not enough for it: free space there or point --cache-dir/--out at a larger "
                "disk, then re-run (finished shards are kept)")
    if e.errno == errno.EISDIR:
        return f"{where}: is a folder; expected a file"
    if e.errno == errno.ENOTDIR:
        return f"{where}: a part of this path is a file; expected a folder"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{where}: {e.strerror or 'not permitted'}; it cannot be written here: give "
                "a writable folder (--cache-dir, --out) or change its permissions")
    if e.errno == errno.ENOENT:
        return f"{where}: does not exist"
    return f"{where}: {e.strerror or e}"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    with _Interrupts():
        try:
            return args.func(args)
        except PartlearnError as e:
            print(f"partlearn: error: {e}", file=sys.stderr)
            return e.exit_code
        except BrokenPipeError:  # the reader went away (`partlearn cache ls | head -1`)
            _silence_stdout()
            return 141
        except OSError as e:  # a full disk, a path of the wrong kind, a folder one cannot write
            print(f"partlearn: error: {_os_error_line(e)}", file=sys.stderr)
            return 1
        except UnicodeDecodeError as e:
            print(f"partlearn: error: a file is not UTF-8 text ({e.reason} at byte {e.start})",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(_INTERRUPTED, file=sys.stderr)
            return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and the interpreter's last flush
    would otherwise print a BrokenPipeError at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def entry_point() -> None:
    """``python -m partlearn``: ``main``, then exit. After an interrupt the process ends
    at once (``os._exit``): threads still inside torch or a thread pool would otherwise
    be torn down by the interpreter's shutdown, which can abort ("terminate called
    without an active exception", exit 134) instead of exiting 130."""
    rc = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        rc = 141 if rc == 0 else rc
    if rc == 130:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(130)
    sys.exit(rc)


if __name__ == "__main__":
    entry_point()
