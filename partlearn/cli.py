"""``partlearn`` command line: a thin ``main(argv)`` over the pipeline.

Exit codes: 0 success, 2 usage or configuration error, 1 runtime error
(bad data included), 130 interrupted. A user's mistake gets one clear line,
never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from ._validation import ConfigError, PartlearnError

logger = logging.getLogger("partlearn")


def _config(args):
    from .config import load_config

    overrides = list(args.set or [])
    if getattr(args, "device", None):
        overrides.append(f'features.device="{args.device}"')
    return load_config(args.config, overrides)


def _pipeline(args):
    from .runner import Pipeline

    return Pipeline(_config(args), cache_dir=args.cache_dir)


def cmd_run(args) -> int:
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
            extra = f"± {100 * m['top1_std']:.1f} over {len(m['seeds'])} seed(s)"
        print(f"{name:20s} top-1 {100 * m['top1']:5.1f}%  "
              f"mean class {100 * m['mean_class_accuracy']:5.1f}%  {extra}")
    anon = (summary.get("memory") or {}).get("peak_anon_mb")
    print(f"peak memory {summary['peak_memory_mb']:.0f} MB resident"
          + (f", {anon:.0f} MB the process's own (anonymous)" if anon is not None else ""))
    return 0


def cmd_compare(args) -> int:
    from .report import compare_runs

    externals = {}
    for item in args.external or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--external {item!r} should look like NAME=FILE.csv")
        externals[name] = path
    out = args.out or args.runs[0]
    compare_runs(args.runs, externals, out)
    print(f"report written to {Path(out) / 'report.html'} and {Path(out) / 'report.md'}")
    return 0


def cmd_explain(args) -> int:
    from .config import load_config
    from .explain import explain_image
    from .runner import Pipeline

    run = Path(args.run)
    if not (run / "config.toml").is_file():
        raise ConfigError(f"{run / 'config.toml'} is missing: is {run} a run directory of "
                          "`partlearn run`?")
    pipe = Pipeline(load_config(run / "config.toml"), cache_dir=args.cache_dir)
    info = explain_image(pipe, args.image, args.out or run / "explain", top=args.top,
                         model=args.model)
    print(f"predicted {info['predicted']}; top parts: "
          + ", ".join(f"{d['part']} ({d['score']:.1f})" for d in info["parts"]))
    print(f"written to {info['figure']}")
    return 0


def cmd_status(args) -> int:
    for row in _pipeline(args).status():
        print(f"{row['stage']:14s} {row['key']}  {row['state']}")
    return 0


def cmd_audit(args) -> int:
    from . import data as datasets

    cfg = _config(args)
    d = cfg.data
    if not d.root:
        raise ConfigError("data.root is not set: give it in the config or with --set data.root=PATH")
    manifest = datasets.read_dataset(d.root, format=d.format, csv=d.csv, classes=d.classes)
    audit = datasets.audit_dataset(manifest, min_side=d.min_side,
                                   min_train_per_class=d.min_train_per_class)
    text = datasets.audit_markdown(audit.report)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "audit.json").write_text(json.dumps(audit.report, indent=1))
        (out / "audit.md").write_text(text)
        logger.info("audit written to %s", out)
    print(text)
    return 0


def cmd_cache(args) -> int:
    from .cache import Cache, human_size

    cache_dir = args.cache_dir or "cache"
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
            from .config import load_config
            from .runner import Pipeline

            keep = set()
            for path in args.keep:
                pipe = Pipeline(load_config(path), cache_dir=cache_dir)
                keep.update(pipe.entries())
        removed = cache.gc(keep)
    skipped = [r for r in removed if "skipped" in r]
    removed = [r for r in removed if "skipped" not in r]
    for r in removed:
        print(f"removed {r['stage']} {r['key']} ({human_size(r['bytes'])})")
    for r in skipped:
        print(f"kept    {r['stage']} {r['key']} ({human_size(r['bytes'])}): {r['skipped']}")
    print(f"{len(removed)} entries removed, {human_size(sum(r['bytes'] for r in removed))} freed")
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

    compare = sub.add_parser("compare", help="rebuild the comparison report from finished "
                             "runs (nothing is recomputed)")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--external", action="append", metavar="NAME=FILE.csv",
                         help="another implementation's test predictions "
                              "(image_id,predicted_label), scored on the same split")
    compare.add_argument("--out", help="where to write the report (default: the first run)")
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


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (``kill``, a scheduler's time limit) stops the command as Ctrl-C does;
    the previous handler is back afterwards. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        with _sigterm_interrupts():
            return args.func(args)
    except PartlearnError as e:
        print(f"partlearn: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a full disk or a folder one cannot write (the run directory...)
        if e.errno not in _DISK_ERRNOS:
            raise
        print(f"partlearn: error: {e.filename or 'a file'}: {e.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("partlearn: interrupted; finished shards are kept and a re-run resumes",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
