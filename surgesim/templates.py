"""Payload templates: what a request or publish source sends, rendered per arrival.

A source's `json:`, `form:`, `body:`, `headers:`, `attributes:`, ... hold any YAML value
whose strings may carry Jinja2 expressions (a sandboxed environment: a scenario file is
data and must not reach the interpreter). Each source's templates are compiled once into
a tree of renderers; a send only evaluates the expressions:

- a string that is one `{{ expression }}` alone keeps the value's type (`"{{ seq }}"`
  renders the integer 7, `"{{ vars.sizes }}"` a list); any other string renders to text;
- strings without `{{`/`{%` are constants and cost nothing per send.

Names an expression can use (PayloadContext): `faker` (a Faker seeded per source, the
source's `locale`), `seq` (1, 2, ... per source), `uuid` (a seeded UUID4 string, the same
within one send), `intended` (the intended send time, epoch seconds), `intended_iso` and
`intended_datetime` (a datetime: a Firestore timestamp), `run` (the generator process's run
tag: ids unique per run, so re-runs against the same emulator do not collide),
`random` (a seeded random.Random), `choice(seq)`, `weighted({value: weight})`,
`randint(a, b)`, `uniform(a, b)`, `normal(mu, sigma)`, `exponential(mean)`, the source's
static `vars:` by name, its `let:` variables, and the variables of the item it took from
a pool and values captured earlier in a flow, by name.

Seeded: the same scenario seed and source give the same payloads in the same order, in
Locust and in the fleet driver alike. Pure: no network, no clock (the intended time is an
argument).
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib
import json
import math
import random
import re
import sys
import uuid as uuid_mod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlencode

BUILTINS = ("faker", "seq", "uuid", "intended", "intended_iso", "intended_datetime", "run", "random", "choice", "weighted", "randint",
            "uniform", "normal", "exponential", "vars", "captured", "source")
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.S)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class TemplateError(ValueError):
    """A template problem at a field path inside the source (`json.message`)."""

    def __init__(self, path: tuple, message: str):
        self.path = tuple(path)
        self.message = message
        super().__init__(f"{'.'.join(map(str, path))}: {message}")


# ---- the environment ---------------------------------------------------------------------

_ENV = None


def environment():
    """One sandboxed Jinja2 environment for every template (undefined names raise)."""
    global _ENV
    if _ENV is None:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import SandboxedEnvironment

        _ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        _ENV.filters["tojson"] = lambda v: json.dumps(v, separators=(",", ":"), default=str)
        _ENV.filters["b64"] = lambda v: base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode()
    return _ENV


_BLANK = None


def _new_context(names: dict):
    """A Jinja2 Context over `names` (any template's works: they share the environment's globals)."""
    global _BLANK
    if _BLANK is None:
        _BLANK = environment().from_string("")
    return _BLANK.new_context(names, shared=True)


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


# ---- the context -------------------------------------------------------------------------


@dataclass
class PayloadContext:
    """What a template (by name) or a Python hook (as attributes) sees for one send."""

    source: str
    seq: int
    intended: float
    rng: random.Random
    faker: Any
    vars: dict[str, Any]
    captured: dict[str, Any] = field(default_factory=dict)
    uuid: str = ""

    @property
    def intended_iso(self) -> str:
        return iso(self.intended)


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_faker(locale: str | list[str], seed: int):
    from faker import Faker

    # Uniform choice: Faker's frequency weighting rebuilds a cumulative table of thousands
    # of names per call (first_name 170 µs weighted, 4 µs uniform, docs/benchmarks/loadgen.md).
    fk = Faker(locale, use_weighting=False)
    fk.seed_instance(seed)
    return fk


class Randoms:
    """The seeded helpers a template calls by name; one per source."""

    def __init__(self, rng: random.Random):
        r = self.rng = rng
        self.names: dict[str, Any] = {
            "random": r,
            "choice": lambda seq: r.choice(list(seq)),
            "weighted": lambda weights: r.choices(list(weights), weights=list(weights.values()))[0],
            "randint": r.randint,
            "uniform": r.uniform,
            "normal": r.gauss,
            "exponential": lambda mean: r.expovariate(1.0 / mean),
        }


# ---- compiled values ---------------------------------------------------------------------

Renderer = Callable[[Any], Any]
"""Takes one send's Jinja2 Context (shared by every expression of the send: creating a
context is the costly part of evaluating an expression) and returns the value."""


def _const(value: Any) -> Renderer:
    return lambda ctx: value


def _names_in(ast) -> set[str]:
    from jinja2 import meta

    return set(meta.find_undeclared_variables(ast))


def _faker_attrs(ast) -> Iterator[str]:
    from jinja2 import nodes

    for node in ast.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "faker":
            yield node.attr


class Compiler:
    """Compiles template values against the names a source can use; `problems` collects
    what is wrong (path, message) instead of raising, so validation reports every one."""

    def __init__(self, known: set[str], faker: Any = None, locate: bool = False):
        """locate: a renderer that fails raises TemplateError naming its field (validation's
        trial render; the generators skip the extra call)."""
        self.known = set(known)
        self.faker = faker
        self.locate = locate
        self.problems: list[tuple[tuple, str]] = []
        self.used: set[str] = set()
        """Names the compiled templates refer to (a send computes only those)."""

    def _located(self, r: Renderer, path: tuple) -> Renderer:
        if not self.locate:
            return r

        def render(ctx: dict) -> Any:
            try:
                return r(ctx)
            except TemplateError:
                raise
            except Exception as exc:  # noqa: BLE001 -- named with its field for the user
                raise TemplateError(path, f"template failed on a trial render: {type(exc).__name__}: {exc}") from None

        return render

    def value(self, v: Any, path: tuple) -> tuple[Renderer, bool]:
        """(renderer, constant?) for any YAML value."""
        if isinstance(v, str):
            return self.text(v, path, native=True)
        if isinstance(v, dict):
            parts = {k: self.value(x, path + (k,)) for k, x in v.items()}
            if all(c for _, c in parts.values()):
                return _const(v), True
            items = [(k, r) for k, (r, _) in parts.items()]
            return (lambda ctx: {k: r(ctx) for k, r in items}), False
        if isinstance(v, list):
            parts_l = [self.value(x, path + (i,)) for i, x in enumerate(v)]
            if all(c for _, c in parts_l):
                return _const(v), True
            rs = [r for r, _ in parts_l]
            return (lambda ctx: [r(ctx) for r in rs]), False
        return _const(v), True

    def text(self, s: str, path: tuple, native: bool = False) -> tuple[Renderer, bool]:
        """A string template; native: a lone `{{ expr }}` keeps the expression's type."""
        if not _is_template(s):
            return _const(s), True
        from jinja2 import TemplateSyntaxError

        env = environment()
        m = _SINGLE.match(s) if native else None
        single = m is not None and "{{" not in m["expr"] and "}}" not in m["expr"] and "{%" not in s
        try:
            ast = env.parse("{{" + m["expr"] + "}}" if single else s)
        except TemplateSyntaxError as exc:
            self.problems.append((path, f"template syntax error: {exc.message}"))
            return _const(s), True
        names = _names_in(ast)
        self.used |= names
        for name in sorted(names - self.known):
            self.problems.append((path, f"undefined variable {name!r}"))
        if self.faker is not None:
            for attr in _faker_attrs(ast):
                if attr.startswith("_") or not callable(getattr(self.faker, attr, None)):
                    self.problems.append((path, f"unknown Faker provider {attr!r}"))
        if single:
            root = env.from_string("{% set result = " + m["expr"] + " %}").root_render_func

            def value(context) -> Any:
                for _ in root(context):
                    pass
                return context.vars["result"]

            return self._located(value, path), False
        text_root = env.from_string(s).root_render_func
        return self._located(lambda context: "".join(text_root(context)), path), False


