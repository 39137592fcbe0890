"""The life of a pruned method's edge masks, shared by pruned_mas and pruned_latent_mas: where the learned
logits come from (a given masks.json, the run's own on resume, calibration, or none at prune rate 0), and
how they are kept (masks.json and masks.png in the run directory). The graph, the optimiser and the
calibration loop are in methods/agent_graph.py; what a masks file holds is each method's own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import field_validator, model_validator

from mascompare.errors import UserError
from mascompare.methods.agent_graph import (
    GRAPH_DRAWS,
    PRUNE_COUNTS,
    TEST_GRAPHS,
    EdgePolicy,
    calibrate,
    prune,
    refuse_calibration_overlap,
)
from mascompare.settings import NonNegativeInt, PositiveInt, Section, choice, wanted
from mascompare.tasks.base import CALIBRATION_SPLITS

MASKS_FILE = "masks.json"
MASKS_PICTURE = "masks.png"
SPLITS = ("auto", *CALIBRATION_SPLITS)


class CalibrationSettings(Section):
    """`method.calibration` (conf/method/pruned_mas.yaml explains each knob)."""

    split: Annotated[Literal[SPLITS], choice(SPLITS)]
    seed: Annotated[int | None, wanted("a non-negative integer or null", ge=0)]
    size: PositiveInt
    iterations: PositiveInt
    batch_size: PositiveInt
    graphs_per_question: PositiveInt
    lr: Annotated[float, wanted("a positive number", gt=0, allow_inf_nan=False)]
    initial_probability: Annotated[float, wanted("a number in (0, 1)", gt=0, lt=1)]
    baseline_momentum: Annotated[float | None, wanted("a number in [0, 1), or null for no baseline", ge=0, lt=1)]
    lowrank_weight: Annotated[float, wanted("a non-negative number", ge=0, allow_inf_nan=False)]
    anchor_weight: Annotated[float, wanted("a non-negative number", ge=0, allow_inf_nan=False)]
    delta: Annotated[float, wanted("a non-negative number", ge=0, allow_inf_nan=False)]


class MaskSettings(Section):
    """The knobs both pruned methods share (beside their agents)."""

    prune_rate: Annotated[float, wanted("a number in [0, 1)", ge=0, lt=1)]
    prune_count: Annotated[Literal[PRUNE_COUNTS], choice(PRUNE_COUNTS)]
    prune_every: Annotated[int | None, wanted("null (prune once, after calibration) or a positive integer", ge=1)]
    graph_draw: Annotated[Literal[GRAPH_DRAWS], choice(GRAPH_DRAWS)]
    test_graph: Annotated[Literal[TEST_GRAPHS], choice(TEST_GRAPHS)]
    masks: Annotated[str | None, wanted("a masks.json that a run wrote, or null")]
    seed: NonNegativeInt
    calibration: CalibrationSettings

    @model_validator(mode="after")
    def schedule_fits_calibration(self):
        every, iterations = self.prune_every, self.calibration.iterations
        if every is not None and iterations % every:
            raise ValueError(f"method.prune_every={every} must divide method.calibration.iterations={iterations}, so "
                             "that the last pruning ends calibration; change either, or set prune_every to null.")
        return self

    def learning_rules(self) -> dict:
        """What decides how the evaluated graph was pruned (masks.json keeps it; reused masks must agree)."""
        return {"prune_rate": self.prune_rate, "prune_count": self.prune_count, "prune_every": self.prune_every}

    @field_validator("masks")
    @classmethod
    def masks_file_exists(cls, masks: str | None) -> str | None:
        if masks is not None and not Path(masks).is_file():
            raise ValueError(f"method.masks names {masks!r}, which is not a file; give a masks.json that a run "
                             "wrote, or null.")
        return masks


def learned_logits(policy: EdgePolicy, settings: MaskSettings, *, run_dir: Path | None, resume: bool, evaluated,
                   task, accountant, execute, read: Callable[[Path, EdgePolicy], dict], rounds: int = 1,
                   examples: set[str] = frozenset()) -> tuple[dict, dict | None]:
    """Fill `policy` with the logits this run evaluates with; returns the calibration summary and the data of the
    masks file they came from (None when they were not read from one).

    In order: method.masks (saved logits, pruned again at this run's rate, no calibration); the run's own
    masks.json when resuming (the graph its earlier samples used); calibration when prune_rate > 0; else the
    unpruned starting graph. `read(path, policy)` fills the policy from a masks file of the method's format and
    returns the file's data. Saved masks learned on questions this run evaluates are refused; calibration
    questions avoid the evaluated ones and the worked examples (`examples`: question hashes).
    """
    own = run_dir / MASKS_FILE if run_dir is not None else None
    path = Path(settings.masks) if settings.masks is not None else own if own is not None and resume \
        and own.is_file() else None
    if path is not None:
        data = read(path, policy)
        calibration = dict(data.get("calibration") or {})
        refuse_calibration_overlap(calibration, evaluated, path)
        return {**calibration, "reused_from": str(path)}, {**data, "path": str(path)}
    if settings.prune_rate > 0:
        return calibrate(policy, settings, task, accountant, evaluated, execute, rounds, examples), None
    return {"performed": False, "reason": "method.prune_rate is 0: the unpruned starting graph"}, None


def pruned_masks(policy: EdgePolicy, settings: MaskSettings, saved: dict | None) -> dict[str, np.ndarray]:
    """The masks left after pruning, per kind (masks that are not learned stay whole).

    One-shot (prune_every null): the starting edges pruned at prune_rate by learned logit. Iterative: what the
    schedule left during calibration, or, for saved masks, the pruned masks the file holds, which must have been
    pruned by the same rules (an iterative schedule cannot be replayed from the final logits)."""
    if settings.prune_every is None or settings.prune_rate == 0:
        return {k: prune(policy.masks[k], policy.scores(k), settings.prune_rate, settings.prune_count)
                if k in policy.learned else policy.masks[k].copy() for k in policy.masks}
    if saved is None:
        return {k: policy.alive[k].copy() for k in policy.masks}
    if saved.get("learning_rules") != settings.learning_rules():
        raise UserError(f"The masks in {saved['path']} were pruned with {saved.get('learning_rules') or 'other rules'}"
                        f", but this run prunes with {settings.learning_rules()}; an iterative schedule cannot be "
                        "replayed from saved logits, so use the same method.prune_rate, prune_count and prune_every.")
    return {k: np.asarray(saved["pruned"][k], dtype=int) if k in policy.learned else policy.masks[k].copy()
            for k in policy.masks}


def keep_masks(run_dir: Path, data: dict, draw: Callable[[Path], None]) -> Path:
    """masks.json (written whole or not at all: a run killed while writing leaves the old one) and masks.png."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / MASKS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    draw(run_dir / MASKS_PICTURE)
    return path


def read_masks(path: Path, masks_format: str, method: str, names: list[str], what: str) -> dict:
    """The contents of a masks file that `method` wrote in `masks_format` for graph nodes `names`; one clear
    error otherwise (`what` says which settings name the nodes)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"Could not read the masks file {path} ({exc}).") from exc
    if not isinstance(data, dict) or data.get("format") != masks_format:
        raise UserError(f"{path} is not a masks file written by {method} (format {masks_format}).")
    if data.get("agents") != names:
        raise UserError(f"The masks in {path} are for {what} {data.get('agents')}, but this run's are {names}.")
    return data


def stored_edges(path: Path, data: dict, where: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The initial mask and the learned logits a masks file keeps at `where` (keys under "initial" and "logits",
    e.g. ["spatial"]) for `n` graph nodes, as arrays; one clear error when either is not an n x n matrix, the mask
    not of 0s and 1s, or the logit of a potential edge not a finite number (null marks the others)."""

    def name(key: str) -> str:
        return ".".join([key, *where])

    def matrix(key: str) -> np.ndarray:
        value = data.get(key)
        for part in where:
            value = value.get(part) if isinstance(value, dict) else None
        try:
            array = np.asarray(value, dtype=float)  # null becomes NaN
        except (TypeError, ValueError):
            array = None
        if array is None or array.shape != (n, n):
            raise UserError(f"{name(key)} in the masks file {path} must be a {n} x {n} matrix of numbers (one row and "
                            f"column per graph node), got {json.dumps(value)[:80]}; restore the file, or give a "
                            "masks file this method wrote.")
        return array

    initial, logits = matrix("initial"), matrix("logits")
    if not np.isin(initial, (0, 1)).all():
        raise UserError(f"{name('initial')} in the masks file {path} must hold only 0 and 1, "
                        "got other values; restore the file, or give a masks file this method wrote.")
    bad = np.argwhere((initial == 1) & ~np.isfinite(logits))
    if len(bad):
        i, j = bad[0]
        raise UserError(f"{name('logits')} in the masks file {path} must be a finite number "
                        f"for every potential edge, got {logits[i, j]} at row {i}, column {j}; restore the file, "
                        "or give a masks file this method wrote.")
    return initial.astype(int), logits
