"""A YAML document's text edited at the spans of its nodes; every other character is kept.

ruamel.yaml's round trip keeps comments, but it re-indents and re-quotes all it writes and
costs about 15 s a megabyte (pure Python). Here the document is parsed once, with libyaml
where PyYAML has it (its C loader), into nodes that carry their character offsets; an edit
replaces one span of the text, the rest is copied as it was. Time is linear in the file.

The offsets are characters of the ``str`` parsed (libyaml and PyYAML's pure loader both count
characters, line breaks of every kind included), so they index the text directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # PyYAML built without libyaml: the same result, slower
    from yaml import SafeLoader as _Loader


class LayoutNotHandled(Exception):
    """The text is laid out in a way these edits do not handle (flow style, complex keys);
    the caller falls back to rendering the whole document."""


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    text: str


def parse(text: str) -> tuple[Node | None, Any]:
    """(root node, constructed data) of one document; raises yaml.YAMLError."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data


def load(text: str) -> Any:
    return parse(text)[1]


def apply(text: str, edits: list[Edit]) -> str:
    """``text`` with ``edits`` (non-overlapping) applied; one pass over the text."""
    parts: list[str] = []
    at = 0
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        if edit.start < at:
            raise LayoutNotHandled("overlapping edits")
        parts.append(text[at : edit.start])
        parts.append(edit.text)
        at = edit.end
    parts.append(text[at:])
    return "".join(parts)


def content_end(node: Node) -> int:
    """Offset just after the last character of ``node``'s own content (a block collection's
    end mark lies at the next token, past any comments that follow it)."""
    if isinstance(node, ScalarNode) or node.flow_style:
        return int(node.end_mark.index)
    children: list[Node] = []
    if isinstance(node, MappingNode) and node.value:
        children = [node.value[-1][1]]
    elif isinstance(node, SequenceNode) and node.value:
        children = [node.value[-1]]
    if not children:
        return int(node.end_mark.index)
    return content_end(children[0])


def line_start(text: str, offset: int) -> int:
    return text.rfind("\n", 0, offset) + 1


def line_end(text: str, offset: int) -> int:
    """Offset of the line break that ends the line holding ``offset`` (or the text's end)."""
    found = text.find("\n", offset)
    return len(text) if found < 0 else found


def block(node: Node | None, kind: type[Node]) -> Any:
    """``node`` if it is a block (not flow) collection of ``kind``, else LayoutNotHandled."""
    if not isinstance(node, kind) or node.flow_style:
        raise LayoutNotHandled(f"not a block {kind.__name__}")
    return node


def key_alone_on_line(text: str, key: Node) -> bool:
    """Whether only indentation precedes ``key`` on its line (not ``- `` or ``? ``)."""
    start = int(key.start_mark.index)
    return not text[line_start(text, start) : start].strip()


def dash_column(text: str, item: Node) -> int:
    """The column of the ``-`` that introduces a block sequence item."""
    start = int(item.start_mark.index)
    first = line_start(text, start)
    dash = text.rfind("-", first, start)
    if dash < 0:
        raise LayoutNotHandled("sequence item without its dash on the same line")
    return dash - first


def render(value: Any) -> list[str]:
    """``value`` as block YAML lines, indented from column 0."""
    text = yaml.safe_dump(
        value, sort_keys=False, default_flow_style=False, width=4096, allow_unicode=True
    )
    return text.rstrip("\n").split("\n")


def indented(lines: list[str], indent: int, *, first: str | None = None) -> str:
    """``lines`` joined, each indented by ``indent``; the first line prefixed by ``first``
    instead when given (text that continues a line already there)."""
    pad = " " * indent
    out = [(first if first is not None else pad) + lines[0]]
    out.extend(pad + line if line else line for line in lines[1:])
    return "\n".join(out)


def sequence_item(lines: list[str], dash_col: int, content_col: int) -> str:
    """A block sequence item: the dash at ``dash_col``, the content at ``content_col``."""
    content = max(content_col, dash_col + 2)
    first = " " * dash_col + "-" + " " * (content - dash_col - 1)
    return indented(lines, content, first=first)