# ---- a source's payload -----------------------------------------------------------------


@dataclass
class Rendered:
    """One rendered request (method, path with query, headers, body) or message (data,
    attributes, ordering key)."""

    method: str = "POST"
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    data: bytes = b""
    attributes: dict[str, str] = field(default_factory=dict)
    ordering_key: str | None = None
    let: dict[str, Any] = field(default_factory=dict)
    """The send's `let:` variables as rendered (they travel with the item it puts)."""
    write: dict | None = None
    """A Firestore write as the API's Write (for a batched commit: the prepare phase)."""


def load_hook(spec: str, base_dir: Path | None) -> Callable:
    """`module:function`, the module imported with the scenario's folder on sys.path."""
    mod_name, _, fn_name = spec.partition(":")
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:  # noqa: BLE001 -- reported as the field's problem
        raise TemplateError(("hook",), f"cannot import {mod_name!r}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise TemplateError(("hook",), f"{mod_name!r} has no function {fn_name!r}")
    return fn


def _to_bytes(value: Any) -> tuple[bytes, str]:
    """A hook's or body's value -> (bytes, default content type)."""
    if isinstance(value, bytes):
        return value, "application/octet-stream"
    if isinstance(value, str):
        return value.encode(), "text/plain; charset=utf-8"
    return json.dumps(value, separators=(",", ":"), default=str).encode(), "application/json"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)


