"""The pipeline's stages, one module each, in the order a run computes them.

Each module declares a ``STAGE`` (``partlearn.stages._base.Stage``); registering a
new stage is one line here. ``partlearn.runner`` wires them.
"""

from ._base import Context, Stage
from . import (classifier, dataset, descriptors, dpnet, encoding, encoding_cv,
               encoding_hier, encoding_unsup, features, groups, hierarchy, multiscale, parts, parts_class,
               parts_group, parts_unsup, pca, regions)

STAGES: tuple[Stage, ...] = (
    dataset.STAGE, regions.STAGE, features.STAGE, multiscale.STAGE, pca.STAGE, parts.STAGE,
    encoding.STAGE, encoding_cv.STAGE, groups.STAGE, parts_unsup.STAGE, encoding_unsup.STAGE,
    hierarchy.STAGE, parts_group.STAGE, parts_class.STAGE, encoding_hier.STAGE,
    classifier.STAGE, dpnet.STAGE, descriptors.STAGE)
BY_NAME = {s.name: s for s in STAGES}
NAMES = tuple(BY_NAME)

#: Config fields that no stage declares, and why they cannot change a cached output.
NOT_KEYED = {
    "name": "the run directory's prefix",
    "cache_dir": "where the entries are stored",
    "n_jobs": "how many workers; every class and fold is seeded on its own, and every "
              "feature shard runs on one torch thread whatever n_jobs is",
    "backend": "where the independent tasks run: the same functions on the same inputs "
               "give the same results (tested, local against dask)",
    "dask.scheduler": "where the dask backend's tasks run",
    "dask.n_workers": "how many workers the dask backend starts",
    "dask.timeout": "how long the dask backend waits for its scheduler",
    "dask.gpu_resource": "which dask workers get the feature-extraction tasks",
    "hierarchy.taxonomy": "the hierarchy stage hashes the file's contents, not its path",
    "data.root": "the dataset stage hashes the files themselves (relative paths, "
                 "contents): the same files elsewhere are the same data",
    "features.device": "its effect, the precision, is keyed by the features stage "
                       "('precision': fp32, or the CUDA autocast dtype)",
    "features.amp": "keyed through 'precision' as well (fp32 on the CPU whatever it says)",
    "features.batch_size": "batches hold images of one size; an image's features do not "
                           "depend on the others' beyond float rounding",
    "features.workers": "processes that decode images",
    "features.shard_size": "the shard layout is fixed when an entry's write begins "
                           "(layout.json); a resumed write keeps it",
    "encoding.device": "numpy or torch products: equal to float32 rounding (tested)",
    "encoding.batch_images": "images per block of the products: float rounding only",
    "classifier.memory_mb": "the torch solver's row blocks: the same fit to float rounding "
                            "(tested); liblinear past it stops with an error, caching nothing",
    "classifier.n_bootstrap": "read by the accuracy evaluator, which runs on every run "
                              "and caches nothing",
    "dpnet.device": "CPU or CUDA: float rounding only",
    "retrieval.descriptors": "read by the retrieval evaluator, which caches nothing",
    "retrieval.ks": "read by the retrieval evaluator, which caches nothing",
    "retrieval.rerank": "read by the retrieval evaluator, which caches nothing",
    "retrieval.qe_neighbours": "read by the retrieval evaluator, which caches nothing",
    "retrieval.aqe_alpha": "read by the retrieval evaluator, which caches nothing",
    "retrieval.diffusion_k": "read by the retrieval evaluator, which caches nothing",
    "retrieval.diffusion_alpha": "read by the retrieval evaluator, which caches nothing",
    "retrieval.diffusion_gamma": "read by the retrieval evaluator, which caches nothing",
    "retrieval.index": "read by the retrieval evaluator, which caches nothing",
    "retrieval.nprobe": "read by the retrieval evaluator, which caches nothing",
}

__all__ = ["BY_NAME", "Context", "NAMES", "NOT_KEYED", "STAGES", "Stage"]
