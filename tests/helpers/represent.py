"""Shared, cached objects for the representation tests (built once per test session)."""

from __future__ import annotations

from functools import lru_cache

from faithlens.representations import PlantedModel, planted_model, read
from faithlens.representations.reading import ReadingResult, collect


@lru_cache(maxsize=1)
def planted() -> PlantedModel:
    return planted_model(0)


@lru_cache(maxsize=1)
def planted_acts():  # type: ignore[no-untyped-def]
    pm = planted()
    return collect(pm.model, pm.pairs(64))


@lru_cache(maxsize=1)
def decoy_acts():  # type: ignore[no-untyped-def]
    pm = planted()
    return collect(pm.model, pm.decoy_pairs(64))


@lru_cache(maxsize=8)
def planted_reading(method: str = "pca", n_stability: int = 0) -> ReadingResult:
    return read(None, planted_acts(), method=method, n_boot=200, n_stability=n_stability)


@lru_cache(maxsize=2)
def decoy_reading(method: str = "pca") -> ReadingResult:
    return read(None, decoy_acts(), method=method, n_boot=200)
