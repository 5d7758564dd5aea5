"""Generate docs/api.md from shmenv's signatures and docstrings.

    PYTHONPATH=. python docs/gen_api.py            # rewrite docs/api.md
    PYTHONPATH=. python docs/gen_api.py --check    # exit 1 if docs/api.md is stale

tests/test_docs.py runs the check, so a changed signature or docstring without a
regenerated page fails the tests.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from enum import Enum
from pathlib import Path

API_PATH = Path(__file__).with_name("api.md")

# (module, name, members documented for a class). Every name in shmenv.__all__ must be here.
SECTIONS: list[tuple[str, list[tuple[str, str, tuple[str, ...]]]]] = [
    ("Creating environments", [
        ("shmenv", "make", ()),
        ("shmenv", "ShmVectorEnv", ("reset", "step", "step_async", "step_wait",
                                    "reset_async", "reset_wait", "close")),
        ("shmenv", "AsyncVectorEnv", ("reset", "step", "step_async", "step_wait",
                                      "reset_async", "reset_wait", "call", "call_async",
                                      "call_wait", "get_attr", "set_attr", "render",
                                      "close")),
        ("shmenv", "Worker", ()),
        ("shmenv", "WorkerGroup", ("start", "close")),
        ("shmenv", "AutoresetMode", ()),
    ]),
    ("Games and options", [
        ("shmenv", "GameOptions", ()),
        ("shmenv", "resolve_game", ()),
        ("shmenv", "known_games", ()),
        ("shmenv", "UnknownGameError", ()),
    ]),
    ("envpool's API: `from shmenv import envpool`", [
        ("shmenv", "envpool", ()),
        ("shmenv.envpool", "make", ()),
        ("shmenv.envpool", "make_gymnasium", ()),
        ("shmenv.envpool", "make_gym", ()),
        ("shmenv.envpool", "EnvPool", ("reset", "step", "send", "recv", "async_reset")),
    ]),
    ("Errors", [
        ("shmenv", "ShmenvError", ()),
        ("shmenv", "ClosedError", ()),
        ("shmenv", "WorkerDiedError", ()),
        ("shmenv", "WorkerError", ()),
        ("shmenv", "WorkerTimeoutError", ()),
        ("shmenv", "ForkedEnvError", ()),
        ("shmenv", "SharedMemorySpaceError", ()),
    ]),
    ("Stable-Baselines3 (`pip install \"shmenv[sb3]\"`)", [
        ("shmenv.sb3", "make_vec_env", ()),
        ("shmenv.sb3", "ShmSB3VecEnv", ("reset", "step_async", "step_wait", "close",
                                        "get_attr", "set_attr", "env_method",
                                        "env_is_wrapped")),
        ("shmenv.sb3", "SubprocVecEnv", ("set_attr", "env_method", "env_is_wrapped")),
        ("shmenv.sb3", "FrameStackWarning", ()),
    ]),
    ("Command-line tools as functions", [
        ("shmenv.record", "record", ()),
        ("shmenv.record", "stack_picture", ()),
        ("shmenv.sysinfo", "collect_info", ()),
    ]),
]

# Sections that open with their module's docstring (it explains what the entries share).
SECTION_MODULES = {"Stable-Baselines3 (`pip install \"shmenv[sb3]\"`)": "shmenv.sb3",
                   "Command-line tools as functions": None}

HEADER = """# API reference

