"""Learned alignments: invertible changes of basis for distributed interchange interventions.

An :class:`Alignment` is an ``nn.Module`` with ``forward(x)`` (native -> aligned basis, row
vectors: ``z = x W``) and ``inverse(z)`` (back), so it plugs straight into
``fl.Interchange(site, basis=alignment, dims=..., source=...)``.

- :class:`Rotation`: an orthogonal ``W`` (DAS; ``torch.nn.utils.parametrizations.orthogonal``).
- :class:`SymmetricDefinite`: the non-orthogonal invertible parameterisation used for the
  synthetic experiments of Grant et al. (2025): ``W = (A A^T + 0.1 I) diag(sigma)`` with
  ``sigma_j = tanh(s_j) + 0.1 sign(tanh(s_j))``; inverse by ``torch.linalg.inv``.
- :class:`IdentityBasis`: ``W = I`` (coordinate patching; the untrained reference).
- :class:`BoundlessMask`: Boundless DAS' learned soft mask over the aligned coordinates,
  ``m_i = sigmoid((b D - i - 1/2) / T)`` with ``b = sigmoid(theta)``.

Every alignment saves and loads (:meth:`Alignment.save`, :func:`load_alignment`) and flattens to
one array plus a JSON spec (:meth:`Alignment.to_flat`, :func:`alignment_from_flat`) so results can
carry it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from .. import safe_load
from ..errors import InputError, ShapeError

ALIGNMENTS: dict[str, type[Alignment]] = {}


class Alignment(nn.Module):
    """Base class: an invertible linear change of basis of width ``width``."""

    kind: ClassVar[str] = "alignment"

    def __init__(self, width: int) -> None:
        super().__init__()
        if width < 1:
            raise InputError(f"an alignment needs a positive width, got {width}")
        self.width = int(width)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ALIGNMENTS[cls.kind] = cls

    # -- the map --------------------------------------------------------------------------------
    def matrix(self) -> Tensor:
        """``W`` ``[width, width]``: ``forward(x) = x @ W``."""
        raise NotImplementedError

    def inverse_matrix(self) -> Tensor:
        return torch.linalg.inv(self.matrix())

    def _check(self, x: Tensor) -> None:
        if x.shape[-1] != self.width:
            raise ShapeError(
                f"this {self.kind} alignment has width {self.width}, the activation has "
                f"{x.shape[-1]}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        w = self.matrix()
        return x @ w.to(x.dtype)

    def inverse(self, y: Tensor) -> Tensor:
        self._check(y)
        return y @ self.inverse_matrix().to(y.dtype)

    def project(self, x: Tensor, dims: Tensor) -> Tensor:
        """``((x W) * M) W^-1`` with ``M`` the indicator of aligned coordinates ``dims``: the
        component of ``x`` that lives in those aligned coordinates, in native space."""
        z = self.forward(x)
        m = torch.zeros(self.width, dtype=z.dtype, device=z.device)
        m[dims.to(z.device)] = 1
        return self.inverse(z * m)

    # -- persistence ----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"width": self.width}

    def spec(self) -> dict[str, Any]:
        sd = self.state_dict()
        return {
            "kind": self.kind,
            "config": self.config(),
            "params": [[k, list(v.shape)] for k, v in sd.items()],
        }

    def to_flat(self) -> np.ndarray:
        """All parameters (and buffers) in state-dict order, as one float64 vector."""
        parts = [
            v.detach().to("cpu", torch.float64).reshape(-1) for v in self.state_dict().values()
        ]
        return torch.cat(parts).numpy() if parts else np.zeros(0)

    def save(self, path: str | Path) -> Path:
        """Write ``alignment.json`` (kind, config) and ``alignment.pt`` (state dict) to a folder."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        # the weights first, each file atomically: a kill never leaves a spec without its weights
        safe_load.torch_save(
            {k: v.detach().cpu() for k, v in self.state_dict().items()}, out / "alignment.pt"
        )
        tmp = out / f".alignment.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(self.spec(), indent=2) + "\n")
        os.replace(tmp, out / "alignment.json")
        return out


def _build(spec: dict[str, Any]) -> Alignment:
    kind = spec.get("kind")
    cls = ALIGNMENTS.get(str(kind))
    if cls is None:
        raise InputError(f"unknown alignment kind {kind!r}; known: {sorted(ALIGNMENTS)}")
    return cls(**spec["config"])


def load_alignment(path: str | Path, *, map_location: str | torch.device = "cpu") -> Alignment:
    """Load an alignment written by :meth:`Alignment.save`."""
    src = Path(path)
    if not (src / "alignment.json").exists():
        raise InputError(f"{src} holds no saved alignment (no alignment.json)")
    fix = "save the alignment again (Alignment.save) or load it from the DAS result folder"
    try:
        spec = json.loads((src / "alignment.json").read_text())
        if not isinstance(spec, dict) or "config" not in spec:
            raise ValueError("no kind and config")
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(
            f"{src / 'alignment.json'} is not a readable alignment spec ({e}); {fix}"
        ) from None
    al = _build(spec)
    state = safe_load.torch_load(
        src / "alignment.pt",
        what="saved alignment",
        fix=fix,
        map_location=map_location,
        error=InputError,
    )
    try:
        al.load_state_dict(state)
    except Exception as e:
        raise InputError(
            f"{src / 'alignment.pt'} does not fit the {spec.get('kind')} alignment of its "
            f"alignment.json ({type(e).__name__}: {e}); {fix}"
        ) from None
    return al


