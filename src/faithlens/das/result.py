"""``DASResult``: a learned alignment with its IIA, EMD and training history."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from .. import validate as V
from ..errors import InputError
from ..results import Estimate, Interval, Result, with_intervals
from .alignment import Alignment, alignment_from_flat

if TYPE_CHECKING:
    from ..interventions import Interchange
    from ..models.model import Model
    from ..tasks.interchange import InterchangeData
    from .featurizer import FeaturizerPair
    from .train import AlignmentEval

#: Every control an alignment result can carry, in the order it lists them.
ALL_CONTROLS = ("task", "random_init", "random_subspace")

#: What ``fl.das`` measures unless told otherwise: the control that trains nothing.
DEFAULT_CONTROLS = ("random_subspace",)


@dataclass(frozen=True)
class DASResult(Result):
    """The outcome of :func:`faithlens.das`.

    ``iia`` (± ``iia_se``, 95% bootstrap interval ``iia_low``..``iia_high``): interchange
    intervention accuracy of the selected checkpoint on the training data. ``emd``: exact earth
    mover's distance ``W2^2 / 2`` (:func:`faithlens.divergence.emd`) of the intervened
    activations from the natural ones over every unit; ``emd_features``: the same on ``emd_dims`` only. ``history``: one row per epoch.
    ``alignment`` rebuilds the learned module (``alignment_spec`` + ``alignment_params``), and
    :meth:`intervention` turns it into an ``fl.Interchange`` for any run.

    ``controls``: the controls that were run (:mod:`faithlens.das.result_controls`; by default
    ``("random_subspace",)``, the one that trains nothing), in the order of
    ``("task", "random_init", "random_subspace")``; ``control_iia`` and ``selectivity`` (``iia -
    control_iia``, paired by example), each with ``_se`` / ``_low`` / ``_high`` (bootstrap,
    95%), have one entry per control run. A control that was not run has no entry: ``summary``
    names it "not run", :meth:`controls_frame` gives it the status ``"not run"``, and
    :meth:`control` refuses it with the call that runs it. (A result saved before controls
    existed loads with none run.)

    ``intervals()``: ``iia``, ``control_iia``, ``selectivity`` (bootstrap, 95%) and the point
    values ``emd`` and ``emd_features``, whose standard error and interval are NaN (one exact
    EMD, nothing resampled). The frame is the training history (one row per epoch, its ``iia``
    the running training accuracy of that epoch, not an estimate with an interval); the controls
    are in :meth:`controls_frame`.
    """

    method: str
    site: str
    dims: tuple[int, ...]
    loss: str
    cl_form: str
    cl_weight: float
    epochs: int
    select: str
    selected_epoch: int
    seed: int
    n: int
    iia: float
    iia_se: float
    iia_low: float
    iia_high: float
    emd: float
    emd_features: float
    emd_dims: tuple[int, ...]
    boundary: float
    history: pd.DataFrame
    alignment_spec: dict[str, Any]
    alignment_params: np.ndarray
    data_name: str = ""
    positions: Any = None  # the site's position selection ("last", an int, a list) or None
    controls: tuple[str, ...] = ()
    draws: int = 0
    control_iia: np.ndarray = field(default_factory=lambda: np.zeros(0))
    control_iia_se: np.ndarray = field(default_factory=lambda: np.zeros(0))
    control_iia_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    control_iia_high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    selectivity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    selectivity_se: np.ndarray = field(default_factory=lambda: np.zeros(0))
    selectivity_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    selectivity_high: np.ndarray = field(default_factory=lambda: np.zeros(0))

    kind = "das"

    #: Every control a result can carry, in the order it lists them.
    ALL_CONTROLS: ClassVar[tuple[str, ...]] = ALL_CONTROLS

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "iia": Estimate("iia", "iia_se", "iia_low", "iia_high", level=0.95),
        "emd": Estimate("emd", level=0.95),
        "emd_features": Estimate("emd_features", level=0.95),
        "control_iia": Estimate(
            "control_iia", "control_iia_se", "control_iia_low", "control_iia_high", level=0.95
        ),
        "selectivity": Estimate(
            "selectivity", "selectivity_se", "selectivity_low", "selectivity_high", level=0.95
        ),
    }

    def control(self, name: str) -> tuple[Interval, Interval]:
        """(control IIA, selectivity) of control ``name``; a control that was not run is
        refused with the call that runs it."""
        V.choice("name", name, self.ALL_CONTROLS)
        run = list(self.controls)
        if name not in run:
            raise InputError(
                f"name={name!r}: the {name} control was not run for this result (it ran "
                f"{run or 'none'}); run it with fl.das(..., controls={[*run, name]!r})"
            )
        i = run.index(name)
        return self.interval_of("control_iia")[i], self.interval_of("selectivity")[i]

    def controls_frame(self) -> pd.DataFrame:
        """One row per control of :attr:`ALL_CONTROLS`: ``status`` (``"run"`` / ``"not run"``),
        the IIA, the control IIA and the selectivity with their ``_se`` / ``_ci_low`` /
        ``_ci_high`` and ``level`` columns (NaN where ``status`` is ``"not run"``)."""
        names = list(self.ALL_CONTROLS)
        c, run = len(names), list(self.controls)
        where = [run.index(n) if n in run else -1 for n in names]

        def spread(iv: Interval) -> Interval:
            e, se, lo, hi = (
                np.array(
                    [
                        np.asarray(p, dtype=np.float64).reshape(-1)[i] if i >= 0 else np.nan
                        for i in where
                    ]
                )
                for p in iv.parts
            )
            return Interval(e, se, lo, hi, iv.level)

        iia = self.interval_of("iia")
        status = ["run" if i >= 0 else "not run" for i in where]
        nan = np.full(c, np.nan)
        frame = pd.DataFrame(
            {"control": names, "status": status, "iia": nan, "control_iia": nan, "selectivity": nan}
        )
        e, se, lo, hi = (np.full(c, float(np.asarray(p))) for p in iia.parts)
        ivs = {
            "iia": Interval(e, se, lo, hi, iia.level),
            "control_iia": spread(self.interval_of("control_iia")),
            "selectivity": spread(self.interval_of("selectivity")),
        }
        return with_intervals(frame, ivs)

    def site_spec(self) -> Any:
        """The aligned site with its position selection."""
        import torch

        from ..models.sites import Site

        p = self.positions
        if isinstance(p, dict) and "tensor" in p:
            p = torch.tensor(p["tensor"], dtype=torch.long)
        return Site(self.site, positions=p)

    @cached_property
    def alignment(self) -> Alignment:
        """The learned alignment (an ``nn.Module`` with ``forward`` / ``inverse``)."""
        return alignment_from_flat(self.alignment_spec, self.alignment_params)

    def intervention(self, source: Any, *, site: Any = None, rows: Any = None) -> Interchange:
        """``fl.Interchange`` at the site with the learned basis and dims, from ``source``."""
        from ..interventions import Interchange

        return Interchange(
            site if site is not None else self.site_spec(),
            basis=self.alignment,
            dims=list(self.dims),
            source=source,
            rows=rows,
        )

    def featurizer(self) -> FeaturizerPair:
        """The learned alignment as an MIB-style featurizer / inverse featurizer pair on the
        aligned dims (:mod:`faithlens.das.featurizer`)."""
        from .featurizer import featurizer_pair

        return featurizer_pair(self.alignment, self.dims, meta={"site": self.site})

    def export_featurizer(self, folder: Any, *, overwrite: bool = False) -> Any:
        """Write :meth:`featurizer` as ``featurizer.safetensors`` + ``featurizer.json`` to
        ``folder`` (:func:`~faithlens.das.featurizer.export_featurizer`); returns the folder."""
        from .featurizer import export_featurizer

        return export_featurizer(
            self.alignment, self.dims, folder, site=self.site, overwrite=overwrite
        )

    def evaluate(
        self,
        model: Model,
        data: InterchangeData,
        *,
        site: Any = None,
        emd_dims: Any = None,
        seed: int = 0,
    ) -> AlignmentEval:
        """IIA and EMD of the learned alignment on other data (e.g. another task: OOD)."""
        from .train import evaluate_alignment

        dims = emd_dims if emd_dims is not None else (list(self.emd_dims) or None)
        return evaluate_alignment(
            model,
            self.alignment,
            data,
            site if site is not None else self.site_spec(),
            dims=list(self.dims),
            emd_dims=dims,
            seed=seed,
        )

    def to_frame(self) -> pd.DataFrame:
        return self.history.copy()

    def summary(self) -> str:
        what = {"rotation": "DAS", "boundless": "Boundless DAS", "linear": "DAS (invertible)"}
        name = what.get(self.method, self.method)
        loss = (
            self.loss
            if not self.cl_form
            else f"{self.loss} (CL {self.cl_form}, eps={self.cl_weight:g})"
        )
        lines = [
            f"{name} at {self.site}: {len(self.dims)} aligned dim(s), loss {loss}, "
            f"{self.epochs} epochs, checkpoint by {self.select} (epoch {self.selected_epoch})",
            f"  IIA  = {self.interval_of('iia'):.4f}  (95% CI, n={self.n})",
            f"  EMD (all units) = {self.emd:.4g}",
        ]
        if self.emd_dims:
            lines.append(f"  EMD (feature dims {list(self.emd_dims)}) = {self.emd_features:.4g}")
        if np.isfinite(self.boundary):
            lines.append(f"  learned boundary = {self.boundary:.3f}")
        lines += self._control_lines()
        return "\n".join(lines)

    def _control_lines(self) -> list[str]:
        out = []
        for name in self.controls:
            ctl, sel = self.control(name)
            what = f"{name} ({self.draws} draws)" if name == "random_subspace" else name
            out.append(f"  control {what}: IIA {ctl:.3f}, selectivity {sel:.3f}")
        missing = [c for c in self.ALL_CONTROLS if c not in self.controls]
        if missing:
            out.append(
                f"  controls not run: {', '.join(missing)} (fl.das(..., controls=...) runs them)"
            )
        return out


__all__ = ["ALL_CONTROLS", "DEFAULT_CONTROLS", "DASResult"]
