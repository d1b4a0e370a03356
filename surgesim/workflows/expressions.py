"""`${...}` expressions of the Google Workflows syntax, evaluated without `eval`.

The expression language is a subset of Python's grammar (`and`/`or`/`not`, `in`, `==`,
`a.b`, `a["b"]`, calls), so the text is parsed with `ast.parse(mode="eval")` and the tree is
walked here against a whitelist of node types: anything else is a WorkflowError naming the
construct. `true`/`false`/`null` are names resolved here, as Workflows spells them.
"""

from __future__ import annotations

import ast
import base64
import json
import math
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable


class WorkflowError(Exception):
    """An error value raised inside a workflow: a map like Google's `{message, tags, ...}` or
    whatever `raise` gave. `except: {as: e}` binds `value`."""

    def __init__(self, value: Any) -> None:
        super().__init__(value.get("message", str(value)) if isinstance(value, dict) else str(value))
        self.value = value


def error(tag: str, message: str, **extra: Any) -> WorkflowError:
    return WorkflowError({"message": message, "tags": [tag], **extra})


@dataclass(frozen=True)
class SubworkflowRef:
    """`${my_predicate}` naming a subworkflow (a retry predicate)."""
    name: str


@dataclass(frozen=True)
class Builtin:
    """A named built-in value that is not data: a retry policy or predicate."""
    name: str


_CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "TRUE": True, "FALSE": False}

BUILTIN_VALUES = {
    "http.default_retry", "http.default_retry_non_idempotent",
    "http.default_retry_predicate", "http.default_retry_predicate_non_idempotent",
    "retry.always", "retry.never",
}


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bytes):
        return "bytes"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "map"
    return type(v).__name__


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fn_default(value, fallback):
    return fallback if value is None else value


def _fn_len(v):
    if isinstance(v, (str, list, dict, bytes)):
        return len(v)
    raise error("TypeError", f"len: unsupported type {_kind(v)}")


def _fn_string(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return str(v)
    raise error("TypeError", f"string: cannot convert {_kind(v)}")


def _fn_int(v):
    if isinstance(v, bool):
        raise error("TypeError", "int: cannot convert boolean")
    if isinstance(v, float):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            try:
                return int(float(v))
            except ValueError:
                raise error("ValueError", f"int: cannot convert {v!r}") from None
    raise error("TypeError", f"int: cannot convert {_kind(v)}")


def _fn_double(v):
    if _num(v):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise error("ValueError", f"double: cannot convert {v!r}") from None
    raise error("TypeError", f"double: cannot convert {_kind(v)}")


def _fn_keys(m):
    if not isinstance(m, dict):
        raise error("TypeError", f"keys: expected a map, got {_kind(m)}")
    return list(m)


def _map_get(m, key):
    if m is None:
        return None
    if not isinstance(m, dict):
        raise error("TypeError", f"map.get: expected a map, got {_kind(m)}")
    if isinstance(key, list):  # a path of keys
        cur = m
        for k in key:
            if not isinstance(cur, dict) or k not in cur:
                return None
            cur = cur[k]
        return cur
    return m.get(key)


def _json_decode(data):
    if isinstance(data, bytes):
        data = data.decode()
    if not isinstance(data, str):
        raise error("TypeError", f"json.decode: expected bytes or string, got {_kind(data)}")
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise error("ValueError", f"json.decode: {exc}") from None


def _json_encode_str(v):
    return json.dumps(v, separators=(",", ":"), default=_no_json)


def _no_json(v):
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    raise error("TypeError", f"json.encode: cannot encode {_kind(v)}")


def _text(name: str, fn: Callable) -> Callable:
    def wrapped(*args):
        if not isinstance(args[0], str):
            raise error("TypeError", f"text.{name}: expected a string, got {_kind(args[0])}")
        return fn(*args)
    return wrapped


def _substring(s, start, end):
    return s[max(0, start):max(0, end)]


def _text_decode(data, charset="UTF-8"):
    if not isinstance(data, bytes):
        raise error("TypeError", f"text.decode: expected bytes, got {_kind(data)}")
    try:
        return data.decode(charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise error("ValueError", f"text.decode: {exc}") from None


def _get_env(name, default=None):
    # Replaced per execution by the executor's env (Google's built-ins and user_env_vars).
    return os.environ.get(name, default)


def _b64encode(b, padding=True):
    if not isinstance(b, bytes):
        raise error("TypeError", f"base64.encode: expected bytes, got {_kind(b)}")
    out = base64.b64encode(b).decode()
    return out if padding else out.rstrip("=")


def _b64decode(s):
    if not isinstance(s, str):
        raise error("TypeError", f"base64.decode: expected a string, got {_kind(s)}")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4))
    except ValueError as exc:
        raise error("ValueError", f"base64.decode: {exc}") from None


