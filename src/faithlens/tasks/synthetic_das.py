"""The synthetic DAS task of Grant et al. (2025), "Addressing divergent representations from
causal interventions on neural networks" (section 5 of faithlens' research notes).

Two causal variables, ``x in {-1, +1}`` and ``y in {0, ..., 4}`` (10 classes). A natural
representation is the 2-d feature ``(x + 0.2 y, y) + N(0, 0.1^2 I)`` (globally centred) followed by
``extra_dims`` i.i.d. ``N(0, 1)`` coordinates. A frozen MLP classifier reads the class. The
intervention set of a task copies ``x`` from a source vector into a base (target) vector: the
counterfactual class is ``(x_source, y_base)``.

A *division* splits the classes into two tasks, so an alignment trained on one task can be tested
on the other (out-of-distribution transfer): ``og_holdouts``, ``og_noholdouts``,
``inner_square`` (separate classifiers per task) and ``xor``.

``synthetic_das(division, seed)`` returns both tasks, each with its frozen classifier wrapped as
a faithlens model (site ``"h"``: the classifier's input) and its :class:`InterchangeData`
(including the mean CL targets of the modified CL loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .. import validate as V
from ..errors import InputError
from ..models.model import Model, wrap
from .interchange import InterchangeData

XS = (-1, 1)
YS = (0, 1, 2, 3, 4)
ALL_CLASSES = [(x, y) for x in XS for y in YS]

DIVISIONS: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]], bool]] = {
    # name: (task 1 classes, task 2 classes, one classifier shared by both tasks)
    "og_holdouts": (
        [c for c in ALL_CLASSES if c[1] != 1],
        [c for c in ALL_CLASSES if c[1] != 2],
        True,
    ),
    "og_noholdouts": (list(ALL_CLASSES), list(ALL_CLASSES), True),
    "inner_square": (
        [c for c in ALL_CLASSES if c[1] in (0, 3)],
        [c for c in ALL_CLASSES if c[1] in (1, 2)],
        False,
    ),
    "xor": ([(1, 0), (-1, 1)], [(-1, 0), (1, 1)], True),
}

SITE = "h"
FEATURE_DIMS = (0, 1)


class Classifier(nn.Module):
    """BatchNorm1d(D) -> Linear(D, 128) -> ReLU -> Dropout(0.5) -> BatchNorm1d(128) ->
    Linear(128, n_classes)."""

    def __init__(self, width: int, n_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm1d(width),
            nn.Linear(width, hidden),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.BatchNorm1d(hidden),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, h: Tensor) -> Tensor:
        out: Tensor = self.net(h)
        return out


@dataclass(frozen=True, eq=False)
class SyntheticDASTask:
    """One task of a division: its classes, frozen classifier (as a model) and DAS data."""

    name: str
    classes: tuple[tuple[int, int], ...]
    model: Model
    data: InterchangeData
    classifier_val_acc: float
    site: str = SITE
    feature_dims: tuple[int, ...] = FEATURE_DIMS


def natural_features(
    rng: np.random.Generator, *, n_per_class: int = 100, noise: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """The 2-d natural features of all 10 classes (globally centred) and their ``(x, y)``."""
    feats, labels = [], []
    for x, y in ALL_CLASSES:
        f = np.array([x + 0.2 * y, float(y)]) + rng.normal(0, noise, size=(n_per_class, 2))
        feats.append(f)
        labels.append(np.tile([x, y], (n_per_class, 1)))
    f = np.concatenate(feats)
    return f - f.mean(0), np.concatenate(labels)


def _intervention_set(
    rng: np.random.Generator,
    feats: np.ndarray,
    xy: np.ndarray,
    classes: list[tuple[int, int]],
    class_index: dict[tuple[int, int], int],
    n_per_class: int,
) -> dict[str, np.ndarray]:
    in_task = np.array([(int(a), int(b)) in set(classes) for a, b in xy])
    pool = np.flatnonzero(in_task)
    src, tgt, lab, var = [], [], [], []
    for x, y in classes:
        with_x = pool[xy[pool, 0] == x]
        with_y = pool[xy[pool, 1] == y]
        src.append(rng.choice(with_x, n_per_class))
        tgt.append(rng.choice(with_y, n_per_class))
        lab.append(np.full(n_per_class, class_index[(x, y)]))
        var.append(np.tile([x, y], (n_per_class, 1)))
    s, t = np.concatenate(src), np.concatenate(tgt)
    return {
        "source": feats[s],
        "base": feats[t],
        "labels": np.concatenate(lab),
        "counterfactual": np.concatenate(var),
        "source_xy": xy[s],
    }


def _mean_cl_targets(
    rng: np.random.Generator, source: np.ndarray, source_xy: np.ndarray, cf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean CL targets with one variable per row (the modified CL loss): a random half of the
    rows compares in the x subspace against the mean natural (source) vector of that half with
    ``x`` = the counterfactual ``x``; the other half likewise for ``y``."""
    n = len(source)
    groups = np.zeros(n, dtype=np.int64)
    groups[rng.permutation(n)[n // 2 :]] = 1
    targets = np.empty_like(source)
    for g in (0, 1):
        rows = np.flatnonzero(groups == g)
        for value in np.unique(cf[rows, g]):
            want = rows[cf[rows, g] == value]
            have = rows[source_xy[rows, g] == value]
            if have.size == 0:  # no natural vector of that value in this half: use all rows
                have = np.flatnonzero(source_xy[:, g] == value)
            targets[want] = source[have].mean(0)
    return targets, groups


def train_classifier(
    h: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    seed: int,
    epochs: int = 1000,
    patience: int = 100,
    lr: float = 0.01,
    weight_decay: float = 0.005,
    batch_size: int = 200,
) -> tuple[Classifier, float]:
    """Adam (lr 0.01, weight decay 0.005, batch 200); the first 80% of rows train, the last 20%
    validate; keep the best validation accuracy; stop once validation loss has failed to improve
    on the previous epoch ``patience`` times. Returns the frozen classifier (eval mode) and its
    validation accuracy."""
    V.positive_int("epochs", epochs, fix="train the classifier for at least one epoch")
    V.positive_int("patience", patience)
    V.positive_float("lr", lr, fix="use e.g. 0.01")
    V.finite_float("weight_decay", weight_decay, low=0.0)
    V.positive_int("batch_size", batch_size)
    V.positive_int("n_classes", n_classes)
    if len(h) != len(labels):
        raise V.fail("labels", f"{len(labels)} labels", f"need one label per row of h ({len(h)})")
    if int(0.8 * len(h)) < 2 or len(h) - int(0.8 * len(h)) < 1:
        raise V.fail(
            "h", f"{len(h)} rows", "too few to split 80/20 into training and validation rows"
        )
    x = torch.as_tensor(h, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    n_train = int(0.8 * len(x))
    xt, yt, xv, yv = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = Classifier(x.shape[1], n_classes)
        opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        best_acc, best_state = -1.0, None
        prev_val, bad = float("inf"), 0
        for _ in range(epochs):
            clf.train()
            order = torch.randperm(n_train, generator=gen)
            for i in range(0, n_train, batch_size):
                idx = order[i : i + batch_size]
                if len(idx) < 2:
                    continue
                loss = nn.functional.cross_entropy(clf(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            clf.eval()
            with torch.no_grad():
                out = clf(xv)
                vloss = float(nn.functional.cross_entropy(out, yv))
                acc = float((out.argmax(-1) == yv).float().mean())
            if acc > best_acc:
                best_acc = acc
                best_state = {k: v.clone() for k, v in clf.state_dict().items()}
            if vloss >= prev_val:
                bad += 1
                if bad >= patience:
                    break
            prev_val = vloss
    assert best_state is not None
    clf.load_state_dict(best_state)
    clf.eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    return clf, best_acc


#: Noise coordinates appended to the two features by default (the site is 2 + this wide).
EXTRA_DIMS = 16


def synthetic_das(
    division: str = "og_holdouts",
    seed: int = 0,
    *,
    n_per_class: int = 100,
    extra_dims: int = EXTRA_DIMS,
    noise: float = 0.1,
    classifier_epochs: int = 1000,
    classifier_patience: int = 100,
) -> tuple[SyntheticDASTask, SyntheticDASTask]:
    """Both tasks of ``division`` for one seed (data, frozen classifiers, CL targets)."""
    if division not in DIVISIONS:
        raise InputError(f"unknown division {division!r}; choose from {sorted(DIVISIONS)}")
    V.nonnegative_int("seed", seed)
    V.min_examples("n_per_class", n_per_class, what="the synthetic task")
    V.nonnegative_int("extra_dims", extra_dims)
    V.finite_float("noise", noise, low=0.0)
    V.positive_int("classifier_epochs", classifier_epochs, fix="train for at least one epoch")
    V.positive_int("classifier_patience", classifier_patience)
    c1, c2, shared = DIVISIONS[division]
    rng = np.random.default_rng(seed)
    feats2d, xy = natural_features(rng, n_per_class=n_per_class, noise=noise)
    global_index = {c: i for i, c in enumerate(ALL_CLASSES)}

    built = []
    for classes in (c1, c2):
        extra = rng.normal(0, 1, size=(len(feats2d), extra_dims))
        feats = np.concatenate([feats2d, extra], axis=1)
        index = global_index if shared else {c: i for i, c in enumerate(classes)}
        ivs = _intervention_set(rng, feats, xy, classes, index, n_per_class)
        natural_labels = np.array([index[(int(a), int(b))] for a, b in ivs["source_xy"]])
        targets, groups = _mean_cl_targets(
            rng, ivs["source"], ivs["source_xy"], ivs["counterfactual"]
        )
        built.append((classes, index, ivs, natural_labels, targets, groups))

    models: list[tuple[Model, float]] = []
    if shared:
        h = np.concatenate([b[2]["source"] for b in built])
        lab = np.concatenate([b[3] for b in built])
        clf, acc = train_classifier(
            h,
            lab,
            len(ALL_CLASSES),
            seed=seed,
            epochs=classifier_epochs,
            patience=classifier_patience,
        )
        m = wrap(clf, sites={SITE: "net.0:in"}, name=f"synthetic-{division}-classifier")
        models = [(m, acc), (m, acc)]
    else:
        for i, b in enumerate(built):
            clf, acc = train_classifier(
                b[2]["source"],
                b[3],
                len(b[0]),
                seed=seed + i,
                epochs=classifier_epochs,
                patience=classifier_patience,
            )
            models.append(
                (wrap(clf, sites={SITE: "net.0:in"}, name=f"synthetic-{division}-task{i + 1}"), acc)
            )

    tasks = []
    for i, ((classes, _index, ivs, _nl, targets, groups), (model, acc)) in enumerate(
        zip(built, models)
    ):
        f32 = torch.float32
        data = InterchangeData(
            base=torch.as_tensor(ivs["base"], dtype=f32),
            source=torch.as_tensor(ivs["source"], dtype=f32),
            labels=torch.as_tensor(ivs["labels"], dtype=torch.long),
            cl_targets=torch.as_tensor(targets, dtype=f32),
            cl_groups=torch.as_tensor(groups, dtype=torch.long),
            name=f"{division}/task{i + 1}",
            meta={"division": division, "seed": seed, "task": i + 1},
        )
        tasks.append(
            SyntheticDASTask(
                name=f"{division}/task{i + 1}",
                classes=tuple(classes),
                model=model,
                data=data,
                classifier_val_acc=acc,
            )
        )
    return tasks[0], tasks[1]


__all__ = [
    "ALL_CLASSES",
    "DIVISIONS",
    "EXTRA_DIMS",
    "FEATURE_DIMS",
    "SITE",
    "Classifier",
    "SyntheticDASTask",
    "natural_features",
    "synthetic_das",
    "train_classifier",
]
