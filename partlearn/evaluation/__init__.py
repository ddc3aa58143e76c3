"""What a run reports, one evaluator per module, over the cached stage outputs.

``evaluate(pipe, out)`` runs every registered evaluator in order: one that does
not apply is skipped with its reason, one that fails is logged with its name and
does not stop the others; ``results["evaluations"]`` says which was which, and
``results["timings"]`` holds what evaluators timed (kept apart from their results, so
that what the report draws does not change from run to run). The
report (``partlearn.report``) renders only what they return. Registering a new
evaluator is one line here.
"""

from __future__ import annotations

import logging
import traceback

from ._base import EvalContext, Evaluator
from ._stats import metrics, paired_comparison
from . import (accuracy, galleries, heatmaps, hierarchy, interpretability, localization,
               participation, retrieval, transfer)

logger = logging.getLogger(__name__)

EVALUATORS: tuple[Evaluator, ...] = (accuracy.EVALUATOR, localization.EVALUATOR,
                                     participation.EVALUATOR, galleries.EVALUATOR,
                                     heatmaps.EVALUATOR, retrieval.EVALUATOR,
                                     hierarchy.EVALUATOR, interpretability.EVALUATOR,
                                     transfer.EVALUATOR)


def evaluate(pipe, out, evaluators=EVALUATORS) -> dict:
    """The results of every evaluator that applies to the run ``pipe`` wrote into ``out``."""
    ctx = EvalContext(pipe, out)
    status, timings = {}, {}
    for ev in evaluators:
        missing = [s for s in ev.needs if s not in pipe.stages]
        try:
            reason = (f"the run has no {', '.join(missing)} stage" if missing
                      else ev.applies(ctx))
            if reason:
                logger.info("evaluation %s: skipped (%s)", ev.name, reason)
                status[ev.name] = {"status": "skipped", "reason": reason}
                continue
            found = ev.run(ctx)
        except Exception as e:  # noqa: BLE001 (one evaluator must not take the others down)
            logger.error("evaluation %s failed: %s: %s", ev.name, type(e).__name__, e)
            logger.debug("%s", traceback.format_exc())
            status[ev.name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            continue
        figures = found.pop("figures", [])
        timings.update(found.pop("timings", {}))
        ctx.results.update(found)
        if figures:
            ctx.results.setdefault("figures", []).extend(figures)
        status[ev.name] = {"status": "done"}
    return ctx.results | {"evaluations": status, "timings": timings}


__all__ = ["EVALUATORS", "Evaluator", "evaluate", "metrics",
           "paired_comparison"]
