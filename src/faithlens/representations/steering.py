"""Steering: what to write into the residual stream while a model reads and generates.

A :class:`Steering` holds one vector per site and says *how* (``operator``) and *when*
(``when``, ``first_k``) to apply it:

- ``operator="add"``: ``h <- h + v`` (RepE's ``linear_comb``; the vector carries the coefficient);
- ``operator="project_out"``: ``h <- h - <h, r> r`` with ``r = v / |v|`` (ablation of the
  direction; RepE's "termination" test);
- ``when="all"``: at every prompt position and at every generated token (RepE's default,
  continual injection); ``"prompt"``: only while the prompt is read (one-shot: the generated
  tokens are not edited); ``"generated"``: only at generated tokens;
- ``first_k``: edit only the first ``k`` generated tokens (``when`` "all" or "generated");
- ``prompt="all"``: edit every prompt token (RepE), or ``"last"``: only the prompt's last token.

It turns into ordinary engine interventions (:class:`~faithlens.Add`,
:class:`~faithlens.Project`) with the right positions for each forward pass of a generation
(:func:`~faithlens.representations.generation.generate`) or of a teacher-forced scoring run
(:func:`~faithlens.representations.generation.continuation_logprobs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import InputError, ShapeError
from ..interventions import Add, Intervention, Project
from ..models.sites import Site

if TYPE_CHECKING:
    from ..models.model import Model

OPERATORS = ("add", "project_out")
WHEN = ("all", "prompt", "generated")


@dataclass(frozen=True, eq=False)
class Steering:
    """Vectors to write at sites (``{"resid_post.12": v, ...}``), how and when.

    See the module docstring for ``operator``, ``when`` and ``first_k``. ``label`` names the
    condition in results.
    """

    vectors: Mapping[str, Tensor]
    operator: str = "add"
    when: str = "all"
    first_k: int | None = None
    prompt: str = "all"
    label: str = "steering"
    _cache: dict[Any, list[Intervention]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.vectors:
            raise InputError(f"{self.label}: a Steering needs at least one site and vector")
        if self.operator not in OPERATORS:
            raise InputError(f"operator must be one of {OPERATORS}, not {self.operator!r}")
        if self.when not in WHEN:
            raise InputError(f"when must be one of {WHEN}, not {self.when!r}")
        if self.prompt not in ("all", "last"):
            raise InputError(f"prompt must be 'all' or 'last', not {self.prompt!r}")
        if self.first_k is not None and self.first_k < 0:
            raise InputError(f"first_k must be >= 0, got {self.first_k}")
        clean: dict[str, Tensor] = {}
        for site, v in self.vectors.items():
            if not isinstance(site, str):
                raise InputError(f"steering sites are site names, not {type(site).__name__}")
            t = torch.as_tensor(v).detach()
            if t.dim() != 1:
                raise ShapeError(
                    f"{self.label}: the vector for {site} must be 1-D [width], got {tuple(t.shape)}"
                )
            if not bool(torch.isfinite(t).all()):
                raise InputError(f"{self.label}: the vector for {site} has NaN or inf values")
            if self.operator == "project_out" and float(t.norm()) == 0.0:
                raise InputError(f"{self.label}: cannot project out a zero vector at {site}")
            clean[site] = t
        object.__setattr__(self, "vectors", clean)

    # -- construction ----------------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        return list(self.vectors)

    def scaled(self, coef: float, label: str | None = None) -> Steering:
        """The same steering with every vector multiplied by ``coef``."""
        return replace(
            self,
            vectors={s: v * float(coef) for s, v in self.vectors.items()},
            label=label or f"{self.label} x{coef:g}",
            _cache={},
        )

    def at(
        self,
        when: str,
        first_k: int | None = None,
        *,
        prompt: str | None = None,
        label: str | None = None,
    ) -> Steering:
        """The same vectors applied on another schedule."""
        return replace(
            self,
            when=when,
            first_k=first_k,
            prompt=self.prompt if prompt is None else prompt,
            label=label or f"{self.label} ({when})",
            _cache={},
        )

    def random_like(
        self,
        seed: int = 0,
        label: str | None = None,
        *,
        natural: Mapping[str, Tensor] | None = None,
    ) -> Steering:
        """Random directions with the same norm at every site (a null for specificity), seeded.

        Isotropic by default (uniform on the sphere). With ``natural`` (``{site: [N, width]}``
        activations), the direction is drawn from ``N(0, Sigma)`` with ``Sigma`` their
        covariance (a random combination of the centred activations): a null that, like real
        concept directions, lies along the directions activations actually vary in."""
        g = torch.Generator().manual_seed(int(seed))
        vecs = {}
        for s, v in self.vectors.items():
            if natural is not None:
                if s not in natural:
                    raise InputError(f"random_like: no natural activations for {s}")
                x = torch.as_tensor(natural[s]).double()
                if x.dim() != 2 or x.shape[1] != v.shape[0] or x.shape[0] < 2:
                    raise ShapeError(
                        f"random_like: natural activations for {s} must be [N >= 2, "
                        f"{v.shape[0]}], got {tuple(x.shape)}"
                    )
                x = x - x.mean(0)
                r = x.T @ torch.randn(x.shape[0], generator=g, dtype=torch.float64)
            else:
                r = torch.randn(v.shape[0], generator=g, dtype=torch.float64)
            vecs[s] = (r / r.norm() * v.double().norm()).to(v.dtype)
        return replace(self, vectors=vecs, label=label or f"random #{seed}", _cache={})

    def norms(self) -> dict[str, float]:
        return {s: float(v.norm()) for s, v in self.vectors.items()}

    def describe(self) -> str:
        sites = ", ".join(self.sites[:4]) + (" ..." if len(self.sites) > 4 else "")
        k = f", first {self.first_k} generated" if self.first_k is not None else ""
        p = ", last prompt token" if self.prompt == "last" else ""
        return f"{self.label}: {self.operator} at {sites} (when={self.when}{k}{p})"

    # -- engine interventions ----------------------------------------------------------------
    def _make(self, positions: Any) -> list[Intervention]:
        key = ("p", tuple(positions) if isinstance(positions, list) else positions)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        out: list[Intervention] = []
        for site, v in self.vectors.items():
            s = Site(site, positions=positions)
            if self.operator == "add":
                out.append(Add(s, v))
            else:
                out.append(Project(s, v, mode="out"))
        self._cache[key] = out
        return out

    def prompt_interventions(
        self, n_prompt: int, n_columns: int | None = None
    ) -> list[Intervention]:
        """Interventions for the forward pass that reads a (left-padded) prompt occupying
        columns ``0..n_prompt-1`` of a batch with ``n_columns`` columns (default: the prompt
        only)."""
        if self.when == "generated":
            return []
        if self.prompt == "last":
            return self._make([n_prompt - 1])
        if n_columns is None or n_columns == n_prompt:
            return self._make(None)
        return self._make(list(range(n_prompt)))

    def step_active(self, step: int) -> bool:
        """Whether generated token ``step`` (0-based) is edited."""
        if self.when == "prompt":
            return False
        return self.first_k is None or step < self.first_k

    def generated_interventions(
        self, step: int, positions: Sequence[int] | None = None
    ) -> list[Intervention]:
        """Interventions for the forward pass that feeds generated token ``step``."""
        if not self.step_active(step):
            return []
        return self._make(list(positions) if positions is not None else None)

    def check(self, model: Model) -> None:
        """Every site exists and every vector has the site's width (before any forward pass)."""
        for site, v in self.vectors.items():
            info = model.site_info(site)
            if info.width is not None and v.shape[0] != info.width:
                raise ShapeError(
                    f"{self.label}: the vector for {site} has width {v.shape[0]}, the site has "
                    f"{info.width}"
                )


def as_steerings(steering: Steering | Iterable[Steering] | None) -> list[Steering]:
    """None, one steering or several (applied together, in order)."""
    if steering is None:
        return []
    if isinstance(steering, Steering):
        return [steering]
    out = list(steering)
    for s in out:
        if not isinstance(s, Steering):
            raise InputError(f"expected Steering objects, got {type(s).__name__}")
    return out


def label_of(steering: Steering | Iterable[Steering] | None) -> str:
    items = as_steerings(steering)
    return " + ".join(s.label for s in items) if items else "none"


__all__ = ["OPERATORS", "WHEN", "Steering", "as_steerings", "label_of"]
