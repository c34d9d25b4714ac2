"""faithlens.scrubbing.symbolic: the data of a symbolic plan (the planner is tested through
scrub in the other modules of this folder)."""

from __future__ import annotations

from faithlens.scrubbing import plan as P
from faithlens.scrubbing import symbolic as S


def test_plan_reexports_the_same_classes():
    for name in S.__all__:
        assert getattr(P, name) is getattr(S, name), name


def test_union_find_picks_the_smallest_repr_as_root():
    uf = S.UnionFind()
    uf.union("b", "c")
    uf.union("c", "a")
    uf.find("z")
    assert uf.find("c") == uf.find("b") == uf.find("a") == "a"
    assert {k: sorted(v) for k, v in uf.groups().items()} == {"a": ["a", "b", "c"], "z": ["z"]}


def test_datum_keys_are_in_first_use_order_and_other_keys_are_canonical():
    mixed = S.SymMixed(0, "out")
    copy = S.SymCopy(
        ref=mixed,
        owners=("root",),
        feeds=[
            ("out", "in", None, S.SymUniform("a", ("other", "k2"))),
            ("out", "in2", None, mixed),
            ("out", "in3", None, S.SymUniform("b", ("ds", ("x",)))),
        ],
    )
    uf = S.UnionFind()
    uf.union("k2", "k1")
    sym = S.SymPlan(
        trees=[],
        graph=None,  # type: ignore[arg-type]
        root=mixed,
        copies={0: copy},
        pairs={},
        uf=uf,
        other_samplers={},
        rep=[],
    )
    assert sym.datum_keys() == [("ds", ("root",)), ("other", "k2"), ("ds", ("x",))]
    assert sym.canonical(("other", "k2")) == ("other", "k1")
    assert sym.canonical(("ds", ("x",))) == ("ds", ("x",))
