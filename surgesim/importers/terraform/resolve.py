"""A Terraform configuration, resolved statically: variables (defaults, `-var`,
`.tfvars`), locals, resources expanded over `count`/`for_each`, local modules, and the
attributes the cloud would assign that follow from the configuration alone (a topic's
`id`, a service account's `email`). A Cloud Run service's `uri` is only known after
apply; it resolves to a marker URL naming the service, so a push endpoint or a workflow's
URL built from it can be traced back to the service it points at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from surgesim.importers.terraform.expr import Evaluator, Unknown, materialise, read_text_file
from surgesim.importers.terraform.hcl import Attr, Block, HclError, Where, read_dir

RUN_HOST = "run.surgesim.invalid"
"""Host suffix of the marker URL a Cloud Run service's `uri` resolves to."""


def service_uri(name: str) -> str:
    return f"https://{name}.{RUN_HOST}"


# Attributes the cloud assigns that follow from the configuration: {placeholders} are
# other attributes of the same resource (`project` falls back to the provider's).
COMPUTED: dict[str, dict[str, str]] = {
    "google_pubsub_topic": {"id": "projects/{project}/topics/{name}"},
    "google_pubsub_subscription": {"id": "projects/{project}/subscriptions/{name}"},
    "google_cloud_run_v2_service": {"id": "projects/{project}/locations/{location}/services/{name}",
                                    "uri": "https://{name}." + RUN_HOST},
    "google_cloud_run_service": {"id": "locations/{location}/namespaces/{project}/services/{name}"},
    "google_cloud_run_v2_job": {"id": "projects/{project}/locations/{location}/jobs/{name}"},
    "google_cloudfunctions2_function": {"id": "projects/{project}/locations/{location}/functions/{name}",
                                        "url": "https://{name}." + RUN_HOST},
    "google_service_account": {"email": "{account_id}@{project}.iam.gserviceaccount.com",
                               "id": "projects/{project}/serviceAccounts/{email}",
                               "name": "projects/{project}/serviceAccounts/{email}",
                               "member": "serviceAccount:{email}"},
    "google_bigquery_dataset": {"id": "projects/{project}/datasets/{dataset_id}"},
    "google_bigquery_table": {"id": "projects/{project}/datasets/{dataset_id}/tables/{table_id}"},
    "google_storage_bucket": {"id": "{name}", "url": "gs://{name}"},
    "google_firestore_database": {"id": "projects/{project}/databases/{name}"},
    "google_workflows_workflow": {"id": "projects/{project}/locations/{region}/workflows/{name}"},
}
MAX_INSTANCES = 10_000
"""More instances of one resource than a rehearsal could mean is a mistake (or hostile input)."""


class _Guard:
    """Cycle detection across lazy evaluations."""

    def __init__(self) -> None:
        self.active: set[str] = set()

    def run(self, key: str, fn):
        if key in self.active:
            return Unknown(f"{key} refers to itself (a cycle)")
        self.active.add(key)
        try:
            return fn()
        finally:
            self.active.discard(key)


class BlockValue:
    """A nested block (`template { ... }`) read as an object."""

    def __init__(self, block: Block, scope: "ModuleScope", bindings: dict[str, Any], addr: str):
        self.block, self.scope, self.bindings, self.addr = block, scope, bindings, addr

    def get_attr(self, name: str) -> Any:
        if name in self.block.attrs:
            return self.scope.eval(self.block.attrs[name], self.bindings, f"{self.addr}.{name}")
        nested = self.block.children(name)
        if nested:
            return [BlockValue(b, self.scope, self.bindings, f"{self.addr}.{name}") for b in nested]
        return Unknown(f"{self.addr}.{name} is not set")

    def get_index(self, key: Any) -> Any:
        return self.get_attr(str(key))

    def materialise(self) -> dict:
        out = {n: self.get_attr(n) for n in self.block.attrs}
        for b in self.block.blocks:
            out.setdefault(b.type, []).append(BlockValue(b, self.scope, self.bindings, f"{self.addr}.{b.type}"))
        return out


class Instance(BlockValue):
    """One instance of a resource (one element of its count or for_each)."""

    keep_lazy = True

    def __init__(self, resource: "Resource", key: Any, bindings: dict[str, Any]):
        suffix = "" if key is None else f"[{key}]" if isinstance(key, int) else f'["{key}"]'
        super().__init__(resource.block, resource.scope, bindings, resource.addr + suffix)
        self.resource = resource
        self.key = key

    @property
    def type(self) -> str:
        return self.resource.type

    @property
    def where(self) -> Where | None:
        return self.block.where

    def get_attr(self, name: str) -> Any:
        if name in self.block.attrs or self.block.children(name):
            return super().get_attr(name)
        if name == "project":
            return self.scope.project()
        if name == "status" and self.type == "google_cloud_run_service":
            # v1 services publish their URL as status[0].url
            uri = self.get_attr("name")
            return uri if isinstance(uri, Unknown) else [{"url": service_uri(uri)}]
        pattern = COMPUTED.get(self.type, {}).get(name)
        if pattern is None:
            return Unknown(f"{self.addr}.{name} is known only after apply")
        return self.scope.guard.run(f"{self.addr}.{name}", lambda: self._format(pattern))

    def _format(self, pattern: str) -> Any:
        out = pattern
        for field_name in {p.split("}")[0] for p in pattern.split("{")[1:]}:
            value = self.get_attr(field_name)
            if isinstance(value, Unknown):
                return value
            out = out.replace("{" + field_name + "}", str(value))
        return out

    def attr(self, name: str) -> Attr | None:
        return self.block.attrs.get(name)

    def has(self, name: str) -> bool:
        return name in self.block.attrs or bool(self.block.children(name))

    def blocks(self, name: str) -> list[BlockValue]:
        return [BlockValue(b, self.scope, self.bindings, f"{self.addr}.{name}") for b in self.block.children(name)]


