"""The HTML report (``faithlens.report.html``): the page of a results folder, the index of a
folder of runs and the notebook display, checked as parsed HTML (structure, escaping, nothing
loaded from the network) and, where Chromium is installed, in a real headless browser."""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import faithlens as fl
from faithlens import renderers
from faithlens import results as R
from faithlens.errors import ResultError
from faithlens.report import html
from faithlens.results import Result, register_plotter

# -- a small DOM from the standard library's parser ---------------------------------------------

VOID = {"meta", "img", "br", "hr", "link", "input"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Any] = field(default_factory=list)
    parent: Node | None = None

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str, cls: str | None = None) -> list[Node]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if c.tag == tag and (cls is None or cls in c.attrs.get("class", "").split()):
                    out.append(c)
                out.extend(c.all(tag, cls))
        return out

    def one(self, tag: str, cls: str | None = None) -> Node:
        found = self.all(tag, cls)
        assert len(found) == 1, (tag, cls, len(found))
        return found[0]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", {})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, parent=self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        assert node is not None and node.parent is not None, f"unmatched </{tag}>"
        self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.children.append(data)


def dom(text: str) -> Node:
    b = _Builder()
    b.feed(text)
    b.close()
    assert b.cur is b.root, "unclosed elements"
    return b.root


def table_of(page: Node) -> tuple[list[str], list[list[str]]]:
    t = page.one("table", "fl-table")
    heads = [th.text() for th in t.one("thead").all("th")]
    rows = [[td.text() for td in tr.all("td")] for tr in t.one("tbody").all("tr")]
    return heads, rows


