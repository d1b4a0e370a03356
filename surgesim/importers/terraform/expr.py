"""Evaluating HCL expressions statically, from python-hcl2's parse tree.

Values are plain Python (str, int, float, bool, None, list, dict) or objects with
`get_attr`/`get_index` (variables, resources, modules: resolved lazily, on first use).
What cannot be known before `terraform apply` (a value from a data source, an attribute
only the cloud assigns, an unsupported construct) evaluates to `Unknown`, which carries
the reason and spreads through every operation that touches it: the importer reports
it against the resource and attribute that needed it instead of guessing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Protocol

from lark import Token, Tree


class Unknown:
    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unknown({self.reason!r})"


class Scope(Protocol):
    def lookup(self, name: str) -> Any: ...
    def child(self, names: dict[str, Any]) -> "Scope": ...
    def read_file(self, path: str) -> Any: ...


def first_unknown(*values: Any) -> Unknown | None:
    for v in values:
        if isinstance(v, Unknown):
            return v
    return None


def materialise(value: Any) -> Any:
    """Turn lazy objects into plain values (for functions and for_each). A resource
    instance stays an object: `for_each = google_x.y` hands out instances whose computed
    attributes (`.id`, `.uri`) must stay readable."""
    if getattr(value, "keep_lazy", False):
        return value
    if hasattr(value, "materialise"):
        return materialise(value.materialise())
    if isinstance(value, list):
        return [materialise(v) for v in value]
    if isinstance(value, dict):
        return {k: materialise(v) for k, v in value.items()}
    return value


def contains_unknown(value: Any) -> Unknown | None:
    if isinstance(value, Unknown):
        return value
    if isinstance(value, list):
        return next((u for u in map(contains_unknown, value) if u), None)
    if isinstance(value, dict):
        return next((u for u in map(contains_unknown, value.values()) if u), None)
    return None


def to_string(value: Any) -> str | Unknown:
    if isinstance(value, Unknown):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (str, int, float)):
        return str(value)
    if value is None:
        return Unknown("a null value inside a string")
    return Unknown(f"a {type(value).__name__} cannot be used inside a string")


# ---- functions ------------------------------------------------------------------------


def _number(v: Any) -> Any:
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return Unknown(f"tonumber: {v!r} is not a number")
        return int(f) if f.is_integer() else f
    return v


def _lookup(m: dict, key: str, *default: Any) -> Any:
    if key in m:
        return m[key]
    if default:
        return default[0]
    return Unknown(f"lookup: no key {key!r} and no default")


def _coalesce(*args: Any) -> Any:
    return next((a for a in args if a not in (None, "")), Unknown("coalesce: every argument is null or empty"))


def _format(spec: str, args: list) -> Any:
    """Terraform's format() for the verbs configurations use: %s, %d, %v and %%."""
    out: list[str] = []
    pos = 0
    for m in re.finditer(r"%(.)", spec):
        out.append(spec[pos:m.start()])
        pos = m.end()
        verb = m.group(1)
        if verb == "%":
            out.append("%")
        elif verb in "sdv" and args:
            out.append(str(to_string(args.pop(0))))
        else:
            return Unknown(f"format(): the verb %{verb} is not supported by the importer")
    out.append(spec[pos:])
    return "".join(out)