@dataclass
class Resource:
    type: str
    name: str
    block: Block
    scope: "ModuleScope"

    @property
    def addr(self) -> str:
        return f"{self.scope.prefix}{self.type}.{self.name}"

    def expand(self) -> Any:
        """The resource as a reference sees it: one Instance, a list (count) or a map (for_each)."""
        return self.scope.guard.run(f"{self.addr} (expansion)", self._expand)

    def _expand(self) -> Any:
        if "count" in self.block.attrs:
            n = self.scope.eval(self.block.attrs["count"], {}, f"{self.addr}.count")
            if isinstance(n, Unknown):
                return n
            if not isinstance(n, (int, float)) or isinstance(n, bool) or not 0 <= n <= MAX_INSTANCES:
                return Unknown(f"count must be a whole number 0..{MAX_INSTANCES}, got {n!r}")
            return [Instance(self, i, {"count": {"index": i}}) for i in range(int(n))]
        if "for_each" in self.block.attrs:
            coll = materialise(self.scope.eval(self.block.attrs["for_each"], {}, f"{self.addr}.for_each"))
            if isinstance(coll, Unknown):
                return coll
            if isinstance(coll, list):
                coll = {str(k): k for k in coll}
            if not isinstance(coll, dict):
                return Unknown(f"for_each must be a map or a set, got {type(coll).__name__}")
            if len(coll) > MAX_INSTANCES:
                return Unknown(f"for_each over {len(coll)} elements: more than {MAX_INSTANCES}")
            return {k: Instance(self, k, {"each": {"key": k, "value": v}}) for k, v in coll.items()}
        return Instance(self, None, {})

    def instances(self) -> list[Instance] | Unknown:
        value = self.expand()
        if isinstance(value, Unknown):
            return value
        if isinstance(value, Instance):
            return [value]
        return list(value.values()) if isinstance(value, dict) else value


class _Namespace:
    def __init__(self, getter, what: str):
        self._get, self.what = getter, what

    def get_attr(self, name: str) -> Any:
        return self._get(name)

    def get_index(self, key: Any) -> Any:
        return Unknown(f"{self.what} cannot be indexed")