class SourcePayload:
    """A request or publish source's templates, compiled once; render() per send.

    spec: the schema's Request or Publish; route_path/method: the route's (requests);
    base_dir: the scenario's folder (files, hooks); seed: (scenario seed, source index)."""

    def __init__(self, name: str, spec: Any, *, vars: dict[str, Any] | None = None, locale: str | list[str] = "en_US",
                 seed: tuple[int, int] = (1, 0), base_dir: Path | None = None, route_path: str = "",
                 method: str = "POST", captures: tuple[str, ...] = (), locate: bool = False,
                 kind: str = "request", project: str = "", let: dict[str, Any] | None = None, run: str = ""):
        """kind "let": no payload, only the `let:` variables (a flow's own, rendered once per arrival)."""
        self.name = name
        self.run = run
        self.vars = dict(vars or {})
        self.rng = random.Random(f"surgesim-payload:{seed[0]}:{seed[1]}")
        self.faker = make_faker(locale, self.rng.getrandbits(62))
        self.randoms = Randoms(self.rng)
        self.seq = 0
        self.method = method
        self.kind = kind
        self.is_request = kind != "publish"
        self.project = project
        shadowed = sorted(set(self.vars) & set(BUILTINS))
        problems: list[tuple[tuple, str]] = [(("vars", k), f"{k!r} is a built-in name of templates") for k in shadowed]
        c = Compiler(set(BUILTINS) | set(self.vars) | set(captures), self.faker, locate)
        self._let = []
        for k, v in (let or {}).items():  # in order: each sees the ones before it
            self._let.append((k, c.value(v, ("let", k))[0]))
            c.known.add(k)
        self._hook: Callable | None = None
        if getattr(spec, "hook", None) is not None:
            try:
                self._hook = load_hook(spec.hook, base_dir)
            except TemplateError as exc:
                problems.append((exc.path, exc.message))
        self._json = c.value(spec.json_, ("json",))[0] if getattr(spec, "json_", None) is not None else None
        if kind == "firestore":
            self._compile_firestore(c, spec)
        elif kind == "storage":
            self._compile_storage(c, spec, base_dir, problems)
        elif kind == "request":
            self._compile_request(c, spec, route_path, base_dir, problems)
        elif kind == "let":
            pass
        else:
            self._data = c.text(spec.data, ("data",))[0] if spec.data is not None else None
            self._attrs = [(k, c.text(v, ("attributes", k))[0]) for k, v in spec.attributes.items()]
            self._key = c.text(spec.ordering_key, ("ordering_key",))[0] if spec.ordering_key is not None else None
        self.problems = problems + c.problems
        # a hook may read anything; templates only what they name
        lazy = {"uuid", "intended_iso", "intended_datetime"}
        self._lazy = lazy if self._hook is not None else c.used & lazy

    def _compile_request(self, c: Compiler, spec: Any, route_path: str, base_dir: Path | None,
                         problems: list) -> None:
        self.route_path = route_path
        placeholders = _PLACEHOLDER.findall(route_path)
        for p in placeholders:
            if p not in spec.path_params:
                problems.append((("path_params",), f"route path {route_path} needs {p!r}"))
        for p in spec.path_params:
            if p not in placeholders:
                problems.append((("path_params", p), f"route path {route_path} has no {{{p}}}"))
        self._params = [(k, c.value(v, ("path_params", k))[0]) for k, v in spec.path_params.items()]
        self._query = [(k, c.value(v, ("query", k))[0]) for k, v in spec.query.items()]
        self._headers = [(k, c.value(v, ("headers", k))[0]) for k, v in spec.headers.items()]
        self._body = c.text(spec.body, ("body",))[0] if spec.body is not None else None
        self.content_type = spec.content_type
        self._form = [(k, c.value(v, ("form", k))[0]) for k, v in (spec.form or {}).items()]
        self._files = []
        for k, part in (spec.files or {}).items():
            if part.file is not None:
                path = Path(part.file) if base_dir is None else (base_dir / part.file)
                try:
                    content = _const(path.read_bytes())
                except OSError as exc:
                    problems.append((("files", k, "file"), f"cannot read {part.file}: {exc.strerror or exc}"))
                    content = _const(b"")
                default_name = Path(part.file).name
            else:
                content = c.text(part.content, ("files", k, "content"))[0]
                default_name = k
            name = c.text(part.filename, ("files", k, "filename"))[0] if part.filename else _const(default_name)
            self._files.append((k, content, name, part.content_type))
        self.multipart = spec.form is not None or spec.files is not None

    def _compile_firestore(self, c: Compiler, spec: Any) -> None:
        self.op = spec.op
        self.collection = spec.collection
        self._doc = c.text(spec.document, ("document",))[0] if spec.document is not None else None
        self._data = c.value(spec.data, ("data",))[0] if spec.data is not None else None
        self._base = f"/v1/projects/{self.project}/databases/(default)/documents/{quote(spec.collection, safe='')}"

    def _compile_storage(self, c: Compiler, spec: Any, base_dir: Path | None, problems: list) -> None:
        self.bucket = spec.bucket
        self._object = c.text(spec.object, ("object",))[0]
        self.content_type = spec.content_type
        self._nbytes = spec.bytes
        self._file = b""
        if spec.file is not None:
            path = Path(spec.file) if base_dir is None else base_dir / spec.file
            try:
                self._file = path.read_bytes()
            except OSError as exc:
                problems.append((("file",), f"cannot read {spec.file}: {exc.strerror or exc}"))

    # ---- per send --------------------------------------------------------------------------

    def context(self, intended: float, captured: dict[str, Any] | None = None) -> PayloadContext:
        self.seq += 1
        uid = str(uuid_mod.UUID(int=self.rng.getrandbits(128), version=4)) if "uuid" in self._lazy else ""
        return PayloadContext(self.name, self.seq, intended, self.rng, self.faker, self.vars, dict(captured or {}), uid)

    def names(self, pc: PayloadContext):
        """The names a template sees for this send, as one Jinja2 Context."""
        ctx = dict(self.randoms.names)
        ctx.update(self.vars)
        ctx.update(pc.captured)
        ctx.update(faker=pc.faker, seq=pc.seq, uuid=pc.uuid, intended=pc.intended,
                   intended_iso=pc.intended_iso if "intended_iso" in self._lazy else "",
                   intended_datetime=(dt.datetime.fromtimestamp(pc.intended, tz=dt.timezone.utc)
                                      if "intended_datetime" in self._lazy else None),
                   run=self.run, vars=pc.vars, captured=pc.captured, source=pc.source)
        return _new_context(ctx)

    def render(self, intended: float, captured: dict[str, Any] | None = None) -> Rendered:
        pc = self.context(intended, captured)
        ctx = self.names(pc)
        let = {}
        for k, r in self._let:
            let[k] = ctx.vars[k] = r(ctx)
        pc.captured.update(let)  # a hook sees them too
        if self.kind == "request":
            out = self._request(pc, ctx)
        elif self.kind == "firestore":
            out = self._firestore(ctx)
        elif self.kind == "storage":
            out = self._storage(ctx)
        elif self.kind == "let":
            out = Rendered()
        else:
            out = self._message(pc, ctx)
        out.let = let
        return out

    def _firestore(self, ctx) -> Rendered:
        """The emulator's REST call (Firestore API v1) for one document write."""
        doc = _text(self._doc(ctx)) if self._doc is not None else _doc_id(self.rng)
        headers = {"Authorization": "Bearer owner"}  # the emulator's admin token: security rules do not apply
        name = f"projects/{self.project}/databases/(default)/documents/{self.collection}/{doc}"
        if self.op == "delete":
            return Rendered("DELETE", f"{self._base}/{quote(doc, safe='')}", headers, write={"delete": name})
        data = self._data(ctx)
        if not isinstance(data, dict):
            raise TemplateError(("data",), f"must render to a mapping, got {type(data).__name__}")
        headers["Content-Type"] = "application/json"
        fields = {k: firestore_value(v) for k, v in data.items()}
        body = json.dumps({"fields": fields}, separators=(",", ":")).encode()
        write: dict = {"update": {"name": name, "fields": fields}}
        if self.op == "create":
            write["currentDocument"] = {"exists": False}
            return Rendered("POST", f"{self._base}?documentId={quote(doc, safe='')}", headers, body, write=write)
        path = f"{self._base}/{quote(doc, safe='')}"
        if self.op == "update":  # only these fields, and only if the document exists
            path += "?" + urlencode([("updateMask.fieldPaths", k) for k in data] + [("currentDocument.exists", "true")])
            write.update(updateMask={"fieldPaths": list(data)}, currentDocument={"exists": True})
        return Rendered("PATCH", path, headers, body, write=write)

    def _storage(self, ctx) -> Rendered:
        """The emulator's JSON API media upload of one object."""
        name = _text(self._object(ctx))
        content = self.rng.randbytes(self._nbytes) if self._nbytes is not None else self._file
        path = f"/upload/storage/v1/b/{quote(self.bucket, safe='')}/o?" + urlencode({"uploadType": "media", "name": name})
        return Rendered("POST", path, {"Content-Type": self.content_type}, content)

    def _request(self, pc: PayloadContext, ctx: dict) -> Rendered:
        path = self.route_path
        for k, r in self._params:
            path = path.replace("{" + k + "}", quote(_text(r(ctx)), safe=""))
        if self._query:
            path += "?" + urlencode([(k, _text(r(ctx))) for k, r in self._query])
        headers = {k: _text(r(ctx)) for k, r in self._headers}
        body, ctype = b"", None
        if self._hook is not None:
            body, ctype = _to_bytes(self._hook(pc))
            ctype = self.content_type or ctype
        elif self._json is not None:
            body, ctype = json.dumps(self._json(ctx), separators=(",", ":"), default=str).encode(), "application/json"
        elif self._body is not None:
            body, ctype = _to_bytes(self._body(ctx))
            ctype = self.content_type or ctype
        elif self.multipart:
            from urllib3.filepost import encode_multipart_formdata

            parts: list[Any] = [(k, _text(r(ctx))) for k, r in self._form]
            for k, content, name, part_type in self._files:
                data = content(ctx)
                parts.append((k, (_text(name(ctx)), data if isinstance(data, bytes) else _text(data).encode(),
                                  part_type)))
            body, ctype = encode_multipart_formdata(parts)
        if ctype is not None and not any(h.lower() == "content-type" for h in headers):
            headers["Content-Type"] = ctype
        return Rendered(self.method, path, headers, body)

    def _message(self, pc: PayloadContext, ctx: dict) -> Rendered:
        if self._hook is not None:
            data = _to_bytes(self._hook(pc))[0]
        elif self._json is not None:
            data = json.dumps(self._json(ctx), separators=(",", ":"), default=str).encode()
        elif self._data is not None:
            data = _to_bytes(self._data(ctx))[0]
        else:
            data = b""
        attrs = {k: _text(r(ctx)) for k, r in self._attrs}
        key = _text(self._key(ctx)) if self._key is not None else None
        return Rendered(data=data, attributes=attrs, ordering_key=key or None)


