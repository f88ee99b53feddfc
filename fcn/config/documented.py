"""config.yml from the schema: every key's default, with its field docstring as a comment above it.

The docstrings are read from fcn/config/schema.py's source (a string right under a field is the
field's documentation), so the schema is the one place a key is documented.
"""

from __future__ import annotations

import dataclasses

import yaml
from omegaconf import OmegaConf

from fcn.config import schema
from fcn.config.loading import to_dict


def _field_docs() -> dict[str, dict[str, str]]:
    """Return {dataclass name: {field: docstring}} read from the source of fcn/config/schema.py."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(schema))
    docs: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = docs.setdefault(node.name, {})
        body = node.body
        for stmt, nxt in zip(body, body[1:] + [None]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                fields[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def documented_yaml() -> str:
    """Return the default config as YAML with every key's doc as a comment (config.yml's source)."""
    import textwrap

    docs = _field_docs()
    defaults = to_dict(OmegaConf.structured(schema.Config))
    lines: list[str] = []

    def emit(cls: type, values: dict, indent: int) -> None:
        pad = "  " * indent
        for f in dataclasses.fields(cls):
            value = values[f.name]
            doc = docs.get(cls.__name__, {}).get(f.name)
            if doc:
                for row in textwrap.wrap(doc, width=100 - len(pad) - 2):
                    lines.append(f"{pad}# {row}")
            sub = getattr(schema, str(f.type), None)  # annotations are strings (PEP 563)
            if dataclasses.is_dataclass(sub):
                lines.append(f"{pad}{f.name}:")
                emit(sub, value, indent + 1)
            else:
                dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, width=1000).strip()
                lines.append(f"{pad}{dumped[1:-1] if dumped.startswith('{') else dumped}")

    header = (
        "# pytorch-fcn: the default configuration, every key with its meaning.\n"
        "# Edit it, or keep it and pass differences: python train.py key=value ...\n"
        "# Regenerate from the schema (fcn/config/schema.py) with: python -m fcn.config > config.yml\n"
    )
    for f in dataclasses.fields(schema.Config):
        lines.append(f"{f.name}:")
        emit(getattr(schema, str(f.type)), defaults[f.name], 1)
        lines.append("")
    return header + "\n" + "\n".join(lines).rstrip() + "\n"