def _set(values: list) -> list:
    # Terraform sets of strings iterate in lexical order.
    return sorted(set(values), key=str)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "upper": lambda s: s.upper(),
    "lower": lambda s: s.lower(),
    "title": lambda s: s.title(),
    "trimspace": lambda s: s.strip(),
    "trimprefix": lambda s, p: s[len(p):] if s.startswith(p) else s,
    "trimsuffix": lambda s, p: s[: -len(p)] if p and s.endswith(p) else s,
    "trim": lambda s, chars: s.strip(chars),
    "replace": lambda s, old, new: s.replace(old, new),
    "format": lambda f, *a: _format(f, list(a)),
    "join": lambda sep, items: sep.join(items),
    "split": lambda sep, s: s.split(sep),
    "substr": lambda s, off, n: s[off: off + n if n >= 0 else None],
    "startswith": lambda s, p: s.startswith(p),
    "endswith": lambda s, p: s.endswith(p),
    "length": len,
    "concat": lambda *ls: [x for l in ls for x in l],
    "merge": lambda *ms: {k: v for m in ms for k, v in m.items()},
    "flatten": lambda l: [y for x in l for y in (x if isinstance(x, list) else [x])],
    "distinct": lambda l: list(dict.fromkeys(l)),
    "contains": lambda l, v: v in l,
    "keys": lambda m: sorted(m),
    "values": lambda m: [m[k] for k in sorted(m)],
    "lookup": _lookup,
    "element": lambda l, i: l[i % len(l)],
    "index": lambda l, v: l.index(v),
    "zipmap": lambda ks, vs: dict(zip(ks, vs)),
    "coalesce": _coalesce,
    "compact": lambda l: [x for x in l if x not in (None, "")],
    "min": min,
    "max": max,
    "abs": abs,
    "toset": _set,
    "tolist": list,
    "tomap": dict,
    "tostring": lambda v: to_string(v),
    "tonumber": _number,
    "tobool": lambda v: v if isinstance(v, bool) else v == "true",
    "jsonencode": lambda v: json.dumps(v, separators=(",", ":")),
    "jsondecode": json.loads,
}
UNSUPPORTED = {
    "templatefile": "templatefile() renders a template: not evaluated by the importer (use file() for a literal file)",
    "timestamp": "timestamp() is known only at apply time",
    "uuid": "uuid() is known only at apply time",
    "yamlencode": "yamlencode() is not supported",
}


# ---- the evaluator ----------------------------------------------------------------------

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _unescape(text: str) -> str:
    def sub(m: re.Match) -> str:
        c = m.group(1)
        if c in _ESCAPES:
            return _ESCAPES[c]
        if c[0] in "uU":
            return chr(int(c[1:], 16))
        return m.group(0)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", sub, text)