class ModuleScope:
    """One module (the root, or a local module called from it)."""

    def __init__(self, directory: Path, inputs: dict[str, Any], prefix: str, root: "ModuleScope | None",
                 guard: _Guard, problems: list[str], ancestors: tuple[Path, ...] = ()):
        self.directory, self.inputs, self.prefix = directory, inputs, prefix
        self.root = root or self
        self.guard, self.problems = guard, problems
        self.ancestors: tuple[Path, ...] = ancestors + (directory,)
        self.blocks = read_dir(directory, root.directory if root is not None else directory)
        self.variables: dict[str, Block] = {}
        self.locals: dict[str, Attr] = {}
        self.outputs: dict[str, Block] = {}
        self.resources: dict[tuple[str, str], Resource] = {}
        self.modules: dict[str, "ModuleScope | Unknown"] = {}
        self.provider_project: Attr | None = None
        self._cache: dict[str, Any] = {}
        module_blocks: list[Block] = []
        for b in self.blocks:
            if b.type == "variable" and b.labels:
                self.variables[b.labels[0]] = b
            elif b.type == "locals":
                self.locals.update(b.attrs)
            elif b.type == "output" and b.labels:
                self.outputs[b.labels[0]] = b
            elif b.type == "resource" and len(b.labels) == 2:
                self.resources[(b.labels[0], b.labels[1])] = Resource(b.labels[0], b.labels[1], b, self)
            elif b.type == "provider" and b.labels and b.labels[0] in ("google", "google-beta"):
                if "project" in b.attrs and "alias" not in b.attrs:
                    self.provider_project = b.attrs["project"]
            elif b.type == "module" and b.labels:
                module_blocks.append(b)
        for b in module_blocks:
            self.modules[b.labels[0]] = self._load_module(b)

    def _load_module(self, b: Block) -> "ModuleScope | Unknown":
        name = b.labels[0]
        where = f"{b.where}: module.{name}"
        src = self.eval(b.attrs["source"], {}, f"module.{name}.source") if "source" in b.attrs else None
        if not isinstance(src, str) or not src.startswith(("./", "../")):
            reason = f"source {src!r} is not a local path; only local modules (./dir) are read"
            self.problems.append(f"{where}: {reason}")
            return Unknown(f"module.{name}: {reason}")
        for meta in ("count", "for_each"):
            if meta in b.attrs:
                reason = f"{meta} on a module is not supported by the importer"
                self.problems.append(f"{where}: {reason}")
                return Unknown(f"module.{name}: {reason}")
        inputs = {k: (a, self) for k, a in b.attrs.items() if k not in ("source", "version", "providers", "depends_on")}
        directory = (self.directory / src).resolve()
        if directory in self.ancestors:
            reason = f"source {src!r} calls a module that is already being read (a module cycle)"
            self.problems.append(f"{where}: {reason}")
            return Unknown(f"module.{name}: {reason}")
        try:
            return ModuleScope(directory, inputs, f"{self.prefix}module.{name}.", self.root, self.guard, self.problems,
                               self.ancestors)
        except HclError as exc:
            self.problems.append(f"{where}: {exc}")
            return Unknown(f"module.{name}: {exc}")

    # -- evaluation
    def eval(self, attr: Attr, bindings: dict[str, Any], key: str) -> Any:
        return self.guard.run(key, lambda: Evaluator(_Bound(self, bindings)).eval(attr.expr))

    def project(self) -> Any:
        if self.root.provider_project is not None:
            return self.root.eval(self.root.provider_project, {}, "provider.google.project")
        return Unknown("no `project` on the resource and no google provider block with a project")

    def variable(self, name: str) -> Any:
        if name in self.inputs:
            given = self.inputs[name]
            if isinstance(given, tuple):  # a module argument: (expression, the caller's scope)
                attr, scope = given
                return scope.eval(attr, {}, f"{self.prefix}var.{name}")
            return given
        block = self.variables.get(name)
        if block is None:
            return Unknown(f"var.{name} is not declared")
        if "default" in block.attrs:
            return self.eval(block.attrs["default"], {}, f"{self.prefix}var.{name}")
        return Unknown(f"var.{name} has no default: give it with -var {name}=... or -var-file")

    def local(self, name: str) -> Any:
        if name not in self.locals:
            return Unknown(f"local.{name} is not declared")
        if name not in self._cache:
            self._cache[name] = self.eval(self.locals[name], {}, f"{self.prefix}local.{name}")
        return self._cache[name]

    def output(self, name: str) -> Any:
        block = self.outputs.get(name)
        if block is None or "value" not in block.attrs:
            return Unknown(f"{self.prefix}output {name!r} is not declared")
        return self.eval(block.attrs["value"], {}, f"{self.prefix}output.{name}")

    def all_resources(self) -> Iterator[Resource]:
        yield from self.resources.values()
        for m in self.modules.values():
            if isinstance(m, ModuleScope):
                yield from m.all_resources()


class _Bound:
    """A module scope plus names bound locally (each, count, for-expression variables)."""

    def __init__(self, module: ModuleScope, names: dict[str, Any]):
        self.module, self.names = module, names

    def child(self, names: dict[str, Any]) -> "_Bound":
        return _Bound(self.module, {**self.names, **names})

    def read_file(self, path: str) -> Any:
        return read_text_file(path, self.module.root.directory)

    def lookup(self, name: str) -> Any:
        m = self.module
        if name in self.names:
            return self.names[name]
        if name == "var":
            return _Namespace(m.variable, "var")
        if name == "local":
            return _Namespace(m.local, "local")
        if name == "path":
            return {"module": str(m.directory), "root": str(m.root.directory), "cwd": str(Path.cwd())}
        if name == "terraform":
            return {"workspace": "default"}
        if name == "module":
            return _Namespace(lambda n: self._module(n), "module")
        if name == "data":
            return _Namespace(lambda t: Unknown(f"data.{t}: data sources are read only at plan time"), "data")
        if name in ("each", "count", "self"):
            return Unknown(f"{name} is not available here")
        if "_" in name:
            return _Namespace(lambda n: self._resource(name, n), name)
        return Unknown(f"unknown name {name!r}")

    def _module(self, name: str) -> Any:
        mod = self.module.modules.get(name)
        if mod is None:
            return Unknown(f"module.{name} is not declared")
        if isinstance(mod, Unknown):
            return mod
        return _Namespace(mod.output, f"module.{name}")

    def _resource(self, type_: str, name: str) -> Any:
        res = self.module.resources.get((type_, name))
        if res is None:
            return Unknown(f"{type_}.{name} is not declared in this module")
        return res.expand()


def load(directory: Path, variables: dict[str, Any], problems: list[str]) -> ModuleScope:
    """The root module of DIR; `variables` (from -var/-var-file) override defaults."""
    return ModuleScope(directory.resolve(), variables, "", None, _Guard(), problems)


__all__ = ["ModuleScope", "Instance", "BlockValue", "Resource", "load", "service_uri", "RUN_HOST"]