FUNCTIONS: dict[str, Callable] = {
    "default": _fn_default,
    "len": _fn_len,
    "string": _fn_string,
    "int": _fn_int,
    "double": _fn_double,
    "keys": _fn_keys,
    "map.get": _map_get,
    "json.decode": _json_decode,
    "json.encode": lambda v: _json_encode_str(v).encode(),
    "json.encode_to_string": _json_encode_str,
    "text.decode": _text_decode,
    "text.encode": lambda s, charset="UTF-8": _text("encode", lambda x: x.encode(charset))(s),
    "text.to_upper": _text("to_upper", str.upper),
    "text.to_lower": _text("to_lower", str.lower),
    "text.split": _text("split", lambda s, sep: s.split(sep)),
    "text.replace_all": _text("replace_all", lambda s, old, new: s.replace(old, new)),
    "text.substring": _text("substring", _substring),
    "text.match_regex": _text("match_regex", lambda s, rx: re.search(rx, s) is not None),
    "text.find_all": _text("find_all", lambda s, sub: [{"index": m.start(), "match": sub}
                                                        for m in re.finditer(re.escape(sub), s)]),
    "list.concat": lambda lst, v: [*lst, v],
    "base64.encode": lambda b, padding=True: _b64encode(b, padding),
    "base64.decode": lambda s, padding=True: _b64decode(s),
    "sys.now": time.time,
    "sys.get_env": _get_env,
    "uuid.generate": lambda: str(uuid.uuid4()),
    "math.abs": abs,
    "math.floor": lambda x: math.floor(x),
    "math.max": max,
    "math.min": min,
}

_BIN_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%"}
_CMP_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
            ast.In: "in", ast.NotIn: "not in"}


class ExpressionSyntaxError(ValueError):
    pass