def no_network(page: Node) -> None:
    """Nothing on the page is fetched: no external script, style sheet or image."""
    assert not page.all("link")
    for s in page.all("script"):
        assert "src" not in s.attrs
    for img in page.all("img"):
        assert img.attrs["src"].startswith("data:image/png;base64,")
    csp = [m for m in page.all("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0].attrs["content"]


# -- results to render ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def patched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    """A real patching sweep of zoo:induction's heads (n = 8), saved."""
    from faithlens.tasks.induction import induction_task

    res = fl.patch(fl.load("zoo:induction"), induction_task(8, seed=0), sites="head", n_boot=100)
    out = res.save(tmp_path_factory.mktemp("runs") / "patch")
    return res, out


@pytest.fixture(scope="module")
def scrubbed(patched: tuple[Result, Path]) -> tuple[Result, Path]:
    """A real causal scrubbing result on a toy circuit (it carries warnings), saved beside."""
    from faithlens import scrubbing as sc
    from tests.helpers.scrub_toys import hash_game, hyp_answer, reward_loss

    model, data = hash_game(200)
    h = sc.Hypothesis("false", feature=hyp_answer)
    res = sc.scrub(
        model, h, data, n=100, behaviour=sc.Fn(reward_loss, name="minus reward"), n_boot=200
    )
    assert res.warnings  # the page must show them
    out = res.save(patched[1].parent / "scrub" / "toy")
    return res, out


@dataclass(frozen=True)
class Est:
    """An estimate with its interval, shaped as faithlens.stats.Interval."""

    estimate: Any
    se: Any
    ci_low: Any
    ci_high: Any
    level: float = 0.95


@dataclass(frozen=True)
class HtmlToyResult(Result):
    """A result whose every string is hostile HTML."""

    name: str = "<script>alert('name')</script>"
    values: np.ndarray = field(default_factory=lambda: np.array([3.0, 1.0, np.nan, 2.0]))
    warnings: list[str] = field(default_factory=lambda: ["<b>bold</b> & <i>broken"])
    meta: dict[str, Any] = field(default_factory=lambda: {"command": "a < b"})

    def to_frame(self) -> pd.DataFrame:
        labels = ["<img src=x onerror=alert(1)>", "b", "c", "d"]
        return pd.DataFrame({"label <th>": labels, "value": self.values})

    def summary(self) -> str:
        return f"toy </pre><script>alert(2)</script> {self.name}"

    def intervals(self) -> dict[str, Est]:
        return {
            "mean": Est(np.float64(2.0), 0.5, 1.0, 3.0),
            "per row": Est(self.values, self.values, self.values, self.values),
        }


@pytest.fixture
def toy_plotter(monkeypatch: pytest.MonkeyPatch) -> None:
    from faithlens.report.plots import subplots

    def draw(res: HtmlToyResult, ax: Any = None) -> Any:
        fig, a = subplots(1, 1, figsize=(3, 2))
        a.plot(res.values)
        return fig

    monkeypatch.setattr(renderers, "_PLOTTERS", dict(renderers._PLOTTERS))
    register_plotter(HtmlToyResult, draw)


# -- the page --------------------------------------------------------------------------------


def test_page_of_a_patching_folder(patched: tuple[Result, Path]) -> None:
    res, out = patched
    before = (out / R.MANIFEST).read_bytes()
    page_path = html.render_report(out)
    assert page_path == out / "report.html"
    page = dom(page_path.read_text())
    no_network(page)
    assert page.one("title").text().startswith("PatchingResult: exact activation patching")
    # what was run
    run = {tr.one("th").text(): tr.one("td").text() for tr in page.one("table", "fl-run").all("tr")}
    assert run["model"] == "zoo:induction" and run["task"] == "induction" and run["n"] == "8"
    assert run["seed"] == "0" and run["level"] == "0.95" and run["n_boot"] == "100"
    assert run["class"] == "faithlens.patching.result.PatchingResult"
    assert run["saved by"] == f"faithlens {fl.__version__}"
    assert run["folder"] == str(out.resolve())
    # the full table, every row and column of to_frame()
    frame = res.to_frame()
    heads, rows = table_of(page)
    assert heads == [str(c) for c in frame.columns] and len(rows) == len(frame)
    assert [r[0] for r in rows] == list(frame["site"])
    assert "fl-sortable" in page.one("table", "fl-table").attrs["class"]
    body = page.one("table", "fl-table").one("tbody")
    cells = body.all("td")
    effect = heads.index("effect")
    keys = [float(tr.all("td")[effect].attrs["data-v"]) for tr in body.all("tr")]
    assert keys == pytest.approx(list(frame["effect"]))  # sort keys are the exact values
    assert len(cells) == len(frame) * len(frame.columns)
    # the plot, a real PNG
    (img,) = page.all("img")
    png = base64.b64decode(img.attrs["src"].split(",", 1)[1])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
    # how to reload it, and the headline
    assert f"fl.Result.load({str(out.resolve())!r})" in page.text()
    assert res.summary().splitlines()[0] in page.one("pre", "fl-summary").text()
    # the page is a view: the folder still verifies and loads, its manifest unchanged
    assert (out / R.MANIFEST).read_bytes() == before
    assert "report.html" not in R.verify(out)["files"]
    back = Result.load(out)
    assert back.to_frame().equals(frame)
    # written again (it is ours), atomically, with nothing left beside it
    html.render_report(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_warnings_of_the_result_are_on_the_page(scrubbed: tuple[Result, Path]) -> None:
    res, out = scrubbed
    page = dom(html.render_report(out).read_text())
    shown = [d.text() for d in page.all("div", "fl-warning")]
    assert shown[: len(res.warnings)] == list(res.warnings)
    assert table_of(page)[0] == [str(c) for c in res.to_frame().columns]


def test_everything_is_escaped(tmp_path: Path, toy_plotter: None) -> None:
    toy = HtmlToyResult()
    text = html.report_html(toy)
    page = dom(text)
    assert len(page.all("script")) == 1  # the page's own sorting script, nothing injected
    assert len(page.all("img")) == 1  # the plot; not the label's <img>
    assert "<script>alert" not in text and "&lt;script&gt;alert" in text
    assert "<b>bold</b>" not in text
    assert [d.text() for d in page.all("div", "fl-warning")] == ["<b>bold</b> & <i>broken"]
    heads, rows = table_of(page)
    assert heads == ["label <th>", "value"]
    assert rows[0] == ["<img src=x onerror=alert(1)>", "3"]
    assert page.one("pre", "fl-summary").text() == toy.summary()
    run = {tr.one("th").text(): tr.one("td").text() for tr in page.one("table", "fl-run").all("tr")}
    assert run["name"] == toy.name and run["meta.command"] == "a < b"
    assert run["values"] == "array of shape (4,) (float64)"


def test_headline_shows_the_intervals(toy_plotter: None) -> None:
    page = dom(html.report_html(HtmlToyResult()))
    body = page.one("table", "fl-intervals").one("tbody")
    rows = [[td.text() for td in tr.all("td")] for tr in body.all("tr")]
    assert rows[0] == ["mean", "2", "95% [1, 3]", "0.5"]
    assert rows[1] == ["per row", "4 values", "95% in the table", ""]
    # provenance the result records is not claimed missing, the rest is named
    note = next(p.text() for p in page.all("p", "fl-note") if "Not recorded" in p.text())
    assert "command" not in note and "commit" in note and "wall time" in note


def test_nan_cells_are_empty_and_sort_last(toy_plotter: None) -> None:
    page = dom(html.report_html(HtmlToyResult()))
    tds = [tr.all("td")[1] for tr in page.one("table", "fl-table").one("tbody").all("tr")]
    assert [td.text() for td in tds] == ["3", "1", "", "2"]
    assert [td.attrs["data-v"] for td in tds] == ["3.0", "1.0", "", "2.0"]


def test_a_result_that_cannot_be_drawn_says_so() -> None:
    page = dom(html.report_html(HtmlToyResult()))  # no plotter registered for the toy
    (err,) = page.all("div", "fl-error")
    assert err.text().startswith("plot() failed: NotImplementedError: no plotter is registered")
    assert not page.all("img")


def test_long_tables_are_cut_and_say_so() -> None:
    page = dom(html.report_html(HtmlToyResult(), max_rows=2))
    assert len(table_of(page)[1]) == 2
    note = page.all("p", "fl-note")
    assert any("4 rows, the first 2 shown" in p.text() for p in note)


def test_damaged_folder_gets_no_page(patched: tuple[Result, Path], tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(patched[1], out)
    (out / "report.html").unlink(missing_ok=True)
    with open(out / "table.parquet", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ResultError, match=r"table\.parquet"):
        html.render_report(out)
    assert not (out / "report.html").exists()


def test_a_page_faithlens_did_not_write_is_never_replaced(
    patched: tuple[Result, Path], tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(patched[1], out)
    (out / "report.html").write_text("<html>my own notes</html>")
    with pytest.raises(ResultError, match="not written by faithlens report"):
        html.render_report(out)
    assert (out / "report.html").read_text() == "<html>my own notes</html>"


# -- the index -----------------------------------------------------------------------------


def test_index_of_a_folder_of_runs(
    patched: tuple[Result, Path], scrubbed: tuple[Result, Path], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(patched[1].parent, runs)  # patch/ and scrub/toy/
    shutil.copytree(patched[1], runs / "broken")
    (runs / "broken" / "result.json").write_text("{}")
    (runs / ".patch.tmp-123").mkdir()  # what a crashed save leaves: not a result
    (runs / ".patch.tmp-123" / "result.json").write_text("{}")
    index = html.render_index(runs)
    assert index == runs / "index.html"
    page = dom(index.read_text())
    no_network(page)
    heads, rows = table_of(page)
    assert heads == ["folder", "class", "headline", "estimates", "saved"]
    by = {r[0]: r for r in rows}
    assert set(by) == {"patch", "scrub/toy", "broken"}
    assert by["patch"][1] == "PatchingResult" and by["scrub/toy"][1] == "ScrubResult"
    assert by["patch"][2] == patched[0].summary().splitlines()[0]
    assert "truncated or edited after saving" in by["broken"][2]
    links = {a.attrs["href"] for a in page.all("a")}
    assert links == {"patch/report.html", "scrub/toy/report.html"}
    for link in links:  # each linked page was written
        assert dom((runs / link).read_text()).one("title")
    assert "1 of them could not be loaded" in page.text()
    with pytest.raises(ResultError, match="holds no results folder"):
        html.render_index(tmp_path / "runs" / "scrub" / "toy" / "frames")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultError, match="holds no results folder"):
        html.render_index(tmp_path / "empty")


# -- notebook display ------------------------------------------------------------------------


def test_notebook_display_is_the_report_headline_and_table(patched: tuple[Result, Path]) -> None:
    res = patched[0]
    fragment = res._repr_html_()
    assert fragment is not None
    nb = dom(fragment)
    page = dom(html.report_html(res, folder=patched[1]))
    # one implementation: the same headline block as the page
    assert nb.one("div", "fl-headline").text() == page.one("div", "fl-headline").text()
    heads, rows = table_of(nb)
    assert heads == table_of(page)[0] and rows == table_of(page)[1]
    assert not nb.all("script") and not nb.all("img")
    # a long table is cut in a notebook, and says so
    cut = dom(html.notebook_html(res, max_rows=3))
    assert len(table_of(cut)[1]) == 3 and "first 3 shown" in cut.text()


def test_no_renderer_means_the_plain_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(renderers, "_HTML", {})
    assert HtmlToyResult()._repr_html_() is None
    R.register_html(Result, lambda r: "<p>x</p>")
    assert HtmlToyResult()._repr_html_() == "<p>x</p>"
    with pytest.raises(TypeError, match="not callable"):
        R.register_html(Result, "nope")  # type: ignore[arg-type]


def test_every_library_result_renders_in_a_notebook() -> None:
    assert R.html_for(Result) is html.notebook_html
    for cls in [fl.PatchingResult, fl.ScrubResult, fl.DASResult, fl.AuditResult]:
        assert R.html_for(cls) is html.notebook_html


# -- in a real browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def das_folder(patched: tuple[Result, Path]) -> Path:
    """A real DAS result on the synthetic task (small), saved beside the others."""
    import torch

    from faithlens.tasks.synthetic_das import synthetic_das

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t1, _ = synthetic_das(
            "og_holdouts", seed=11111, n_per_class=20, extra_dims=2, classifier_epochs=150
        )
        res = fl.das(t1.model, t1.data, "h", dims=1, method="linear", epochs=20, seed=1)
    finally:
        torch.set_num_threads(threads)
    return res.save(patched[1].parent / "das")


def _browser() -> Any:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip(
            "chromium is not installed: apt-get install chromium (.ci/run tries); the "
            "browser test needs the system browser and never downloads one"
        )
    return sync_api, exe


def test_the_browser_test_skips_without_chromium(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("playwright.sync_api")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        _browser()


@pytest.mark.slow
def test_pages_in_headless_chromium(
    patched: tuple[Result, Path],
    scrubbed: tuple[Result, Path],
    das_folder: Path,
    tmp_path: Path,
) -> None:
    sync_api, exe = _browser()
    runs = patched[1].parent
    html.render_report(patched[1])
    html.render_report(scrubbed[1])
    html.render_report(das_folder)
    pages = {
        "patch": patched[1] / "report.html",
        "scrub": scrubbed[1] / "report.html",
        "das": das_folder / "report.html",
        "index": html.render_index(runs),
    }
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=args)
        try:
            for name, path in pages.items():
                _check_page(browser, name, path, tmp_path)
        finally:
            browser.close()


def _check_page(browser: Any, name: str, path: Path, shots: Path) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else 0)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "request",
        lambda r: None if r.url.startswith(("file:", "data:")) else problems.append(r.url),
    )
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    table = page.locator("table.fl-table")
    box = table.bounding_box()
    assert table.is_visible() and box is not None and box["width"] > 0 and box["height"] > 0
    for img in page.locator("img").all():
        ok = img.evaluate("i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0")
        ib = img.bounding_box()
        assert ok and ib is not None and ib["width"] > 50 and ib["height"] > 50, name
    if name != "index":
        assert page.locator("img").count() >= 1, f"{name}: no plot"

    # sorting on a header click: ascending, then descending, on the first column of numbers
    # that are not all equal (the first column where there is none)
    def keys(col: int) -> list[str]:
        return page.eval_on_selector_all(
            "table.fl-table tbody tr",
            f"rows => rows.map(r => r.cells[{col}].getAttribute('data-v'))",
        )

    heads = page.locator("table.fl-table thead th")
    col, numeric = 0, False
    for i in range(heads.count()):
        filled = [k for k in keys(i) if k]
        try:
            values = [float(k) for k in filled]
        except ValueError:
            continue
        if len(set(values)) >= 2:
            col, numeric = i, True
            break
    header = heads.nth(col)
    before = keys(col)
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    up = keys(col)
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    down = keys(col)
    assert sorted(up) == sorted(before), name
    filled_up, filled_down = [k for k in up if k], [k for k in down if k]
    assert up[len(filled_up) :] == [""] * (len(up) - len(filled_up))  # empty cells last
    if numeric:
        assert [float(k) for k in filled_up] == sorted(float(k) for k in filled_up), name
        assert [float(k) for k in filled_down] == sorted(
            (float(k) for k in filled_up), reverse=True
        ), name
    else:
        assert filled_up == sorted(filled_up, key=str.lower), name
        assert filled_down == filled_up[::-1], name
    shot = shots / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not problems, f"{name}: {problems}"
    page.close()


def test_folder_listing_is_the_manifest(patched: tuple[Result, Path]) -> None:
    page = dom(html.render_report(patched[1]).read_text())
    listed = json.loads((patched[1] / R.MANIFEST).read_text())["files"]
    rows = [[td.text() for td in tr.all("td")] for tr in page.one("table", "fl-files").all("tr")]
    assert [r[0] for r in rows if r] == sorted(listed)
    assert all(r[2] == listed[r[0]]["sha256"] for r in rows if r)
