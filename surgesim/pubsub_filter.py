"""Pub/Sub subscription filters in the real syntax, parsed once and evaluated on attributes.

Supported, as in Pub/Sub: `attributes.KEY = "v"`, `attributes.KEY != "v"`,
`attributes:KEY` (has the key), `hasPrefix(attributes.KEY, "p")`, `NOT` or `-` before a
term, `AND`, `OR`, and parentheses. As in Pub/Sub, AND and OR cannot be mixed at one level
without parentheses. A key with characters beyond letters, digits, `_` and `-` is written
quoted: `attributes."iana.org/language"`. Shared by the simulator and the emulator
bridge so both filter the same messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Mapping

Predicate = Callable[[Mapping[str, str]], bool]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<op>!=|=|:|\(|\)|,|-)
    | (?P<word>[A-Za-z_][A-Za-z0-9_.-]*)
    )""",
    re.VERBOSE,
)


class FilterSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterSyntaxError(f"unexpected character {text[pos:].lstrip()[:1]!r} at {pos}")
        kind = m.lastgroup or ""
        out.append(_Tok(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s[1:-1])


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, text: str | None = None, kind: str | None = None) -> _Tok:
        tok = self.peek()
        if tok is None or (text is not None and tok.text != text) or (kind is not None and tok.kind != kind):
            want = repr(text) if text else kind
            got = repr(tok.text) if tok else "end of filter"
            raise FilterSyntaxError(f"expected {want}, got {got}")
        self.i += 1
        return tok

    def expression(self) -> Predicate:
        terms = [self.term()]
        joiner = None
        while (tok := self.peek()) is not None and tok.text in ("AND", "OR"):
            if joiner is not None and tok.text != joiner:
                raise FilterSyntaxError("AND and OR cannot be mixed without parentheses")
            joiner = self.take().text
            terms.append(self.term())
        if len(terms) == 1:
            return terms[0]
        if joiner == "AND":
            return lambda a, ts=tuple(terms): all(t(a) for t in ts)
        return lambda a, ts=tuple(terms): any(t(a) for t in ts)

    def term(self) -> Predicate:
        tok = self.peek()
        if tok is not None and tok.text in ("NOT", "-"):
            self.take()
            inner = self.term()
            return lambda a: not inner(a)
        if tok is not None and tok.text == "(":
            self.take("(")
            inner = self.expression()
            self.take(")")
            return inner
        if tok is not None and tok.text == "hasPrefix":
            self.take()
            self.take("(")
            key = self.attribute()
            self.take(",")
            prefix = _unquote(self.take(kind="string").text)
            self.take(")")
            return lambda a: key in a and a[key].startswith(prefix)
        key = self.attribute(allow_has=True)
        if isinstance(key, tuple):  # attributes:KEY
            k = key[0]
            return lambda a: k in a
        op = self.take(kind="op").text if (t := self.peek()) is not None and t.text in ("=", "!=") else None
        if op is None:
            raise FilterSyntaxError(f"expected = or != after attributes.{key}")
        value = _unquote(self.take(kind="string").text)
        if op == "=":
            return lambda a: a.get(key) == value
        # As in Pub/Sub, `!=` matches messages that lack the key too.
        return lambda a: a.get(key) != value

    def attribute(self, allow_has: bool = False):
        tok = self.take(kind="word")
        if tok.text == "attributes" and allow_has and self.peek() is not None and self.peek().text == ":":
            self.take(":")
            nxt = self.take()
            if nxt.kind == "string":
                return (_unquote(nxt.text),)
            if nxt.kind != "word":
                raise FilterSyntaxError(f"expected an attribute key after 'attributes:', got {nxt.text!r}")
            return (nxt.text,)
        if tok.text == "attributes" and self.peek() is not None and self.peek().text.startswith("."):
            # tokenizer folds a dot into words; quoted keys arrive as `attributes.` + string
            pass
        if tok.text.startswith("attributes.") and len(tok.text) > len("attributes."):
            return tok.text[len("attributes."):]
        if tok.text == "attributes." and (s := self.peek()) is not None and s.kind == "string":
            return _unquote(self.take().text)
        raise FilterSyntaxError(f"expected attributes.KEY, got {tok.text!r}")


@lru_cache(maxsize=1024)
def parse_filter(text: str) -> Predicate:
    """Compile a filter; raises FilterSyntaxError naming what is wrong. An empty filter matches all."""
    if not text or not text.strip():
        return lambda a: True
    parser = _Parser(text)
    predicate = parser.expression()
    if parser.peek() is not None:
        raise FilterSyntaxError(f"unexpected {parser.peek().text!r} after a complete expression")
    return predicate


def matches(filter_text: str | None, attributes: Mapping[str, str]) -> bool:
    return parse_filter(filter_text or "")(attributes)
