"""Choosing settings by cross-validation on the training split: ``tune``.

``tune(config, search, method=...)`` is a coordinate ascent over settings: it starts
from the config (each searched key at the config's own value when that value is among
the key's values, else at its first value), sets each key in turn to the value of best
cross-validated training accuracy of ``method`` with the other keys at their best so
far, and goes round again until a round changes nothing or ``rounds`` rounds have run.
A tie keeps the current value, then the earlier one in the key's list; CV figures equal
to 1e-10 tie (a mean over folds can differ in its last bit between two trials with as
many correct images). The config as given is a trial of its own ("(config)"), and so
is each of ``variants`` (sets of overrides tried beside the search).

A trial is a run of the pipeline (``Pipeline.run``) with the trial's overrides, every
stage through the runner's cache: a trial whose stages are cached costs nothing, and
its stages are the entries ``partlearn run`` of the chosen settings reuses. Every trial's
config is checked before any trial runs.

**The test split cannot change the choice.** The figure compared is the ``classifier``
stage's CV accuracy of ``method``: stratified folds of the training images, each fold
held out of part learning too with ``classifier.cv_parts`` (the ``encoding_cv`` stage),
exactly as the run reports it. It is a function of the training images alone: the folds
split the training labels; the SVMs of the CV and their scores see training rows only;
the parts, their background model and a PCA are fitted on training images; a training
image's regions, features and codes are computed from that image (batched with other
images of its size, whose contents do not enter its numbers). A trial runs the pipeline
only up to the classifier stage (``until="classifier"``, ``report=False``): no evaluator
runs, so no test accuracy exists, and the stages after the classifier (DP-Net,
retrieval descriptors) do not run. Of the classifier's entry, ``tune`` reads only
``method``'s fitted scalars (C and the CV figures), never its test scores or
predictions. The test images still pass through the stages before (their features and
codes are computed, and the classifier predicts them once fitted), because those cache
entries are the ones a run shares; their labels and pixels enter no training number.
``tests/test_tune.py`` changes every test label and every test image and finds each
trial's CV figure and the choice bit for bit the same. The run's own data checks still
apply to the whole dataset: an unreadable test image under ``data.on_bad_image =
"error"``, or a class without test images, stops a trial as it stops a run.

``tune`` writes into ``out``: ``tune.json`` (every trial, round and the choice),
``report.md`` / ``report.html`` (the table and a plot of CV accuracy per trial, via
``partlearn.report.write_tune_report``), ``chosen.toml`` (the complete config with the
chosen overrides applied, ``config.dump_toml``: ``partlearn run chosen.toml`` runs it;
``run`` takes one config file, so the chosen overrides are also listed as ``--set``
arguments for the original config) and ``trials/NN/`` (each trial's run directory:
its ``config.toml`` and ``results.json``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from . import _files
from .config import Config, _check_key, _parse_override, dump_toml, load_config, with_values
from ._validation import ConfigError

logger = logging.getLogger(__name__)

#: the full grid of a search is checked before anything runs up to this many points;
#: past it, each value with the other keys at their starting values (a cross-field rule
#: between two searched keys is then met when the search reaches the pair)
MAX_CHECKED = 2000
#: CV figures closer than this tie
TIE = 1e-10
CONFIG_TRIAL = "(config)"


@dataclass(frozen=True)
class Trial:
    """One evaluated config: ``number`` (1 first), ``overrides`` (``key=value`` on top of the
    config and ``sets``; empty for the config itself), ``changes`` (those of them that
    differ from the config's values: the table's column), ``round`` (0: the config or a
    variant), ``cv_accuracy`` and ``C`` of the method, ``computed`` (the stages this trial
    computed; empty: every stage was cached), ``seconds``, its ``run_dir`` and
    ``cv_by_method`` (the CV accuracy of every method the classifier fitted)."""

    number: int
    overrides: tuple[str, ...]
    changes: tuple[str, ...]
    round: int
    cv_accuracy: float
    C: float
    computed: tuple[str, ...]
    seconds: float
    run_dir: str
    cv_by_method: dict


@dataclass(frozen=True)
class TuneResult:
    """What ``tune`` found: ``trials`` in the order run, ``rounds`` (per round: the point it
    ended at, its CV figure and whether it changed a key), ``chosen`` (the overrides
    chosen, one per searched key; with no search, the best trial's), ``chosen_trial`` and
    ``converged`` (the last round changed nothing), ``out`` (the report's folder), the
    config's ``name``, and the CV's ``cv_folds``, ``cv_parts`` and ``n_train``."""

    config: str
    method: str
    sets: tuple[str, ...]
    search: tuple[tuple[str, tuple[str, ...]], ...]
    max_rounds: int
    trials: tuple[Trial, ...]
    rounds: tuple[dict, ...]
    chosen: tuple[str, ...]
    chosen_trial: int
    converged: bool
    out: str = ""
    name: str = ""
    cv_folds: int = 0
    cv_parts: bool = False
    n_train: int = 0

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def parse_search(spec: str) -> tuple[str, list[str]]:
    """``"key=v1,v2,..."`` → ``(key, [v1, v2, ...])``; values separated by ``;`` instead
    when one holds a comma (``features.pyramid=[];[320, 672]``)."""
    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--search {spec!r} should look like section.key=v1,v2,...")
    items = [v.strip() for v in values.split(";" if ";" in values else ",")]
    if not any(items):
        raise ConfigError(f"--search {spec!r}: no values; expected {key}=v1,v2,...")
    if not all(items):
        raise ConfigError(f"--search {spec!r}: an empty value; expected {key}=v1,v2,... "
                          "(values separated by ',', or by ';' when a value holds commas)")
    return key, items


def _value(cfg: Config, key: str):
    section, _, field = key.partition(".")
    return getattr(getattr(cfg, section), field) if field else getattr(cfg, section)


def _check_method(cfg: Config, method: str, where: str = "") -> None:
    if method not in cfg.classifier.methods:
        raise ConfigError(f"{where + ': ' if where else ''}--method {method!r} is not among the config's classifier.methods "
                          f"{list(cfg.classifier.methods)}: tune compares the CV accuracy of a "
                          "method the classifier fits; add it with --set "
                          f"'classifier.methods=[\"{method}\"]'")


class _Space:
    """The searched keys and their values, and the checks made before any trial runs."""

    def __init__(self, config, sets, search, variants, method):
        self.config, self.sets, self.method = config, list(sets), method
        self.base = load_config(config, self.sets)
        _check_method(self.base, method)
        self.keys = [k for k, _ in search]
        for k, key in enumerate(self.keys):
            if key in self.keys[:k]:
                raise ConfigError(f"--search {key}: given twice; give each key once with all "
                                  "its values")
            _check_key(key.split("."), f"--search {key}")
        self.values = {k: list(v) for k, v in search}
        self.parsed = {}  # (key, value as given): the value the config holds
        for key, values in self.values.items():
            if not values:
                raise ConfigError(f"--search {key}: no values; expected {key}=v1,v2,...")
            for v in values:
                self.parsed[key, v] = _value(self.config_of({key: v}, f"--search {key}={v}"), key)
        self.variants = [list(v) for v in variants]
        for variant in self.variants:
            for item in variant:
                _check_key(_parse_override(item)[0], f"--try {item}")
            _check_method(self.config_of({}, f"--try {';'.join(variant)}", variant), method)

    def config_of(self, point: dict, where: str, extra=()) -> Config:
        """The config with ``point``'s keys set (and ``extra`` overrides), built as
        ``load_config`` builds it from the file, ``sets`` and those overrides."""
        try:
            return load_config(self.config, self.sets + self.overrides(point) + list(extra))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def start(self) -> dict:
        """Each key at the config's value when it is among the key's values, else its first."""
        return {k: next((v for v in vals if self.parsed[k, v] == _value(self.base, k)), vals[0])
                for k, vals in self.values.items()}

    def overrides(self, point: dict) -> list[str]:
        return [f"{k}={point[k]}" for k in self.keys if k in point]

    def check_all(self) -> int:
        """Every point of the grid, or past ``MAX_CHECKED`` points every value with the other
        keys at their start (each already checked alone): the number of configs checked."""
        if not self.keys:
            return 0
        n = math.prod(len(v) for v in self.values.values())
        if n > MAX_CHECKED:
            start = self.start()
            points = [dict(start, **{k: v}) for k in self.keys for v in self.values[k]]
            logger.info("tune: %d points in the search's grid; checking each value with the "
                        "other keys at their start (%d configs)", n, len(points))
        else:
            points = [dict(zip(self.keys, combo))
                      for combo in itertools.product(*(self.values[k] for k in self.keys))]
        for point in points:
            try:  # as load_config does, without reading the file again for every point
                cfg = with_values(self.base, {k: _parse_override(f"{k}={point[k]}")[1]
                                              for k in self.keys})
            except ConfigError as e:
                raise ConfigError(f"--search: the combination {'; '.join(self.overrides(point))} "
                                  f"is not a valid config: {e}") from None
            _check_method(cfg, self.method, f"--search {'; '.join(self.overrides(point))}")
        return len(points)

    def changes(self, cfg: Config, overrides) -> tuple[str, ...]:
        """The overrides whose value differs from the config's (the table's column)."""
        return tuple(item for item in overrides
                     if _value(cfg, k := ".".join(_parse_override(item)[0]))
                     != _value(self.base, k))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def tune(config: str | Path, search: Sequence[tuple[str, Sequence[str]]] = (), *,
         method: str = "parts", rounds: int = 3, sets: Sequence[str] = (),
         variants: Sequence[Sequence[str]] = (), cache_dir=None,
         out: str | Path | None = None) -> TuneResult:
    """Choose settings by the training-split CV of ``method`` (see the module).

    ``config``: a pipeline TOML file; ``search``: ``[(key, [value, ...])]``, values as
    ``--set`` writes them (``parse_search`` reads ``key=v1,v2``); ``sets``: ``--set``
    overrides of every trial; ``variants``: lists of overrides, each a trial beside the
    search; ``rounds``: at most this many rounds of the ascent; ``cache_dir``: the stage
    store (default: the config's). Writes ``out`` (default ``runs/NAME-tune-TIMESTAMP``)
    and returns the ``TuneResult``. An unknown key, a value its setting rejects, an empty
    value list, ``rounds < 1`` or a ``method`` the config does not fit is a
    ``ConfigError`` before any trial runs.
    """
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ConfigError(f"--rounds {rounds}: expected 1 or more search rounds")
    if not search and not variants:
        raise ConfigError("tune: nothing to choose from; give --search KEY=V1,V2,... "
                          "(or --try variants)")
    space = _Space(config, sets, search, variants, method)
    n_checked = space.check_all()
    name = space.base.name
    out = Path(out) if out else Path("runs") / f"{name}-tune-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    logger.info("tune: %s, method %s, %d key(s) over at most %d round(s), %d config(s) "
                "checked; writing %s", config, method, len(space.keys), rounds, n_checked, out)
    search_run = _Search(space, rounds, cache_dir, out)
    result = search_run.run()
    _write(out, result, final=True, cache_dir=cache_dir)
    return result


class _Search:
    """``tune``'s state: the trials so far (each config run once, known by the classifier's
    cache key), their timing for the ETA, and the rounds."""

    def __init__(self, space: _Space, rounds: int, cache_dir, out: Path):
        self.space, self.rounds, self.cache_dir, self.out = space, rounds, cache_dir, out
        self.trials: list[Trial] = []
        self.by_key: dict[str, Trial] = {}
        self.seconds: list[float] = []  # of the trials that computed something
        self.done_rounds: list[dict] = []
        self.converged = False
        self.round_calls = 0  # trials asked for in this round (run or not)
        self.shared: dict = {}
        self.slots = sum(len(v) for v in space.values.values())  # trials in a round, at most
        self.bound = 1 + len(space.variants) + rounds * self.slots

    def result(self, chosen=(), chosen_trial=0) -> TuneResult:
        s = self.space
        return TuneResult(str(s.config), s.method, tuple(s.sets),
                          tuple((k, tuple(v)) for k, v in s.values.items()), self.rounds,
                          tuple(self.trials), tuple(self.done_rounds), tuple(chosen),
                          chosen_trial, self.converged, str(self.out), s.base.name,
                          **self.shared)

    def evaluate(self, overrides: list[str], round_: int) -> Trial:
        """The trial of the config with ``overrides``: run (up to the classifier) unless a
        trial of the same classifier key ran already."""
        from .runner import Pipeline

        space = self.space
        self.round_calls += bool(round_)
        cfg = load_config(space.config, space.sets + overrides)
        pipe = Pipeline(cfg, cache_dir=self.cache_dir)
        key = pipe.key("classifier")
        label = "; ".join(overrides) or CONFIG_TRIAL
        if key in self.by_key:
            same = self.by_key[key]
            logger.info("tune: %s is trial %d's config (CV %.2f%%), not run again", label,
                        same.number, 100 * same.cv_accuracy)
            return same
        number = len(self.trials) + 1
        run_dir = self.out / "trials" / f"{number:02d}"
        todo = [r["stage"] for r in pipe.status()[: pipe.stages.index("classifier") + 1]
                if r["state"] != "cached"]
        eta = ""
        if self.seconds:  # an ETA: the trials that computed so far, the round's trials left
            each = sum(self.seconds) / len(self.seconds)
            left = max(1, self.slots - self.round_calls + 1) if round_ else 1
            eta = (f"; ~{_minutes(each)} a trial that computes so far: ETA {_minutes(each)} "
                   f"for this one, at most {_minutes(each * left)} for this round's "
                   f"{left} trial(s) left")
        logger.info("tune: trial %d (of at most %d) [%s]: %s%s", number, self.bound, label,
                    f"computes {', '.join(todo)}" if todo else "every stage cached", eta)
        t0 = time.perf_counter()
        summary = pipe.run(until="classifier", out=run_dir, report=False)
        seconds = time.perf_counter() - t0
        meta = pipe.entry("classifier").meta  # each method's C and CV; no test prediction
        info = meta[space.method]
        computed = tuple(s for s, st in summary["stages"].items() if not st["cached"])
        if computed:
            self.seconds.append(seconds)
        trial = Trial(number, tuple(overrides), space.changes(cfg, overrides), round_,
                      float(info["cv_accuracy"]), float(info["C"]), computed,
                      round(seconds, 3), str(run_dir),
                      {m: float(meta[m]["cv_accuracy"]) for m in cfg.classifier.methods})
        if not self.shared:
            self.shared = {"cv_folds": int(cfg.classifier.cv_folds),
                           "cv_parts": bool(info.get("cv_parts")),
                           "n_train": int(len(pipe.dataset.train))}
        self.trials.append(trial)
        self.by_key[key] = trial
        logger.info("tune: trial %d [%s]: CV %.2f%%, C=%g, %s", number, label,
                    100 * trial.cv_accuracy, trial.C,
                    f"computed in {_minutes(seconds)}" if computed else "cached")
        _write(self.out, self.result())
        return trial

    def run(self) -> TuneResult:
        space = self.space
        self.evaluate([], 0)
        for variant in space.variants:
            self.evaluate(variant, 0)
        if not space.keys:  # variants only: the best trial, ties to the earlier (the config)
            best = max(self.trials, key=lambda t: (round(t.cv_accuracy / TIE), -t.number))
            return self.result(best.overrides, best.number)

        def score(point: dict, round_: int) -> float:
            return self.evaluate(space.overrides(point), round_).cv_accuracy

        def ended(r: int, point: dict, cv: float, changed: bool) -> None:
            self.done_rounds.append({"round": r, "overrides": space.overrides(point),
                                     "cv_accuracy": cv, "changed": changed})
            self.round_calls = 0
            logger.info("tune: round %d: %s, CV %.2f%%%s", r, "; ".join(space.overrides(point)),
                        100 * cv, "" if changed else ": no change, converged")

        point, self.converged = coordinate_ascent(space.values, space.start(), score,
                                                  self.rounds, ended)
        chosen = space.overrides(point)
        return self.result(chosen, self.evaluate(chosen, 0).number)


def coordinate_ascent(values: dict, start: dict, score, rounds: int, ended=None
                      ) -> tuple[dict, bool]:
    """Coordinate ascent over ``values`` (``{key: [value, ...]}``) from ``start``: each key
    in turn set to the value of best ``score(point, round)`` with the other keys at their
    best so far; ties (to ``TIE``) keep the current value, then the earlier one in the
    key's list. Round after round until a round changes nothing (converged) or
    ``rounds`` have run; ``ended(round, point, score, changed)`` after each. Returns the
    point and whether it converged. ``score`` is called again for a point already scored
    (``tune`` answers those from its trials)."""
    current = dict(start)
    for r in range(1, rounds + 1):
        changed = False
        for key, options in values.items():
            scores = {v: score(dict(current, **{key: v}), r) for v in options}
            best = max(options, key=lambda v: (round(scores[v] / TIE), v == current[key]))
            changed |= best != current[key]
            current[key] = best
        if ended is not None:
            ended(r, dict(current), score(dict(current), r), changed)
        if not changed:
            return current, True
    return current, False


def chosen_config(result: TuneResult, cache_dir=None) -> Config:
    """The config the search chose: the config file with ``sets`` and the chosen
    overrides, ``data.root`` absolute and ``cache_dir`` the store the trials used (as a
    run directory records it), so that ``partlearn run chosen.toml`` reuses their stages
    from anywhere."""
    from .runner import Pipeline

    cfg = load_config(result.config, list(result.sets) + list(result.chosen))
    return Pipeline(cfg, cache_dir=cache_dir).recorded_config()


def _write(out: Path, result: TuneResult, final: bool = False, cache_dir=None) -> None:
    """``tune.json`` after every trial; at the end the report and ``chosen.toml``."""
    _files.write_text(out / "tune.json", json.dumps(result.to_dict(), indent=1))
    if not final:
        return
    from .report import run_arguments, write_tune_report

    header = (f"# chosen by `partlearn tune` (the training-split CV of {result.method}, trial "
              f"{result.chosen_trial}): the complete config, the same as\n"
              f"# partlearn run {run_arguments(result.to_dict())}\n")
    _files.write_text(out / "chosen.toml", header + dump_toml(chosen_config(result, cache_dir)))
    write_tune_report(result.to_dict(), out)


__all__ = ["CONFIG_TRIAL", "Trial", "TuneResult", "chosen_config", "coordinate_ascent",
           "parse_search", "tune"]