_JSONPATHS: dict[str, Any] = {}


def jsonpath(expr: str):
    """A compiled JSONPath (jsonpath-ng), cached: a `capture:` into a JSON answer. Raises
    ValueError on a syntax error (validation reports it at the capture's line)."""
    p = _JSONPATHS.get(expr)
    if p is None:
        from jsonpath_ng import parse

        try:
            p = _JSONPATHS[expr] = parse(expr)
        except Exception as exc:  # noqa: BLE001 -- jsonpath-ng raises several kinds
            raise ValueError(f"bad JSONPath {expr!r}: {exc}") from None
    return p


PAYLOAD_KINDS = ("request", "publish", "firestore", "storage")


def payload_kind(src: Any) -> str | None:
    """Which of a Source's targets carries a payload (None: a job or workflow)."""
    return next((k for k in PAYLOAD_KINDS if getattr(src, k, None) is not None), None)


def source_payload(src: Any, index: int, seed: int, base_dir: Path | None, route: Any = None,
                   captures: tuple[str, ...] = (), locate: bool = False, project: str = "", run: str = "",
                   spec: Any = None, kind: str | None = None, with_let: bool = True) -> SourcePayload:
    """The compiled payload of a schema Source or prepare entry (request: with its schema
    Route). spec/kind: a flow step's target instead of the source's own (with_let False:
    the flow renders its let once per arrival, not per step)."""
    kind = kind or payload_kind(src)
    if spec is None and kind != "let":
        spec = getattr(src, kind)
    return SourcePayload(src.name, spec, vars=src.vars, locale=src.locale, seed=(seed, index),
                         base_dir=base_dir, route_path=route.path if route is not None else "",
                         method=route.method if route is not None else "POST", captures=captures, locate=locate,
                         kind=kind, project=project, let=getattr(src, "let", None) if with_let else None, run=run)


