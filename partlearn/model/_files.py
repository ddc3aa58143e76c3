"""A model folder: ``model.json`` (settings, classes, methods, identities, and the sha256 of
every array file) and one ``.npy`` per array. No pickles. Written whole or not at all
(``_files.replacing_folder``); read back with every file checked against its sha256."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from .. import _files
from .._validation import ConfigError, DataError

FORMAT = 1
MODEL_FILE = "model.json"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_out(out: Path) -> None:
    """``out`` is new, an empty folder, or a model folder (replaced): never another file or
    a folder of something else."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; expected a folder for the model (or a path that "
                          "does not exist yet)")
    if out.is_dir() and any(out.iterdir()) and not (out / MODEL_FILE).is_file():
        raise ConfigError(f"{out}: a folder that holds other files, not a model; give a new or "
                          "empty folder (a model folder is replaced whole)")


def write_model(out, meta: dict, arrays: dict) -> Path:
    """``meta`` as ``model.json`` (with ``files``: each array file's sha256) and every
    array as ``<name>.npy``, into the folder ``out``, all or nothing."""
    out = Path(out)
    check_out(out)
    with _files.replacing_folder(out) as tmp:
        files = {}
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.asarray(array), allow_pickle=False)
            (tmp / f"{name}.npy").write_bytes(buf.getvalue())
            files[f"{name}.npy"] = _sha256(buf.getvalue())
        text = json.dumps(meta | {"format": FORMAT, "files": files}, indent=1)
        (tmp / MODEL_FILE).write_text(text, encoding="utf-8")
    return out


def read_model(folder) -> tuple[dict, dict]:
    """``(meta, arrays)`` of a model folder; one ``ConfigError`` (not a model folder) or
    ``DataError`` (a file missing, damaged, of another format) naming the file."""
    folder = Path(folder)
    file = folder / MODEL_FILE
    if not folder.is_dir():
        raise ConfigError(f"{folder}: " + ("is a file" if folder.exists() else "does not exist")
                          + "; expected a model folder written by `partlearn export`")
    if not file.is_file():
        raise ConfigError(f"{file} is missing: is {folder} a model folder written by "
                          "`partlearn export`?")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{file}: damaged, not JSON ({e}); export the model again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(f"{file}: model format {got!r}; this partlearn reads format {FORMAT} "
                        "(export the model again with it)")
    arrays = {}
    for name, digest in dict(meta.get("files") or {}).items():
        path = folder / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: missing; the model folder is incomplete (copy it whole, "
                            "or export the model again)") from None
        if _sha256(data) != digest:
            raise DataError(f"{path}: damaged (its sha256 is not the one {MODEL_FILE} "
                            "records); copy the model folder again or export it again")
        arrays[name.removesuffix(".npy")] = np.load(io.BytesIO(data), allow_pickle=False)
    return meta, arrays
