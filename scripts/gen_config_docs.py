"""Write docs/configuration.md from `chatbot_model.config.Settings`: every setting's environment variable, type,
default and description, grouped as the class groups them. The descriptions live on the fields; this only
renders them, so the page cannot drift from the code (tests/test_docs.py regenerates and compares).

    python scripts/gen_config_docs.py            # rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check    # exit 1 when the committed page is stale
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
from pathlib import Path
from typing import Union, get_args, get_origin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic import AliasChoices, SecretStr  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from chatbot_model.config import NAMED_CHOICES, PROJECT_ROOT, Settings  # noqa: E402

OUT = ROOT / "docs" / "configuration.md"
COMMAND = "python scripts/gen_config_docs.py"
TYPE_NAMES = {str: "text", int: "integer", float: "number", bool: "true/false", Path: "path", SecretStr: "secret"}

HEADER = f"""# Configuration

<!-- generated from chatbot_model/config.py by `{COMMAND}`: edit the field descriptions there, not this file -->

Every setting is an environment variable, read and validated once at start-up by the one `Settings` object
(`chatbot_model/config.py`, pydantic-settings); a bad value stops the process with a message naming the
variable. `llmops-chatbot config` prints the effective values, secrets masked. The provider keys and the
tracking store keep their usual names (`OPENAI_API_KEY`, `MLFLOW_TRACKING_URI`, ...); the `CHATBOT_` name
works for them too.

"""


def env_names(name: str, field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(c) for c in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"{Settings.model_config.get('env_prefix', '')}{name}".upper()]


def type_name(annotation) -> str:
    args = get_args(annotation)
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return " or ".join(type_name(a) for a in inner) + ", optional"
    return TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def bounds(field: FieldInfo) -> str:
    """`>= 1`, `0 ..= 1`, `> 0`: the numeric limits the field validates."""
    low = high = ""
    for meta in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">")):
            if getattr(meta, attr, None) is not None:
                low = f"{sign} {getattr(meta, attr)}"
        for attr, sign in (("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                high = f"{sign} {getattr(meta, attr)}"
    return ", ".join(b for b in (low, high) if b)


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, Path):
        try:  # the checkout's artifacts, shown relative (an installed wheel finds them in the working directory)
            value = value.resolve().relative_to(PROJECT_ROOT)
        except ValueError:
            pass
        return f"`{value.as_posix()}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return "empty"
    if isinstance(value, str) and str(PROJECT_ROOT) in value:  # the checkout's store: not this checkout's path
        value = value.replace(str(PROJECT_ROOT), "CHECKOUT")
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def sections() -> dict[str, str]:
    """field name -> the `# comment` heading above it in the class body ("" before the first)."""
    heading, out = "", {}
    for line in inspect.getsource(Settings).splitlines():
        if m := re.match(r"^    # (.+)$", line):  # "rollouts (server/rollout.py): follow ..." -> "rollouts"
            heading = re.split(r" \(|:", m.group(1))[0].strip()
        elif (m := re.match(r"^    (\w+)\s*:", line)) and m.group(1) in Settings.model_fields:
            out[m.group(1)] = heading
    return out


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    grouped: dict[str, list[str]] = {}
    heading_of = sections()
    for name, field in Settings.model_fields.items():
        names = env_names(name, field)
        variable = "`" + names[0] + "`" + "".join(f" (or `{n}`)" for n in names[1:])
        kind = type_name(field.annotation)
        if name in NAMED_CHOICES:
            kind = "one of " + ", ".join(f"`{c}`" for c in NAMED_CHOICES[name][1])
        elif limits := bounds(field):
            kind = f"{kind}, {limits}"
        if field.metadata and any(getattr(m, "pattern", None) for m in field.metadata):
            kind += ", letters, digits, `_` and `-`"
        row = f"| {variable} | {cell(kind)} | {cell(default_text(field))} | {cell(field.description or '')} |"
        grouped.setdefault(heading_of.get(name, ""), []).append(row)
    parts = [HEADER]
    for heading, rows in grouped.items():
        parts.append(f"## {heading[:1].upper() + heading[1:] if heading else 'Other'}\n\n"
                     "| variable | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n")
    return "".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale; run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(Settings.model_fields)} settings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