def parse(text: str) -> ast.expr:
    """Parse the inside of `${...}`; raise ExpressionSyntaxError naming the unsupported part."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionSyntaxError(f"cannot parse expression {text!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.BinOp,
                             ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.List, ast.Dict, ast.Load,
                             ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd)) or type(node) in _BIN_OPS \
                or type(node) in _CMP_OPS:
            if isinstance(node, ast.Call) and node.keywords:
                raise ExpressionSyntaxError(f"{text!r}: keyword arguments are not Workflows syntax")
            if isinstance(node, ast.Call) and _dotted(node.func) not in FUNCTIONS:
                raise ExpressionSyntaxError(f"{text!r}: unsupported function {_dotted(node.func) or ast.unparse(node.func)}")
            if isinstance(node, ast.Constant) and not isinstance(node.value, (str, int, float, bool, type(None))):
                raise ExpressionSyntaxError(f"{text!r}: unsupported literal {node.value!r}")
            continue
        raise ExpressionSyntaxError(f"{text!r}: unsupported construct {type(node).__name__} ({ast.unparse(node)})")
    return tree.body


def _dotted(node: ast.expr) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


EXPR = re.compile(r"^\$\{(.*)\}$", re.S)


def expression_of(value: Any) -> str | None:
    """The expression text when `value` is a whole `${...}` string (Workflows evaluates only
    whole-value expressions; `"a ${b}"` stays literal text)."""
    if isinstance(value, str):
        m = EXPR.match(value.strip())
        if m:
            return m.group(1)
    return None


class Evaluator:
    def __init__(self, variables: dict[str, Any], subworkflows: frozenset[str] = frozenset(),
                 env: dict[str, str] | None = None) -> None:
        self.vars = variables
        self.subworkflows = subworkflows
        self.env = env

    def resolve(self, value: Any) -> Any:
        """Evaluate every `${...}` inside a value (maps and lists walked)."""
        text = expression_of(value)
        if text is not None:
            return self.eval(text)
        if isinstance(value, dict):
            return {self.resolve(k): self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def eval(self, text: str) -> Any:
        try:
            node = parse(text)
        except ExpressionSyntaxError as exc:
            raise error("SyntaxError", str(exc)) from None
        return self.node(node)

    def node(self, n: ast.expr) -> Any:
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name):
            if n.id in self.vars:
                return self.vars[n.id]
            if n.id in _CONSTANTS:
                return _CONSTANTS[n.id]
            if n.id in self.subworkflows:
                return SubworkflowRef(n.id)
            raise error("KeyError", f"variable {n.id!r} is not defined")
        if isinstance(n, ast.Attribute):
            dotted = _dotted(n)
            root = dotted.split(".")[0] if dotted else None
            if dotted and root not in self.vars and dotted in BUILTIN_VALUES:
                return Builtin(dotted)
            return self._key(self.node(n.value), n.attr)
        if isinstance(n, ast.Subscript):
            return self._key(self.node(n.value), self.node(n.slice))
        if isinstance(n, ast.List):
            return [self.node(e) for e in n.elts]
        if isinstance(n, ast.Dict):
            return {self.node(k): self.node(v) for k, v in zip(n.keys, n.values)}
        if isinstance(n, ast.BoolOp):
            is_and = isinstance(n.op, ast.And)
            for e in n.values:
                v = self._bool(self.node(e), "and" if is_and else "or")
                if v != is_and:
                    return v
            return is_and
        if isinstance(n, ast.UnaryOp):
            v = self.node(n.operand)
            if isinstance(n.op, ast.Not):
                return not self._bool(v, "not")
            if not _num(v):
                raise error("TypeError", f"unary minus on {_kind(v)}")
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.BinOp):
            return self._binop(_BIN_OPS[type(n.op)], self.node(n.left), self.node(n.right))
        if isinstance(n, ast.Compare):
            left = self.node(n.left)
            for op, right_node in zip(n.ops, n.comparators):
                right = self.node(right_node)
                if not self._compare(_CMP_OPS[type(op)], left, right):
                    return False
                left = right
            return True
        if isinstance(n, ast.Call):
            name = _dotted(n.func)
            args = [self.node(a) for a in n.args]
            if name == "sys.get_env" and self.env is not None:
                return self.env.get(args[0], args[1] if len(args) > 1 else None)
            try:
                return FUNCTIONS[name](*args)
            except WorkflowError:
                raise
            except TypeError as exc:
                raise error("TypeError", f"{name}: {exc}") from None
        raise error("SyntaxError", f"unsupported expression {ast.unparse(n)}")

    @staticmethod
    def _key(container: Any, key: Any) -> Any:
        if isinstance(container, dict):
            if key not in container:
                raise error("KeyError", f"key not found: {key}")
            return container[key]
        if isinstance(container, list):
            if not isinstance(key, int) or isinstance(key, bool):
                raise error("TypeError", f"list index must be an integer, got {_kind(key)}")
            if not 0 <= key < len(container):
                raise error("IndexError", f"list index {key} out of range (length {len(container)})")
            return container[key]
        raise error("TypeError", f"cannot index {_kind(container)} with {key!r}")

    @staticmethod
    def _bool(v: Any, op: str) -> bool:
        if not isinstance(v, bool):
            raise error("TypeError", f"'{op}' needs booleans, got {_kind(v)}")
        return v

    @staticmethod
    def _binop(op: str, a: Any, b: Any) -> Any:
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        if not (_num(a) and _num(b)):
            raise error("TypeError", f"unsupported operand types for {op}: {_kind(a)} and {_kind(b)}")
        if op in ("/", "//", "%") and b == 0:
            raise error("ZeroDivisionError", "division by zero")
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        if op == "//":
            return a // b
        return a % b

    @staticmethod
    def _compare(op: str, a: Any, b: Any) -> bool:
        if op in ("in", "not in"):
            if not isinstance(b, (list, dict)):
                raise error("TypeError", f"'in' needs a list or map, got {_kind(b)}")
            return (a in b) == (op == "in")
        if op == "==":
            return a == b and _kind(a) == _kind(b) or (_num(a) and _num(b) and a == b)
        if op == "!=":
            return not Evaluator._compare("==", a, b)
        if not ((_num(a) and _num(b)) or (isinstance(a, str) and isinstance(b, str))):
            raise error("TypeError", f"cannot compare {_kind(a)} {op} {_kind(b)}")
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
