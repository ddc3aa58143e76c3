"""Method names and the blocks they read: ``"parts+global"`` (blocks concatenated),
``"parts|global"`` (late fusion of two methods' SVMs), ``"2level:parts[hier]"`` (a
two-level decision on its input); retrieval descriptors such as ``"parts+gem+w"``; which
stage makes a part-code block (``CODE_STAGES``, for the stages and the evaluators alike);
and each method's input (``method_features``)."""

from __future__ import annotations

import numpy as np

from .._arrays import l2_normalize

#: the part-code blocks, by the stage that makes their codes (in ``method_features``'
#: parameter order after ``global_``)
CODE_STAGES = {"parts": "encoding", "parts[unsup]": "encoding_unsup",
               "parts[hier]": "encoding_hier"}


def method_blocks(method: str) -> list[str]:
    """The descriptors a method uses: ``"parts[unsup]+global"`` (concatenated) and
    ``"parts[unsup]|global"`` (late fusion) → ``["parts[unsup]", "global"]``; a two-level
    method, its input's (``"2level:parts[hier]"`` → ``["parts[hier]"]``)."""
    return (two_level(method) or method).replace("|", "+").split("+")


def two_level(method: str) -> str | None:
    """``"2level:parts[hier]"`` → ``"parts[hier]"``: the input of a two-level decision."""
    return method.removeprefix("2level:") if method.startswith("2level:") else None


def fused(method: str) -> tuple[str, str] | None:
    """``"parts|global"`` → ``("parts", "global")``: a late fusion's two methods."""
    a, sep, b = method.partition("|")
    return (a, b) if sep else None


def descriptor_blocks(name: str) -> list[str]:
    """The blocks of a retrieval descriptor: ``"parts+gem+w"`` → ``["parts", "gem+w"]``
    (``+w``, whitened, belongs to the block before it)."""
    out: list[str] = []
    for piece in name.split("+"):
        if piece == "w" and out:
            out[-1] += "+w"
        else:
            out.append(piece)
    return out


def uses(cfg, block: str) -> bool:
    """Whether a classifier method, a retrieval descriptor or (with novel classes) a
    transfer method of ``cfg`` uses ``block`` (``"parts"``, ``"parts[unsup]"``): the
    stages behind a block run only then."""
    transfer = cfg.transfer.methods if cfg.transfer.on else ()
    return (any(block in method_blocks(m) for m in cfg.classifier.methods)
            or any(block in descriptor_blocks(d)
                   for d in cfg.retrieval.descriptors + transfer))


def method_features(method: str, global_=None, parts=None, parts_unsup=None,
                    parts_hier=None) -> np.ndarray:
    """The input of ``method``: ``global`` (L2-normalised global descriptor), ``parts``,
    ``parts[unsup]`` or ``parts[hier]`` (a part code, already normalised by the encoder),
    or several joined by ``+`` (each block L2-normalised, concatenated); a late fusion
    ``a|b`` takes the inputs of ``a`` and of ``b`` side by side (its model is the weighted
    concatenation of their SVMs'); ``2level:m``, ``m``'s."""
    method = two_level(method) or method
    if fused(method):
        return np.concatenate([method_features(m, global_, parts, parts_unsup, parts_hier)
                               for m in fused(method)], axis=1)
    inputs = dict(zip(("global", *CODE_STAGES), (global_, parts, parts_unsup, parts_hier)))
    names = method_blocks(method)
    if any(n not in inputs for n in names):
        raise ValueError(method)
    if names == ["global"]:
        return l2_normalize(global_, axis=1)
    if len(names) == 1:
        return np.asarray(inputs[names[0]], np.float32)
    return np.concatenate([l2_normalize(inputs[n], axis=1) for n in names], axis=1)
