"""The docs stay true: their code runs, their links resolve, api.md matches the docstrings."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

import shmenv

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Pages whose ```python blocks must run as written. A block right after an
# <!-- no-test --> line is skipped (for code that needs a GPU, a long run, ...).
RUNNABLE_PAGES = ["README.md", "docs/quickstart.md", "docs/migration.md"]
_BLOCK = re.compile(r"(<!-- no-test -->\s*\n)?```python\n(.*?)```", re.S)
_NEEDS = {"stable_baselines3": "stable_baselines3", "torch": "torch"}


def python_blocks(page: str) -> list[tuple[str, str]]:
    path = ROOT / page
    if not path.exists():
        return []
    text = path.read_text()
    blocks = []
    for number, match in enumerate(_BLOCK.finditer(text), 1):
        if match.group(1):
            continue
        line = text[:match.start(2)].count("\n") + 1
        blocks.append((f"{page}:{line} (block {number})", match.group(2)))
    return blocks


SNIPPETS = [block for page in RUNNABLE_PAGES for block in python_blocks(page)]


@pytest.mark.parametrize("code", [code for _, code in SNIPPETS],
                         ids=[where for where, _ in SNIPPETS])
def test_doc_snippet_runs(code, no_leaked_segments):  # noqa: F811
    for module, package in _NEEDS.items():
        if re.search(rf"^\s*(from|import) {module}\b", code, re.M):
            pytest.importorskip(module, reason=f"snippet needs {package}, not installed")
    if "torch" in code or "stable_baselines3" in code:
        import torch

        torch.set_num_threads(1)
    namespace: dict = {"__name__": "__doc_snippet__"}
    exec(compile(code, "<doc snippet>", "exec"), namespace)  # noqa: S102


def test_quickstart_and_migration_have_snippets():
    """The snippet test above must not pass by finding nothing."""
    pages = {where.split(":")[0] for where, _ in SNIPPETS}
    assert {"docs/quickstart.md", "docs/migration.md"} <= pages
    assert sum(w.startswith("docs/quickstart.md") for w, _ in SNIPPETS) >= 4


def test_api_page_matches_the_docstrings():
    spec = importlib.util.spec_from_file_location("gen_api", DOCS / "gen_api.py")
    gen_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_api)
    expected = gen_api.render()
    assert (DOCS / "api.md").read_text() == expected, \
        "docs/api.md is stale: run PYTHONPATH=. python docs/gen_api.py"
    public = set(shmenv.__all__) - {"__version__"}
    assert public == gen_api.documented_names(), \
        "every name in shmenv.__all__ needs an entry in docs/gen_api.py SECTIONS"
    for name in public:
        assert f"### shmenv.{name}\n" in expected


def test_public_names_are_importable_and_documented():
    for name in shmenv.__all__:
        obj = getattr(shmenv, name)
        if name != "__version__":
            assert (obj.__doc__ or "").strip(), f"shmenv.{name} has no docstring"
    assert re.fullmatch(r"\d+\.\d+\.\d+", shmenv.__version__)
    assert (ROOT / "shmenv" / "py.typed").exists()


_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_doc_links_resolve(page):
    text = (DOCS / page).read_text()
    for target, _anchor in _LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert (DOCS / target).exists(), f"{page} links to missing {target}"


def test_examples_page_shows_a_committed_curve_and_its_command():
    text = (DOCS / "examples.md").read_text()
    assert "![" in text and "figures/ppo_breakout.png" in text
    assert (DOCS / "figures" / "ppo_breakout.png").stat().st_size > 10_000
    assert "python examples/ppo_breakout.py" in text
