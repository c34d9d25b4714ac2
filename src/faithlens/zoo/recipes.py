"""The zoo's training recipes: the paren-balance checker and the induction model.

Each recipe fixes the architecture, the data (a seeded generator: fresh samples every step),
the loss, the schedule, a final evaluation with confidence intervals and the targets the trained
model must meet (:meth:`Recipe.check`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import stats
from ..errors import InputError
from ..tasks import induction as ind
from ..tasks import paren as par
from .config import ZooConfig
from .model import ZooTransformer
from .tokenizer import VocabTokenizer
from .training import Recipe, Schedule, step_seed

#: Held-out data use seeds far from the training streams (which come from SeedSequence).
VAL_SEED = 1_000_003
TEST_SEED = 2_000_003


def _interval_dict(iv: stats.Interval, n: int) -> dict[str, Any]:
    return {
        "estimate": float(iv.estimate),
        "low": float(iv.low),
        "high": float(iv.high),
        "se": float(iv.se),
        "n": int(n),
    }


def proportion(successes: Tensor | np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """A proportion with its Wilson score interval (``successes`` is a 0/1 vector)."""
    x = np.asarray(successes, dtype=np.float64)
    return _interval_dict(stats.proportion_interval(int(x.sum()), int(x.size), level=level), x.size)


def mean_ci(values: Tensor | np.ndarray, seed: int = 0) -> dict[str, Any]:
    """A mean with its bootstrap interval."""
    x = np.asarray(values, dtype=np.float64)
    return _interval_dict(stats.mean_interval(x, n_boot=1000, seed=seed), x.size)


# ----------------------------------------------------------------------------------------------
# Paren balance
# ----------------------------------------------------------------------------------------------


class ParenRecipe(Recipe):
    """Redwood's paren-balance checker, trained from scratch.

    3 layers, 2 heads, d_model 56, d_mlp 56, ReLU, pre-LN, bidirectional, learned positions,
    padding masked; two logits at position 0 (``[unbalanced, balanced]``); BCE loss on their
    difference; fresh strings from Redwood's data mixture every step.
    """

    name = "paren"
    description = "Balanced-parenthesis classifier (Redwood's paren balancer, trained from scratch)"

    def __init__(
        self,
        config: ZooConfig | None = None,
        schedule: Schedule | None = None,
        mixture: par.ParenMixture | None = None,
    ) -> None:
        super().__init__(
            config
            or ZooConfig(
                n_layers=3,
                n_heads=2,
                d_model=56,
                d_mlp=56,
                d_vocab=len(par.VOCAB),
                n_ctx=par.N_CTX,
                d_out=2,
                causal=False,
                positions="learned",
                act="relu",
                pad_token_id=par.PAD,
            ),
            schedule
            or Schedule(
                steps=3000,
                batch_size=256,
                lr=2e-3,
                warmup=150,
                min_lr_ratio=0.02,
                weight_decay=0.01,
                eval_every=250,
                checkpoint_every=250,
            ),
        )
        self.mixture = mixture or par.ParenMixture()
        self.buckets = 4
        self.quick_n = 2000

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mixture": asdict(self.mixture)}

    def batch(self, step: int, seed: int, batch_size: int) -> dict[str, Tensor]:
        data = par.ParenData.sample(
            batch_size, step_seed(seed, step), self.mixture, self.config.n_ctx
        )
        return {"ids": data.ids, "mask": data.mask, "labels": data.labels}

    @staticmethod
    def logit_diff(model: ZooTransformer, ids: Tensor, mask: Tensor) -> Tensor:
        """logit(balanced) - logit(unbalanced) at position 0, ``[n]``."""
        logits = model(ids, attention_mask=mask).logits[:, 0]
        return logits[:, par.BALANCED] - logits[:, par.UNBALANCED]

    def loss(
        self, model: ZooTransformer, batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        # Strings are short on average (about 20 of 42 positions are padding): run the batch
        # in length buckets, each trimmed to its longest string. Padding is masked out of the
        # keys, so this is exact and about twice as fast.
        ids, mask, labels = batch["ids"], batch["mask"], batch["labels"]
        lengths = mask.sum(1)
        order = lengths.argsort()
        total = ids.new_zeros((), dtype=torch.float32)
        correct = 0.0
        for chunk in order.chunk(self.buckets):
            width = int(lengths[chunk].max())
            d = self.logit_diff(model, ids[chunk, :width], mask[chunk, :width])
            total = total + F.binary_cross_entropy_with_logits(
                d.float(), labels[chunk], reduction="sum"
            )
            correct += float(((d.detach() > 0).float() == labels[chunk]).sum())
        n = int(ids.shape[0])
        return total / n, {"acc": correct / n}

    @cached_property
    def _val(self) -> par.ParenData:
        return par.ParenData.sample(10_000, VAL_SEED, self.mixture, self.config.n_ctx)

    def scores(self, model: ZooTransformer, data: par.ParenData) -> Tensor:
        """logit(balanced) - logit(unbalanced) per string (batched by length; exact)."""
        dev = next(model.parameters()).device
        lengths = data.mask.sum(1)
        order = lengths.argsort()
        d = torch.empty(len(data))
        with torch.no_grad():
            for chunk in order.split(512):
                width = int(lengths[chunk].max())
                ids = data.ids[chunk, :width].to(dev)
                d[chunk] = (
                    self.logit_diff(model, ids, data.mask[chunk, :width].to(dev)).float().cpu()
                )
        return d

    def _scores(self, model: ZooTransformer, data: par.ParenData) -> tuple[Tensor, Tensor]:
        d = self.scores(model, data)
        loss = F.binary_cross_entropy_with_logits(d, data.labels, reduction="none")
        correct = ((d > 0).float() == data.labels).float()
        return loss, correct

    def quick_eval(self, model: ZooTransformer) -> dict[str, float]:
        loss, correct = self._scores(model, self._val.subset(slice(0, self.quick_n)))
        return {"loss": float(loss.mean()), "acc": float(correct.mean())}

    def evaluate(self, model: ZooTransformer, *, n: int | None = None) -> dict[str, Any]:
        data = (
            self._val
            if n is None
            else par.ParenData.sample(n, VAL_SEED, self.mixture, self.config.n_ctx)
        )
        loss, correct = self._scores(model, data)
        out: dict[str, Any] = {
            "accuracy": proportion(correct.numpy()),
            "bce_loss": mean_ci(loss.numpy()),
        }
        cats = np.asarray(data.categories)
        for c in par.CATEGORIES:
            m = cats == c
            if m.any():
                out[f"accuracy_{c}"] = proportion(correct.numpy()[m])
        out["val_seed"] = VAL_SEED
        return out

    def check(self, metrics: dict[str, Any]) -> list[str]:
        acc = metrics.get("accuracy", {}).get("estimate", 0.0)
        return [] if acc >= 0.995 else [f"validation accuracy {acc:.4f} is below the 0.995 target"]

    def tokenizer(self) -> VocabTokenizer:
        return VocabTokenizer(par.VOCAB, split="chars", bos="[START]", eos="[END]", pad="[PAD]")

    def data_description(self) -> str:
        m = self.mixture
        return (
            f"Fresh strings every step from the mixture of Redwood's "
            f"`random_choice_len_40_extra_yeses_8`: {1 - m.balanced_fraction:.1%} uniformly random "
            f"strings (even length uniform over 2..{m.max_parens}, each paren a fair coin) and "
            f"{m.balanced_fraction:.1%} extra balanced strings (uniform over the balanced strings "
            f"of their length; half-length k drawn with probability proportional to "
            f"k^-{m.balanced_exponent}). About 26 % of the strings are balanced, 13 % fail only "
            "the count test, 13 % only the horizon test and 48 % both. Tokens: [START]=0, "
            "[PAD]=1, [END]=2, (=3, )=4; a string is START + parens + END + padding (n_ctx 42). "
            f"Validation: 10,000 strings from the same mixture with seed {VAL_SEED} (short strings "
            "also occur in training: there are only 2^L strings of length L)."
        )


# ----------------------------------------------------------------------------------------------
# Induction
# ----------------------------------------------------------------------------------------------


class InductionRecipe(Recipe):
    """A 2-layer attention-only transformer on Markov sequences with repeated spans.

    Shortformer positions (added to queries and keys only, as in Redwood's ``attn_2l``), causal,
    next-token cross-entropy on every position.
    """

    name = "induction"
    description = "2-layer attention-only induction model on synthetic Markov sequences"

    def __init__(
        self,
        config: ZooConfig | None = None,
        schedule: Schedule | None = None,
        chain: ind.MarkovChain | None = None,
        spec: ind.RepeatSpec | None = None,
    ) -> None:
        # the task's defaults are this model's training distribution
        self.chain = chain or ind.MarkovChain()
        self.spec = spec or ind.RepeatSpec()
        super().__init__(
            config
            or ZooConfig(
                n_layers=2,
                n_heads=4,
                d_model=64,
                d_mlp=0,
                d_vocab=self.chain.vocab,
                n_ctx=self.spec.seq_len,
                causal=True,
                positions="shortformer",
            ),
            schedule
            or Schedule(
                steps=3000,
                batch_size=64,
                lr=2e-3,
                warmup=100,
                min_lr_ratio=0.05,
                weight_decay=0.01,
                eval_every=250,
                checkpoint_every=250,
            ),
        )
        self.quick_n = 300
        if self.config.d_vocab != self.chain.vocab:
            raise InputError(
                f"InductionRecipe: config.d_vocab={self.config.d_vocab} but the chain has "
                f"{self.chain.vocab} tokens"
            )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "chain": asdict(self.chain), "spec": asdict(self.spec)}

    def batch(self, step: int, seed: int, batch_size: int) -> dict[str, Tensor]:
        ids, _, _ = ind.sample_sequences(batch_size, step_seed(seed, step), self.chain, self.spec)
        return {"ids": ids}

    def loss(
        self, model: ZooTransformer, batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        ids = batch["ids"]
        logits = model(ids).logits
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1)
        )
        return loss, {}

    @cached_property
    def _val(self) -> ind.InductionData:
        return ind.InductionData.sample(1000, VAL_SEED, self.chain, self.spec)

    def losses_by_kind(self, model: ZooTransformer, data: ind.InductionData) -> dict[str, Tensor]:
        """Per-sequence mean loss on each kind of target (NaN where a sequence has none)."""
        dev = next(model.parameters()).device
        tl = []
        with torch.no_grad():
            for i in range(0, len(data), 512):
                logits = model(data.ids[i : i + 512].to(dev)).logits
                tl.append(ind.token_losses(logits, data.ids[i : i + 512]).cpu())
        losses = torch.cat(tl)
        out = {}
        for kind in (ind.KIND_MARKOV, ind.KIND_COPY_START, ind.KIND_COPY):
            m = data.target_mask(kind).float()
            cnt = m.sum(1)
            out[ind.KIND_NAMES[kind]] = torch.where(
                cnt > 0, (losses * m).sum(1) / cnt.clamp(min=1), torch.full_like(cnt, torch.nan)
            )
        return out

    def quick_eval(self, model: ZooTransformer) -> dict[str, float]:
        by = self.losses_by_kind(model, self._val.subset(slice(0, self.quick_n)))
        return {f"loss_{k}": float(np.nanmean(v.numpy())) for k, v in by.items()}

    def evaluate(self, model: ZooTransformer, *, n: int | None = None) -> dict[str, Any]:
        data = (
            self._val if n is None else ind.InductionData.sample(n, VAL_SEED, self.chain, self.spec)
        )
        by = self.losses_by_kind(model, data)
        out: dict[str, Any] = {}
        for k, v in by.items():
            x = v.numpy()
            out[f"loss_{k}"] = mean_ci(x[~np.isnan(x)])
        both = ~(torch.isnan(by["copy"]) | torch.isnan(by["markov"]))
        out["loss_gap_markov_minus_copy"] = mean_ci((by["markov"] - by["copy"])[both].numpy())
        out["markov_loss_floor"] = data.markov_loss_floor()
        scores = head_scores(model, data)
        for name, arr in scores.items():
            for layer in range(arr.shape[0]):
                for head in range(arr.shape[1]):
                    out[f"{name}_score.{layer}.{head}"] = float(arr[layer, head])
        out["val_seed"] = VAL_SEED
        return out

    def check(self, metrics: dict[str, Any]) -> list[str]:
        problems = []
        copy = metrics["loss_copy"]["estimate"]
        markov = metrics["loss_markov"]["estimate"]
        if not copy < markov / 3:
            problems.append(
                f"loss on repeated-span tokens ({copy:.3f}) is not far below the loss elsewhere "
                f"({markov:.3f})"
            )
        prev = max(v for k, v in metrics.items() if k.startswith("prev_token_score.0."))
        indu = max(v for k, v in metrics.items() if k.startswith("induction_score.1."))
        # Uniform attention would score about 1/t (0.03 on average here).
        if prev < 0.5:
            problems.append(f"no previous-token head in layer 0 (best score {prev:.2f} < 0.5)")
        if indu < 0.4:
            problems.append(f"no induction head in layer 1 (best score {indu:.2f} < 0.4)")
        return problems

    def tokenizer(self) -> VocabTokenizer:
        return VocabTokenizer([f"t{i}" for i in range(self.chain.vocab)], split="space")

    def data_description(self) -> str:
        c, s = self.chain, self.spec
        copies = ", ".join(f"{i}: {p:.0%}" for i, p in enumerate(s.copies))
        return (
            f"Sequences of {s.seq_len} tokens over a vocabulary of {c.vocab} (tokens are named "
            f"t0..t{c.vocab - 1}). Background: a sparse random Markov chain (seed {c.seed}): each "
            f"token has {c.branching} successors with probabilities proportional to "
            f"rank^-{c.zipf}, reweighted by a skip-bigram factor exp({c.skip} * S[a, next]) of "
            f"the token a before the current one (S: a random 0/1 matrix with "
            f"{c.skip_fraction:.0%} ones per row). The skip factor makes the previous token "
            "informative, as in natural text, so a previous-token head pays off on its own and "
            "induction heads can form on top of it in a few thousand CPU steps (with a purely "
            "first-order chain and short spans they did not form within 3,000 steps). Repeated "
            f"spans: {s.min_span}..{s.max_span} tokens copied from earlier in the same sequence "
            f"to a later position (number of copies per sequence {copies}); the copy's tokens "
            "after its first are the induction targets. Fresh sequences every step. Validation: "
            f"1,000 sequences with seed {VAL_SEED}."
        )


def head_scores(model: ZooTransformer, data: ind.InductionData) -> dict[str, np.ndarray]:
    """Per head ``[layer, head]``: the mean attention to the previous token (over all queries
    ``t >= 1``) and the mean induction attention (from a copied token to the token after its
    source), from the attention patterns."""
    from ..models import wrap

    m = wrap(model)
    names = [f"module:blocks.{layer}.attn.pattern" for layer in range(model.config.n_layers)]
    rows, q, key = data.induction_targets()
    prev, induct = [], []
    out = m.run(data.ids, cache=names)
    for name in names:
        pat = out.cache[name].float().cpu()  # [n, H, T, T]
        t = torch.arange(1, pat.shape[-1])
        prev.append(pat[:, :, t, t - 1].mean(dim=(0, 2)).numpy())
        induct.append(pat[rows, :, q, key].mean(0).numpy())
    return {"prev_token": np.stack(prev), "induction": np.stack(induct)}


#: Zoo model name -> its recipe (called with no arguments for the shipped recipe).
RECIPES: dict[str, Callable[[], Recipe]] = {"paren": ParenRecipe, "induction": InductionRecipe}


def recipe(name: str) -> Recipe:
    """The recipe of a zoo model by name (``"paren"``, ``"induction"``)."""
    cls = RECIPES.get(name)
    if cls is None:
        raise InputError(f"no zoo recipe named {name!r}; recipes: {sorted(RECIPES)}")
    return cls()


__all__ = ["RECIPES", "InductionRecipe", "ParenRecipe", "head_scores", "recipe"]
