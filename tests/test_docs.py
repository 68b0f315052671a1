"""The docs hold together: README.md stays under 200 lines; every relative link and #anchor in README.md,
BENCHMARKS.md and docs/*.md resolves; the commands they show name real things (llmops-chatbot commands and
options, make targets, MLproject entry points and parameters, the options of scripts/ and benchmarks/,
repository paths); the architecture picture draws the imports between packages; docs/configuration.md is what
`python scripts/gen_config_docs.py` renders from `Settings` today."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*```")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def prose(text: str) -> str:
    """The text outside fenced code blocks (links in code are not links)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return "\n".join(out)


def code(text: str) -> list[str]:
    """Command-like text: every line of a fenced block (comments cut, continuations joined) and every inline
    code span."""
    lines, fenced, pending = [], False, ""
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            line = re.sub(r"(^|\s)#.*$", "", line)
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            lines.append(pending + line)
            pending = ""
        else:
            lines += re.findall(r"`([^`\n]+)`", line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text()).splitlines():
        if m := re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
        out.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
    return out


def test_readme_is_under_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; move detail into docs/ and link it"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {rel(dest)}")
    assert not broken, f"{rel(page)}:\n" + "\n".join(broken)


# ---------------------------------------------------------------- commands name real things
def _cli():
    import click

    from chatbot_model.cli.main import main

    return click, main


def _cli_problems(line: str) -> list[str]:
    """`llmops-chatbot CMD [SUB] --opt ...`: the command resolves and each --option is one it takes."""
    click, main = _cli()
    problems = []
    for m in re.finditer(r"(?:^|[\s(/])llmops-chatbot((?:\s+[^|;&)#]*)?)", line):
        try:
            tokens = shlex.split(m.group(1).replace("[", " ").replace("]", " "))
        except ValueError:
            tokens = m.group(1).split()
        if not tokens or not re.match(r"^[a-z][\w-]*$", tokens[0]):
            continue
        command, ctx = main, click.Context(main)
        for token in tokens:
            if token.startswith("-") or not isinstance(command, click.Group):
                break
            sub = command.get_command(ctx, token)
            if sub is None:
                problems.append(f"`llmops-chatbot ... {token}`: no such command in {line.strip()!r}")
                break
            command, ctx = sub, click.Context(sub, parent=ctx)
        else:
            if isinstance(command, click.Group) and command is main:
                continue
        known = {o for p in command.params for o in p.opts + p.secondary_opts} | {"--help"}
        for token in tokens:
            if token.startswith("--") and token.split("=")[0] not in known:
                problems.append(f"`{command.name}` has no option {token.split('=')[0]} (in {line.strip()!r})")
    return problems


def _make_problems(line: str, targets: set[str]) -> list[str]:
    return [f"no make target {t!r} (in {line.strip()!r})"
            for t in re.findall(r"(?:^|[\s;(])make\s+(?:-\S+\s+)*([a-z][\w-]*)(?=\s|$)", line) if t not in targets]


def _mlproject_problems(line: str, entry_points: dict) -> list[str]:
    problems = []
    for m in re.finditer(r"mlflow run \S+ -e (\w+)((?:\s+-P\s+\w+=\S*)*)", line):
        entry = entry_points.get(m.group(1))
        if entry is None:
            problems.append(f"no MLproject entry point {m.group(1)!r}")
            continue
        for param in re.findall(r"-P\s+(\w+)=", m.group(2)):
            if param not in entry.get("parameters", {}):
                problems.append(f"MLproject entry point {m.group(1)!r} has no parameter {param!r}")
    return problems


def _script_problems(line: str) -> list[str]:
    """`python scripts/X.py --opt`: each --opt is declared in the script's source (argparse)."""
    problems = []
    for script, args in re.findall(r"python\s+((?:scripts|benchmarks)/[\w/]+\.py)([^|;&#`]*)", line):
        source = (ROOT / script).read_text() if (ROOT / script).exists() else ""
        for option in re.findall(r"(?<!\S)(--[\w-]+)", args):
            if f'"{option}"' not in source and f"'{option}'" not in source:
                problems.append(f"{script} takes no option {option} (in {line.strip()!r})")
    return problems


REPO_PATH = re.compile(r"(?<![\w./-])((?:chatbot_model|scripts|tests|benchmarks|artifacts|k8s|notebooks|docs)"
                       r"/[\w.*/-]*[\w*/])")


def _path_problems(line: str) -> list[str]:
    problems = []
    for path in REPO_PATH.findall(line):
        if not (list(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()):
            problems.append(f"no such path {path} (in {line.strip()!r})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_commands_and_paths_in_the_docs_exist(page):
    targets = set(re.findall(r"^([a-z][\w-]*)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.MULTILINE))
    entry_points = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    problems = []
    for line in code(page.read_text()):
        problems += _cli_problems(line) + _make_problems(line, targets) + _mlproject_problems(line, entry_points)
        problems += _path_problems(line) + _script_problems(line)
    assert not problems, f"{rel(page)}:\n" + "\n".join(dict.fromkeys(problems))


# ---------------------------------------------------------------- the architecture picture
def test_architecture_picture_draws_the_imports_between_packages():
    """docs/architecture.md's mermaid arrows are exactly the imports between packages (test_architecture's
    graph), and each points down the layers."""
    from tests.test_architecture import LAYERS, _graph

    root = LAYERS[-1]
    package = lambda module: "root" if (module.split(".") + ["__init__"])[1] in root else module.split(".")[1]  # noqa: E731
    actual = {(package(m), package(d)) for m, deps in _graph().items() for d in deps if package(m) != package(d)}
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```mermaid\n(.*?)```", text, re.DOTALL).group(1)
    drawn = set(re.findall(r"^\s*(\w+) --> (\w+)\s*$", block, re.MULTILINE))
    order = [next(iter(names)) if len(names) == 1 else "root" for names in LAYERS]
    assert not [e for e in drawn if order.index(e[0]) >= order.index(e[1])], "arrows pointing up"
    assert not actual - drawn, f"imports missing from docs/architecture.md's picture: {sorted(actual - drawn)}"
    assert not drawn - actual, f"arrows in docs/architecture.md with no import behind them: {sorted(drawn - actual)}"


# ---------------------------------------------------------------- the generated configuration reference
def test_configuration_reference_is_current():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_config_docs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == gen_config_docs.render(), (
        "docs/configuration.md is stale (a Settings field was added or changed); regenerate it with "
        "`python scripts/gen_config_docs.py` and commit the result")
