"""A finished run as a portable model: ``export_model`` writes what prediction needs
(``model.json`` and ``.npy`` arrays, no pickle), ``load_model`` reads it back (or takes
a run directory and its cache) as a ``PartlearnModel`` with ``predict``,
``decision_function`` and ``transform`` on image files or PIL images, computed as the
run computes its test images; ``predict_files`` and ``write_csv``: bulk prediction."""

from ._model import PartlearnModel
from ._predict import image_inputs, predict_files, write_csv
from ._run import export_model, load_model

__all__ = ["PartlearnModel", "export_model", "image_inputs", "load_model", "predict_files",
           "write_csv"]
