"""Presenting benchmark results: one table model (console and markdown), plots, JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "processor": platform.processor() or platform.machine(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["processor"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:
        pass
    return info


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def write_json(path: str, data: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def mib(nbytes: float | None) -> str:
    return "—" if nbytes is None else f"{nbytes / 2**20:,.0f} MiB"


def ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def progress():
    """A rich progress bar writing to stderr (stdout stays clean for tables)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)


@dataclass
class Table:
    """One results table, rendered to the console (:meth:`print`) and to markdown for docs/
    (:meth:`markdown`) from the same cells, so the two can never disagree."""

    title: str
    columns: Sequence[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def print(self) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table as RichTable

        # Plain text, not rich markup: a note such as 'pip install "gymnasium[mujoco]"'
        # must keep its brackets.
        table = RichTable(title=escape(self.title),
                          caption=escape("\n".join(self.notes)) or None,
                          caption_justify="left")
        for i, column in enumerate(self.columns):
            table.add_column(escape(column), justify="left" if i == 0 else "right",
                             no_wrap=i == 0)
        for row in self.rows:
            table.add_row(*(escape(cell) for cell in row))
        console = Console()
        if not console.is_terminal:  # piped or redirected: don't squeeze into 80 columns
            console = Console(width=170)
        console.print(table)

    def markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        lines = [f"{self.title}.", "", line(self.columns),
                 "|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|"]
        lines += [line(row) for row in self.rows]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def print_tables(tables: Sequence[Table]) -> None:
    for table in tables:
        table.print()


def machine_line(machine: dict[str, Any]) -> str:
    """One sentence naming the machine a result was measured on (for docs/)."""
    load = machine.get("load_average_at_start")
    load_text = f", load average at start {load[0]:.1f}" if load else ""
    memory = machine.get("memory_bytes")
    memory_text = f", {memory / 2**30:.0f} GiB" if memory else ""
    return (f"{machine['cpu_count']} cores ({machine['processor']}){memory_text}, "
            f"{machine['platform']}, Python {machine['python']}{load_text}")


def bar_plot(path: str, labels: Sequence[str], medians: Sequence[float],
             lows: Sequence[float], highs: Sequence[float], xlabel: str, title: str,
             highlight: Sequence[bool] | None = None) -> None:
    """Horizontal bars (median) with min–max whiskers, first label on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(8, 0.45 * n + 1.4))
    ys = list(range(n))[::-1]
    errors = [[m - lo for m, lo in zip(medians, lows)], [hi - m for m, hi in zip(medians, highs)]]
    colors = ["#1f77b4" if not (highlight and highlight[i]) else "#d62728" for i in range(n)]
    ax.barh(ys, medians, xerr=errors, color=colors, capsize=3, ecolor="#333333")
    ax.set_yticks(ys, labels)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    for y, m, hi in zip(ys, medians, highs):
        ax.text(max(m, hi), y, f"  {m:,.{0 if m >= 10 else 2}f}", va="center", fontsize=8)
    ax.margins(x=0.15)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