def check_source(src: Any, index: int, seed: int, base_dir: Path | None, route: Any = None,
                 project: str = "", known: set[str] | tuple = (), kind: str | None = None,
                 spec: Any = None) -> list[tuple[tuple, str]]:
    """Every problem of a templated source's payload (or of one flow step's: kind, spec; or
    of a flow's own `let:`: kind "let"), as (path inside the source, message): syntax,
    undefined names, unknown Faker providers, unreadable files, a hook that does not import;
    then one trial render for what only running shows (a provider's wrong arguments, a hook
    that raises). known: names pools and captures give (placeholder values in the trial)."""
    kind = kind or payload_kind(src)
    step = spec is not None
    if spec is None and kind != "let":
        spec = getattr(src, kind)
    prefix = () if kind == "let" or step else (kind,)
    if step:
        prefix = (kind,)
    try:
        payload = source_payload(src, index, seed, base_dir, route, captures=tuple(known), locate=True,
                                 project=project, spec=spec, kind=kind, with_let=not step)
    except AttributeError as exc:  # an unknown locale
        return [(("locale",), f"unknown Faker locale: {exc}")]
    problems = [(p if p[:1] in (("vars",), ("let",)) else prefix + p, m) for p, m in payload.problems]
    if not problems:
        try:
            payload.render(0.0, {name: "placeholder" for name in known})
        except TemplateError as exc:
            problems.append(((exc.path if exc.path[:1] == ("let",) else prefix + exc.path), exc.message))
        except Exception as exc:  # noqa: BLE001 -- any failure of the trial render is the user's to see
            what = "hook" if getattr(spec, "hook", None) else "template"
            problems.append((prefix + (("hook",) if what == "hook" else ()),
                             f"{what} failed on a trial render: {type(exc).__name__}: {exc}"))
    return problems


def _doc_id(rng: random.Random) -> str:
    """A 20-character id like the client libraries' auto ids, from the seeded stream."""
    return "".join(rng.choices(_ID_CHARS, k=20))


_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def firestore_value(v: Any) -> dict:
    """A Python value as the Firestore REST API's typed Value."""
    if v is None:
        return {"nullValue": None}
    if isinstance(v, bool):
        return {"booleanValue": v}
    if isinstance(v, int):
        return {"integerValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, bytes):
        return {"bytesValue": base64.b64encode(v).decode()}
    if isinstance(v, dt.datetime):
        return {"timestampValue": v.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")}
    if isinstance(v, dict):
        return {"mapValue": {"fields": {str(k): firestore_value(x) for k, x in v.items()}}}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [firestore_value(x) for x in v]}}
    return {"stringValue": str(v)}


def rough_size(payload: SourcePayload, n: int = 20) -> float:
    """Mean bytes of n rendered sends (the simulator's message size for a templated source)."""
    sizes = []
    for i in range(n):
        r = payload.render(float(i))
        sizes.append(len(r.body) if payload.is_request else len(r.data))
    return math.fsum(sizes) / max(1, len(sizes))