def _trees(node: Tree) -> list[Tree]:
    return [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


def _heredoc(text: str, trim: bool) -> Any:
    body = text.split("\n", 1)[1] if "\n" in text else ""
    lines = body.rstrip("\n").split("\n")[:-1]  # the last line holds the closing marker
    if trim:
        indents = [len(l) - len(l.lstrip()) for l in lines if l.strip()]
        cut = min(indents, default=0)
        lines = [l[cut:] for l in lines]
    out = "\n".join(lines) + ("\n" if lines else "")
    if re.search(r"(?<!\$)\$\{|(?<!%)%\{", out):
        return Unknown("an interpolation inside a heredoc is not evaluated by the importer")
    return out.replace("$${", "${").replace("%%{", "%{")


def _binary(op: str, a: Any, b: Any) -> Any:
    u = first_unknown(a, b)
    if u:
        return u
    try:
        if op == "+":
            return _number(a) + _number(b)
        if op == "-":
            return _number(a) - _number(b)
        if op == "*":
            return _number(a) * _number(b)
        if op == "/":
            return _number(a) / _number(b)
        if op == "%":
            return _number(a) % _number(b)
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op in ("<", ">", "<=", ">="):
            x, y = _number(a), _number(b)
            return {"<": x < y, ">": x > y, "<=": x <= y, ">=": x >= y}[op]
        if op == "&&":
            return bool(a) and bool(b)
        if op == "||":
            return bool(a) or bool(b)
    except (TypeError, ZeroDivisionError) as exc:
        return Unknown(f"{a!r} {op} {b!r}: {exc}")
    return Unknown(f"operator {op} is not supported")


def get_attr(value: Any, name: str) -> Any:
    if isinstance(value, Unknown):
        return value
    if hasattr(value, "get_attr"):
        return value.get_attr(name)
    if isinstance(value, dict):
        return value[name] if name in value else Unknown(f"no attribute {name!r}")
    if isinstance(value, list) and len(value) == 1 and hasattr(value[0], "get_attr"):
        # A nested block read without [0] (Terraform needs the index; be lenient).
        return value[0].get_attr(name)
    return Unknown(f"cannot read .{name} of a {type(value).__name__}")


def get_index(value: Any, key: Any) -> Any:
    u = first_unknown(value, key)
    if u:
        return u
    if hasattr(value, "get_index"):
        return value.get_index(key)
    try:
        if isinstance(value, list):
            return value[int(key)]
        if isinstance(value, dict):
            return value[key] if key in value else Unknown(f"no key {key!r}")
    except (IndexError, ValueError, TypeError):
        return Unknown(f"index {key!r} is out of range")
    return Unknown(f"cannot index a {type(value).__name__}")


class Evaluator:
    def __init__(self, scope: Scope):
        self.scope = scope

    def eval(self, node: Tree | Token) -> Any:
        if isinstance(node, Token):
            return Unknown(f"unexpected token {node!s}")
        method = getattr(self, "_" + str(node.data), None)
        if method is None:
            return Unknown(f"the expression `{node.data}` is not supported")
        return method(node)

    # -- structure
    def _expr_term(self, node: Tree) -> Any:
        return self.eval(_trees(node)[0])

    def _conditional(self, node: Tree) -> Any:
        cond, a, b = _trees(node)
        c = self.eval(cond)
        if isinstance(c, Unknown):
            return c
        return self.eval(a if c else b)

    def _binary_op(self, node: Tree) -> Any:
        lhs, term = _trees(node)[:2]
        op_node, rhs = _trees(term)
        return _binary(str(op_node.children[0]), self.eval(lhs), self.eval(rhs))

    def _unary_op(self, node: Tree) -> Any:
        op, operand = node.children[0], self.eval(_trees(node)[0])
        if isinstance(operand, Unknown):
            return operand
        return (not operand) if str(op) == "!" else -_number(operand)

    # -- literals
    def _int_lit(self, node: Tree) -> Any:
        return int(node.children[0])

    def _float_lit(self, node: Tree) -> Any:
        return float(node.children[0])

    def _literal_value(self, node: Tree) -> Any:
        return {"true": True, "false": False, "null": None}[str(node.children[0])]

    def _string(self, node: Tree) -> Any:
        out: list[str] = []
        for part in node.children:
            if not isinstance(part, Tree):
                continue
            inner = part.children[0]
            if isinstance(inner, Token):
                if inner.type == "ESCAPED_INTERPOLATION":
                    out.append(str(inner)[1:])
                elif inner.type == "ESCAPED_DIRECTIVE":
                    out.append(str(inner)[1:])
                else:
                    out.append(_unescape(str(inner)))
            elif inner.data == "interpolation":
                v = to_string(materialise(self.eval(_trees(inner)[0])))
                if isinstance(v, Unknown):
                    return v
                out.append(v)
            else:
                return Unknown("template directives (%{if}/%{for}) are not evaluated by the importer")
        return "".join(out)

    def _heredoc_template(self, node: Tree) -> Any:
        return _heredoc(str(node.children[0]), trim=False)

    def _heredoc_template_trim(self, node: Tree) -> Any:
        return _heredoc(str(node.children[0]), trim=True)

    def _template_string(self, node: Tree) -> Any:
        return Unknown("escaped template strings are not supported")

    def _tuple(self, node: Tree) -> Any:
        return [self.eval(t) for t in _trees(node)]

    def _object(self, node: Tree) -> Any:
        out: dict[str, Any] = {}
        for elem in _trees(node):
            key_node, value_node = _trees(elem)
            inner = _trees(key_node)[0] if _trees(key_node) else key_node
            # A bare name as a key is the name itself, not a variable.
            if inner.data == "expr_term" and _trees(inner)[0].data == "identifier":
                key: Any = str(_trees(inner)[0].children[0])
            elif inner.data == "keyword":
                key = str(inner.children[0])
            else:
                key = to_string(self.eval(inner))
            if isinstance(key, Unknown):
                return key
            out[key] = self.eval(value_node)
        return out

    # -- names, attributes, indexes
    def _identifier(self, node: Tree) -> Any:
        return self.scope.lookup(str(node.children[0]))

    def _get_attr_expr_term(self, node: Tree) -> Any:
        base, attr = _trees(node)
        return get_attr(self.eval(base), str(_trees(attr)[0].children[0]))

    def _index_expr_term(self, node: Tree) -> Any:
        base, index = _trees(node)
        return get_index(self.eval(base), self._index_key(index))

    def _index_key(self, index: Tree) -> Any:
        if index.data == "short_index":
            return int(index.children[-1])
        return materialise(self.eval(_trees(index)[0]))

    def _splat(self, node: Tree) -> Any:
        base, splat = _trees(node)
        value = self.eval(base)
        if isinstance(value, Unknown):
            return value
        if hasattr(value, "materialise") and not isinstance(value, list):
            value = value.materialise()
        items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
        out = []
        for item in items:
            for op in _trees(splat):
                item = (get_attr(item, str(_trees(op)[0].children[0])) if op.data == "get_attr"
                        else get_index(item, self._index_key(op)))
            out.append(item)
        return out

    _attr_splat_expr_term = _splat
    _full_splat_expr_term = _splat

    # -- functions
    def _function_call(self, node: Tree) -> Any:
        parts = _trees(node)
        if len(parts) > 1 and parts[1].data == "identifier":
            return Unknown("provider-defined functions are not supported")
        name = str(parts[0].children[0])
        args_node = next((p for p in parts[1:] if p.data == "arguments"), None)
        args = [materialise(self.eval(a)) for a in _trees(args_node)] if args_node is not None else []
        if args_node is not None and any(isinstance(c, Token) and c.type == "ELLIPSIS" for c in args_node.children):
            args = args[:-1] + list(args[-1] if isinstance(args[-1], list) else [args[-1]])
        if name == "try":
            return next((a for a in args if not contains_unknown(a)), Unknown("try(): no argument could be evaluated"))
        if name == "can":
            return not contains_unknown(args[0]) if args else Unknown("can() needs an argument")
        u = next((contains_unknown(a) for a in args if contains_unknown(a)), None)
        if u:
            return u
        if name == "file":
            return self.scope.read_file(args[0])
        if name in UNSUPPORTED:
            return Unknown(UNSUPPORTED[name])
        fn = FUNCTIONS.get(name)
        if fn is None:
            return Unknown(f"the function {name}() is not supported by the importer")
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 -- a user's arguments of the wrong shape: name the call
            return Unknown(f"{name}(): {exc}")

    # -- for expressions
    def _for_intro(self, node: Tree) -> tuple[list[str], Any]:
        names = [str(t.children[0]) for t in _trees(node) if t.data == "identifier"]
        collection = materialise(self.eval([t for t in _trees(node) if t.data != "identifier"][0]))
        return names, collection

    def _for_items(self, node: Tree) -> Any:
        intro = next(t for t in _trees(node) if t.data == "for_intro")
        names, coll = self._for_intro(intro)
        if isinstance(coll, Unknown):
            return coll
        pairs = list(coll.items()) if isinstance(coll, dict) else list(enumerate(coll))
        cond = next((t for t in _trees(node) if t.data == "for_cond"), None)
        for k, v in pairs:
            bound = {names[0]: k, names[1]: v} if len(names) == 2 else {names[0]: v}
            sub = Evaluator(self.scope.child(bound))
            if cond is not None:
                keep = sub.eval(_trees(cond)[0])
                if isinstance(keep, Unknown):
                    yield keep
                    return
                if not keep:
                    continue
            yield sub

    def _for_tuple_expr(self, node: Tree) -> Any:
        body = [t for t in _trees(node) if t.data not in ("for_intro", "for_cond")][0]
        out = []
        for sub in self._for_items(node):
            if isinstance(sub, Unknown):
                return sub
            out.append(sub.eval(body))
        return out

    def _for_object_expr(self, node: Tree) -> Any:
        key_node, value_node = [t for t in _trees(node) if t.data not in ("for_intro", "for_cond")][:2]
        grouped = any(isinstance(c, Token) and c.type == "ELLIPSIS" for c in node.children)
        out: dict[str, Any] = {}
        for sub in self._for_items(node):
            if isinstance(sub, Unknown):
                return sub
            k = to_string(sub.eval(key_node))
            if isinstance(k, Unknown):
                return k
            v = sub.eval(value_node)
            if grouped:
                out.setdefault(k, []).append(v)
            else:
                out[k] = v
        return out


def read_text_file(path: str, base: Path) -> Any:
    p = Path(path)
    if not p.is_absolute():
        p = base / p
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Unknown(f"file({path!r}): {exc.strerror if isinstance(exc, OSError) else exc}")
