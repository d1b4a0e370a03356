"""Reading Terraform files: python-hcl2's parse tree, cut into blocks and attributes that
keep their file and line so every later message can point at the source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lark import Token, Tree
from lark.exceptions import LarkError

from hcl2.api import parses_to_tree


class HclError(ValueError):
    """A Terraform file that cannot be read or parsed."""


@dataclass(frozen=True)
class Where:
    file: Path
    line: int
    shown: str = ""
    """The file as messages name it (relative to the imported directory)."""

    def __str__(self) -> str:
        return f"{self.shown or self.file.name}:{self.line}"


@dataclass
class Attr:
    name: str
    expr: Tree
    where: Where


@dataclass
class Block:
    type: str
    labels: list[str]
    attrs: dict[str, Attr] = field(default_factory=dict)
    blocks: list["Block"] = field(default_factory=list)
    where: Where | None = None

    def children(self, type_: str) -> list["Block"]:
        return [b for b in self.blocks if b.type == type_]


def _name(node: Tree | Token) -> str:
    """An attribute name, block type or unquoted label."""
    if isinstance(node, Token):
        return str(node)
    if node.data == "string":
        return "".join(str(p.children[0]) for p in node.children if isinstance(p, Tree))
    return str(node.children[0])


def _body(body: Tree, path: Path, shown: str = "") -> tuple[dict[str, Attr], list[Block]]:
    attrs: dict[str, Attr] = {}
    blocks: list[Block] = []
    for node in body.children:
        if not isinstance(node, Tree):
            continue
        if node.data == "attribute":
            name = _name(node.children[0])
            attrs[name] = Attr(name, node.children[-1], Where(path, node.meta.line, shown))
        elif node.data == "block":
            parts = [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]
            inner = parts[-1]
            head = parts[:-1]
            sub_attrs, sub_blocks = _body(inner, path, shown)
            blocks.append(Block(_name(head[0]), [_name(h) for h in head[1:]], sub_attrs, sub_blocks,
                                Where(path, node.meta.line, shown)))
    return attrs, blocks


def read_file(path: Path, shown: str = "") -> list[Block]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HclError(f"{path}: cannot read: {exc}") from None
    try:
        tree = parses_to_tree(text)
    except LarkError as exc:
        line = getattr(exc, "line", None)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HclError(f"{shown or path.name}{f':{line}' if line else ''}: HCL syntax error: {first}") from None
    attrs, blocks = _body(tree.children[0], path, shown)
    for name, attr in attrs.items():
        raise HclError(f"{attr.where}: {name}: an attribute outside any block")
    return blocks


def read_dir(directory: Path, root: Path | None = None) -> list[Block]:
    """The top-level blocks of every `*.tf` file of one module directory, in file order;
    messages name files relative to `root` (the imported directory)."""
    if not directory.is_dir():
        raise HclError(f"{directory}: not a directory")
    files = sorted(directory.glob("*.tf"))
    if not files:
        raise HclError(f"{directory}: no *.tf files")
    blocks: list[Block] = []
    for path in files:
        try:
            shown = str(path.relative_to(root)) if root is not None else path.name
        except ValueError:
            shown = str(path)
        blocks.extend(read_file(path, shown))
    return blocks


def read_tfvars(path: Path) -> dict[str, Attr]:
    """A `.tfvars` file: top-level attributes only."""
    try:
        tree = parses_to_tree(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise HclError(f"{path}: cannot read: {exc}") from None
    except LarkError as exc:
        line = getattr(exc, "line", None)
        raise HclError(f"{path.name}{f':{line}' if line else ''}: HCL syntax error") from None
    attrs, blocks = _body(tree.children[0], path)
    if blocks:
        raise HclError(f"{blocks[0].where}: a .tfvars file holds only `name = value` lines")
    return attrs


def parse_expression(text: str, origin: str) -> Tree:
    """An expression given on the command line (`-var k=v` with an HCL value)."""
    try:
        tree = parses_to_tree(f"v = {text}\n")
    except LarkError:
        raise HclError(f"{origin}: not an HCL value: {text!r}") from None
    attrs, _ = _body(tree.children[0], Path(origin))
    return attrs["v"].expr
