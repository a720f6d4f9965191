"""The explain page escapes every string a user or a corpus supplies: the text, the file name,
the run folder's name, token strings and the dataset's document snippets. A corpus full of
markup goes through hvdlm.preprocess (its BPE tokenizer learns tokens such as `")</`), an
untrained GPT with that tokenizer sits in a run folder whose name is markup too, and
hvdlm.explain writes a page for a file and for the val split. The page must hold only the tags
and attributes hvdlm writes, every `&` must start an entity, and the hostile strings must read
back as text.

    .venv/bin/python -m pytest tests/test_explain_escaping.py
"""
from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hvdlm.config import Config
from hvdlm.explain.command import main as explain_main
from hvdlm.models import build_model
from hvdlm.text.tokenizer import load_tokenizer
from hvdlm.training import checkpoint
from tests.conftest import run_module

HOSTILE = "<script>alert(\"x&y\")</script> <img src=x onerror='z'> &amp; &lt;b&gt;"
RUN_NAME = "run<i>&\"'"
FILE_NAME = "<b>notes&\"'.txt"
# What hvdlm writes (page.py, pictures.py); anything else came from the input.
TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "b", "table",
        "tr", "th", "td", "section", "div", "span", "figure", "figcaption", "img", "svg",
        "line", "polyline", "rect", "circle", "text"}
ATTRS = {"lang", "charset", "class", "id", "style", "title", "src", "width", "height", "alt",
         "viewbox", "xmlns", "x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "points", "fill",
         "stroke", "stroke-width", "stroke-dasharray", "text-anchor", "transform",
         "font-size", "opacity", "role", "aria-label"}
ENTITY = re.compile(r"&(#[0-9]+|#x[0-9a-fA-F]+|[a-zA-Z]+);")


class Page(HTMLParser):
    """Every tag and attribute of a page, its text and attribute values as a browser reads them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.text: list[str] = []
        self.values: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)
        self.values.extend(value or "" for _, value in attrs)

    def handle_data(self, data) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder named with markup, dataset whose documents are markup)."""
    root = tmp_path_factory.mktemp("hostile")
    corpus = root / "corpus"
    corpus.mkdir()
    for k in range(6):
        (corpus / f"doc{k}.txt").write_text(f"{HOSTILE}\nline {k} of a document\n" * 20)
    data = root / "data"
    run_module("hvdlm.preprocess", corpus, "--out", data, "--tokenizer", "bpe",
               "--vocab-size", "300", "--val-fraction", "0.5", "--seed", "0", check=True)
    tokenizer = load_tokenizer(data / "tokenizer.json")
    config = Config()
    config.model.n_layer, config.model.n_head, config.model.n_embd = 1, 2, 16
    config.model.seq_len, config.model.vocab_size = 32, tokenizer.vocab_size
    run = root / RUN_NAME
    checkpoint.save(run, checkpoint.TrainingState(
        model=build_model(config.model).state_dict(), optimizer={}, step=0, consumed_samples=0,
        config=config.to_dict(), tokenizer_sha256=tokenizer.sha256), keep=1)
    shutil.copy(data / "tokenizer.json", run / "tokenizer.json")
    return run, data


def _page(run: Path, out: Path, *source: object) -> tuple[str, Page]:
    assert explain_main([str(a) for a in ("--run", run, *source, "--out", out)]) == 0
    html = (out / "index.html").read_text(encoding="utf-8")
    return html, Page(html)


def _only_hvdlms_markup(html: str, page: Page) -> None:
    assert page.tags <= TAGS, page.tags - TAGS
    assert page.attrs <= ATTRS, page.attrs - ATTRS
    assert "<script" not in html.lower() and "<img src=x" not in html
    for at in (m.start() for m in re.finditer("&", html)):
        assert ENTITY.match(html, at), html[at:at + 20]


def test_text_file_name_run_name_and_tokens_are_escaped(hostile_run, tmp_path):
    run, _ = hostile_run
    text_file = tmp_path / FILE_NAME
    text_file.write_text(HOSTILE * 2)
    html, page = _page(run, tmp_path / "report", "--file", text_file)
    _only_hvdlms_markup(html, page)
    text = "".join(page.text)
    assert str(text_file) in text                       # the section's title: the file name
    assert f"hvdlm explain: {run}" in text              # <title>, the run's path
    assert str(run) in text.split("hvdlm explain:", 1)[1]  # and the header table
    assert HOSTILE * 2 in text                          # the token spans read back as the text
    # BPE tokens such as `")</` in the tooltips (titles), read back unharmed
    assert any("</" in v for v in page.values)


def test_dataset_snippets_are_escaped(hostile_run, tmp_path):
    run, data = hostile_run
    html, page = _page(run, tmp_path / "report", "--data", data, "--split", "val",
                       "--documents", "1")
    _only_hvdlms_markup(html, page)
    assert "Hardest documents" in "".join(page.text)
    assert any(HOSTILE[:40] in t for t in page.text)    # a snippet, read back as text


def test_text_option_is_escaped(hostile_run, tmp_path):
    run, _ = hostile_run
    html, page = _page(run, tmp_path / "report", "--text", HOSTILE)
    _only_hvdlms_markup(html, page)
    assert HOSTILE in "".join(page.text)
