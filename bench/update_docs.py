"""Rewrite the generated tables in docs/performance.md from bench/results/*.json.

Every generated block sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->``; the
prose around them is left alone. Each block is the suite's own tables (the ones
``shmenv bench`` prints) rendered as markdown, under a line naming the machine.
Usage: ``python bench/update_docs.py RESULTS_DIR DOC``.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

from shmenv.benchmarks.report import machine_line

# marker in the doc -> (results file, suite module in shmenv.benchmarks)
SECTIONS = {
    "throughput": ("throughput", "throughput"),
    "coordination": ("coordination", "coordination"),
    "startup": ("startup", "startup"),
    "anyenv_cartpole": ("anyenv_cartpole", "anyenv"),
    "anyenv_halfcheetah": ("anyenv_halfcheetah", "anyenv"),
    "anyenv_humanoid": ("anyenv_humanoid", "anyenv"),
    "layouts": ("layouts", "layouts"),
    "profile_labml": ("profile_labml", "profile_step"),
    "profile_standard": ("profile_standard", "profile_step"),
}


def render(suite: str, data: dict) -> str:
    module = importlib.import_module(f"shmenv.benchmarks.{suite}")
    if hasattr(module, "derive"):  # saved results: fill in the ratios again
        data = module.derive(data)
    tables = "\n\n".join(table.markdown() for table in module.tables(data))
    return f"Machine: {machine_line(data['machine'])}.\n\n{tables}\n"


def main(results_dir: str, doc_path: str) -> None:
    results, doc = Path(results_dir), Path(doc_path)
    text = doc.read_text()
    for marker, (name, suite) in SECTIONS.items():
        path = results / f"{name}.json"
        if not path.exists():
            continue
        pattern = re.compile(rf"(<!-- BEGIN {marker} -->\n).*?(<!-- END {marker} -->)",
                             re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{doc}: no <!-- BEGIN {marker} --> ... <!-- END {marker} --> block")
        block = render(suite, json.loads(path.read_text()))
        text = pattern.sub(lambda m, b=block: m.group(1) + b + m.group(2), text)
    doc.write_text(text)


if __name__ == "__main__":
    main(*sys.argv[1:3])