def alignment_from_flat(spec: dict[str, Any], flat: np.ndarray) -> Alignment:
    """Rebuild an alignment from :meth:`Alignment.spec` and :meth:`Alignment.to_flat`."""
    al = _build(spec)
    sd = al.state_dict()
    state: dict[str, Tensor] = {}
    i = 0
    vec = torch.as_tensor(np.asarray(flat, dtype=np.float64))
    for name, shape in spec["params"]:
        n = int(np.prod(shape)) if shape else 1
        if name not in sd:
            raise InputError(f"saved alignment parameter {name!r} does not fit a {spec['kind']}")
        state[name] = vec[i : i + n].reshape(shape).to(sd[name].dtype)
        i += n
    if i != vec.numel():
        raise ShapeError(f"saved alignment has {vec.numel()} numbers, its spec needs {i}")
    al.load_state_dict(state)
    return al


class Rotation(Alignment):
    """An orthogonal change of basis (DAS): ``W`` is kept orthogonal by PyTorch's orthogonal
    parametrization; ``inverse`` is ``W^T``."""

    kind = "rotation"

    def __init__(self, width: int) -> None:
        super().__init__(width)
        lin = nn.Linear(width, width, bias=False)
        self.rot = nn.utils.parametrizations.orthogonal(lin)

    def matrix(self) -> Tensor:
        w = self.rot.weight
        assert isinstance(w, Tensor)
        return w

    def inverse_matrix(self) -> Tensor:
        return self.matrix().T


class SymmetricDefinite(Alignment):
    """``W = (A A^T + 0.1 I) diag(sigma)``, ``sigma_j = tanh(s_j) + 0.1 sign(tanh(s_j))``:
    invertible, not orthogonal (the "linear" alignment of the divergence paper's synthetic runs).
    ``A ~ N(0, 1/D)`` and ``s ~ N(0, 0.01^2)`` at initialisation."""

    kind = "linear"

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.A = nn.Parameter(torch.randn(width, width) / math.sqrt(width))
        self.s = nn.Parameter(torch.randn(width) * 0.01)

    def matrix(self) -> Tensor:
        t = torch.tanh(self.s)
        sigma = t + 0.1 * torch.sign(t)
        eye = torch.eye(self.width, dtype=self.A.dtype, device=self.A.device)
        return (self.A @ self.A.T + 0.1 * eye) * sigma[None, :]


class IdentityBasis(Alignment):
    """``W = I``: interchanging aligned coordinates is coordinate patching."""

    kind = "identity"

    def matrix(self) -> Tensor:
        return torch.eye(self.width)

    def inverse_matrix(self) -> Tensor:
        return torch.eye(self.width)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return x

    def inverse(self, y: Tensor) -> Tensor:
        self._check(y)
        return y


class BoundlessMask(nn.Module):
    """Boundless DAS' soft mask over aligned coordinates ``i = 0..D-1``:
    ``m_i = sigmoid((b D - i - 1/2) / T)``, ``b = sigmoid(theta)`` in (0, 1) (``b`` starts at
    ``init``): coordinate ``i`` is in when the boundary ``b D`` lies past its centre ``i + 1/2``,
    so at a low temperature the mask is the indicator of the first ``round(b D)`` coordinates.
    The temperature ``T`` (in coordinates) is set by the trainer.

    (Until 0.2.0 the mask was pyvene's ``sigmoid(i / T) * sigmoid((b D - i) / T)``, whose first
    factor is ``sigmoid(0) = 1/2`` at coordinate 0 at every temperature, so the first coordinate
    was never more than half swapped; and ``b = clamp(beta, 1e-3, 1)`` had no gradient once the
    boundary hit 0 early in training, where it stayed. Boundless DAS could not recover a planted
    variable.)
    """

    def __init__(self, width: int, init: float = 0.5) -> None:
        super().__init__()
        self.width = int(width)
        if not 0 < init < 1:
            raise InputError(f"BoundlessMask: init must be in (0, 1), got {init}")
        self.theta = nn.Parameter(torch.tensor(math.log(init / (1 - init))))

    def boundary(self) -> Tensor:
        return torch.sigmoid(self.theta)

    def forward(self, temperature: float) -> Tensor:
        i = torch.arange(self.width, dtype=self.theta.dtype, device=self.theta.device)
        b = self.boundary() * self.width
        return torch.sigmoid((b - i - 0.5) / temperature)

    def hard_dims(self) -> list[int]:
        """The aligned coordinates the mask keeps once the temperature reaches 0."""
        return list(range(max(1, round(float(self.boundary().detach()) * self.width))))


def make_alignment(method: str, width: int) -> Alignment:
    """``"rotation"`` / ``"boundless"`` -> :class:`Rotation`; ``"linear"`` ->
    :class:`SymmetricDefinite`; ``"identity"`` -> :class:`IdentityBasis`."""
    if method in ("rotation", "boundless", "das"):
        return Rotation(width)
    if method == "linear":
        return SymmetricDefinite(width)
    if method == "identity":
        return IdentityBasis(width)
    raise InputError(
        f"unknown alignment method {method!r}; use 'rotation', 'boundless', 'linear' or 'identity'"
    )


__all__ = [
    "ALIGNMENTS",
    "Alignment",
    "BoundlessMask",
    "IdentityBasis",
    "Rotation",
    "SymmetricDefinite",
    "alignment_from_flat",
    "load_alignment",
    "make_alignment",
]
