"""A finished run directory as a model: ``export_model`` writes its model folder,
``load_model`` reads a model folder or a run directory (its ``Pipeline``, the one part
of ``partlearn.model`` that needs the runner)."""

from __future__ import annotations

from pathlib import Path

from .._validation import ConfigError
from ..config import load_config
from ._export import gather
from ._files import MODEL_FILE, check_out, read_model, write_model
from ._model import PartlearnModel


def run_pipeline(run_dir, cache_dir=None):
    """The ``Pipeline`` of a finished run directory (its ``config.toml``; the cache it used,
    or ``cache_dir``)."""
    from ..runner import Pipeline

    run = Path(run_dir)
    if not (run / "config.toml").is_file():
        raise ConfigError(f"{run / 'config.toml'} is missing: is {run} a run directory of "
                          "`partlearn run`?")
    return Pipeline(load_config(run / "config.toml"), cache_dir=cache_dir)


def export_model(run_dir, out_dir, cache_dir=None) -> Path:
    """Write the model of the finished run ``run_dir`` (its stages in the cache it used, or
    in ``cache_dir``) into the folder ``out_dir``: ``model.json`` and ``.npy`` arrays,
    everything ``load_model`` needs, nothing of the cache or the data."""
    check_out(out_dir)  # before any work
    pipe = run_pipeline(run_dir, cache_dir)
    meta, arrays = gather(pipe, str(Path(run_dir).resolve()))
    return write_model(out_dir, meta, arrays)


def load_model(path, *, weights: str | None = None, device: str | None = None,
               n_jobs: int = -1, cache_dir=None) -> PartlearnModel:
    """The model in ``path``: a folder written by ``partlearn export`` (``export_model``),
    or a finished run directory (its model read from the cache it used, or ``cache_dir``).
    ``weights``: the backbone's weights file where the run's path does not hold it here
    (checked by its sha256); ``device``: "auto", "cpu", "cuda"; ``n_jobs``: CPU tasks."""
    path = Path(path)
    if (path / MODEL_FILE).is_file() or not (path / "config.toml").is_file():
        meta, arrays = read_model(path)
        where = str(path / MODEL_FILE)
    else:
        meta, arrays = gather(run_pipeline(path, cache_dir), str(path))
        where = str(path)
    return PartlearnModel(meta, arrays, where, weights=weights, device=device, n_jobs=n_jobs)