Generated from the docstrings by `docs/gen_api.py`; `tests/test_docs.py` fails if this
page and the code disagree. Everything listed under `shmenv` is importable from the package
top level (`shmenv.__all__`); `shmenv.__version__` is the version string.
"""


def _param(param: inspect.Parameter) -> str:
    """One parameter as written in the source: annotations unquoted, enums by name."""
    text = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(
        param.kind, "") + param.name
    if param.annotation is not inspect.Parameter.empty:
        annotation = param.annotation
        if not isinstance(annotation, str):
            annotation = inspect.formatannotation(annotation)
        text += f": {annotation}"
    if param.default is not inspect.Parameter.empty:
        default = param.default
        shown = (f"{type(default).__name__}.{default.name}" if isinstance(default, Enum)
                 else repr(default))
        text += f" = {shown}" if param.annotation is not inspect.Parameter.empty else f"={shown}"
    return text


def _signature(obj: object, qualname: str) -> str:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return qualname
    params: list[str] = []
    keyword_only_marked = False
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.KEYWORD_ONLY and not keyword_only_marked:
            params.append("*")
            keyword_only_marked = True
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            keyword_only_marked = True
        params.append(_param(param))
    returns = signature.return_annotation
    tail = "" if returns is inspect.Signature.empty or isinstance(obj, type) else \
        f" -> {returns if isinstance(returns, str) else inspect.formatannotation(returns)}"
    text = f"{qualname}({', '.join(params)}){tail}"
    if len(text) <= 90:
        return text
    return f"{qualname}(\n    " + ",\n    ".join(params) + f",\n){tail}"


def _doc(obj: object) -> str:
    doc = inspect.getdoc(obj)
    if not doc:
        raise ValueError(f"{obj!r} has no docstring: document it before generating api.md")
    return _markdown(doc)


_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod):`~?([^`]+)`")
_SECTION = re.compile(r"^(Args|Arguments|Attributes|Returns|Raises):$")
_ITEM = re.compile(r"^    (\*{0,2}[\w.]+): (.*)$")


def _markdown(doc: str) -> str:
    """Docstring (reST-flavoured) -> Markdown: roles become code, ``Args:``-style sections
    become bullet lists, doctest lines become a code block."""
    doc = _ROLE.sub(r"``\1``", doc)
    doc = re.sub(r"(?<=\S)::$", ":", doc, flags=re.M)  # reST "text::" before a code block
    doc = re.sub(r"^::\n\n", "", doc, flags=re.M)  # a bare "::" line: the block stays indented
    out: list[str] = []
    in_section = in_doctest = False
    for line in doc.splitlines():
        if line.startswith(">>>") and not in_doctest:
            out += ["```python"]
            in_doctest = True
        elif in_doctest and not line.strip():
            out += ["```"]
            in_doctest = False
        if in_doctest:
            out.append(line)
            continue
        if _SECTION.match(line):
            out += [f"**{line[:-1]}**", ""]
            in_section = True
            continue
        if in_section:
            item = _ITEM.match(line)
            if item:
                out.append(f"- ``{item.group(1)}``: {item.group(2)}")
                continue
            if line.startswith("        "):
                out[-1] += " " + line.strip()
                continue
            in_section = False
        out.append(line)
    if in_doctest:
        out.append("```")
    return "\n".join(out)


def _base_name(base: type) -> str:
    """A base class as users import it: ``RuntimeError``, ``ShmenvError``, but
    ``multiprocessing.TimeoutError`` (not the builtin) and ``gymnasium.error.X``."""
    module = base.__module__
    if module == "builtins" or module.startswith("shmenv"):
        return base.__name__
    top = module.split(".")[0]
    if getattr(importlib.import_module(top), base.__name__, None) is base:
        module = top
    return f"{module}.{base.__name__}"


def _anchor(title: str) -> str:
    return "".join(c for c in title.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def _is_enum(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, Enum)


def render() -> str:
    parts = [HEADER]
    toc = []
    body = []
    for title, entries in SECTIONS:
        toc.append(f"- [{title}](#{_anchor(title)})")
        body.append(f"## {title}\n")
        intro_module = SECTION_MODULES.get(title)
        if intro_module:
            body.append(_doc(importlib.import_module(intro_module)) + "\n")
        for module_name, name, members in entries:
            obj = getattr(importlib.import_module(module_name), name)
            qualname = f"{module_name}.{name}"
            body.append(f"### {qualname}\n")
            if _is_enum(obj):
                values = ", ".join(f"`{m.name}` (`{m.value!r}`)" for m in obj)
                body.append(f"gymnasium's `{obj.__module__}.{obj.__name__}`, re-exported. "
                            f"Values: {values}.\n")
                continue
            if isinstance(obj, type) and issubclass(obj, BaseException):
                bases = ", ".join(_base_name(b) for b in obj.__bases__)
                body.append(f"```python\nclass {name}({bases})\n```\n")
            else:
                body.append(f"```python\n{_signature(obj, qualname)}\n```\n")
            body.append(_doc(obj) + "\n")
            for member in members:
                method = obj.__dict__.get(member) or getattr(obj, member)
                body.append(f"#### {name}.{member}\n")
                body.append(f"```python\n{_signature(method, member)}\n```\n")
                body.append(_doc(method) + "\n")
    parts.append("\n".join(toc) + "\n")
    parts.extend(body)
    return "\n".join(parts)


def documented_names() -> set[str]:
    return {name for _, entries in SECTIONS for module, name, _ in entries if module == "shmenv"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if API_PATH.read_text() != text:
            print(f"{API_PATH} is stale: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    API_PATH.write_text(text)
    print(f"wrote {API_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
