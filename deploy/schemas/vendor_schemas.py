"""Regenerate the JSON schemas under deploy/schemas/ from their upstream sources (see README.md there).

Not imported by anything: run it by hand when a Kubernetes, KubeRay, prometheus-operator or compose-spec version
changes, then commit the JSON it writes. It needs no network; point it at local copies of the sources::

    python deploy/schemas/vendor_schemas.py \\
        --kubernetes-json-schema .../kubernetes_validate/kubernetes-json-schema/v1.32.0-local-strict \\
        --kuberay-crds .../kuberay/ray-operator/config/crd/bases \\
        --prometheus-operator-crds .../prometheus-operator/example/prometheus-operator-crd \\
        --compose-spec .../compose-spec/schema/compose-spec.json

What it does to the upstream text, and nothing else:

* every schema is made standalone: the ``$ref`` targets it reaches are copied into its own ``$defs``;
* ``description`` keywords are dropped (they are most of the bytes and validate nothing);
* a CRD's ``openAPIV3Schema`` becomes a JSON Schema (2020-12) the way the API server reads it with strict
  field validation (``kubectl apply`` since 1.27): an object schema with ``properties`` and neither
  ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` rejects unknown fields, ``nullable``
  admits ``null``, ``apiVersion``/``kind`` are pinned, and ``metadata`` is Kubernetes' ``ObjectMeta``.
  CEL rules (``x-kubernetes-validations``) are kept as inert annotations: jsonschema cannot run them.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

# (file name in the kubernetes-json-schema directory, apiVersion, kind) of the built-in kinds deploy/k8s uses.
KUBERNETES_KINDS = [
    ("configmap-v1.json", "v1", "ConfigMap"),
    ("secret-v1.json", "v1", "Secret"),
    ("namespace-v1.json", "v1", "Namespace"),
    ("persistentvolumeclaim-v1.json", "v1", "PersistentVolumeClaim"),
    ("networkpolicy-networking-v1.json", "networking.k8s.io/v1", "NetworkPolicy"),
]
KUBERAY_CRDS = ["ray.io_rayservices.yaml", "ray.io_rayjobs.yaml", "ray.io_raycronjobs.yaml"]
PROMETHEUS_OPERATOR_CRDS = ["monitoring.coreos.com_podmonitors.yaml"]
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Keywords whose value is one schema, a list of schemas, or a name -> schema mapping.
_ONE = ("additionalProperties", "items", "not", "contains", "propertyNames", "if", "then", "else")
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems")
_NAMED = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def _walk(node: Any, visit) -> Any:
    """Apply ``visit`` to every schema node bottom-up, knowing which keys hold schemas (not property names)."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for key in _ONE:
        if isinstance(out.get(key), dict):
            out[key] = _walk(out[key], visit)
    for key in _MANY:
        if isinstance(out.get(key), list):
            out[key] = [_walk(item, visit) for item in out[key]]
    for key in _NAMED:
        if isinstance(out.get(key), dict):
            out[key] = {name: _walk(sub, visit) for name, sub in out[key].items()}
    return visit(out)


def _drop_descriptions(node: dict) -> dict:
    node.pop("description", None)
    return node


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[-1])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _local_refs(node: Any) -> Any:
    """Point every ``$ref`` (``/api/_definitions.json#/$defs/X``) at the bundled ``#/$defs/X``."""
    if isinstance(node, dict):
        return {
            key: ("#/$defs/" + value.rsplit("/", 1)[-1]) if key == "$ref" and isinstance(value, str)
            else _local_refs(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_local_refs(value) for value in node]
    return node


def _bundle(root: dict, definitions: dict[str, Any]) -> dict:
    """``root`` with the transitive closure of its ``$ref`` targets copied into ``$defs``."""
    needed: dict[str, Any] = {}
    todo = sorted(_refs(root))
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed[name] = definitions[name]
        todo.extend(sorted(_refs(definitions[name]) - needed.keys()))
    bundled = _local_refs(root)
    bundled.pop("$id", None)
    bundled["$schema"] = SCHEMA_DIALECT
    if needed:
        bundled["$defs"] = {name: _walk(_local_refs(needed[name]), _drop_descriptions) for name in sorted(needed)}
    return _walk(bundled, _drop_descriptions)


def _strict_openapi(node: dict) -> dict:
    """One CRD structural-schema node as JSON Schema with the API server's strict field validation."""
    node.pop("description", None)
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in node and "additionalProperties" not in node and not preserve:
        node["additionalProperties"] = False
    return node


def crd_schemas(crd_file: Path, definitions: dict[str, Any]) -> list[tuple[str, str, dict]]:
    """(apiVersion, kind, schema) of the storage version of a CustomResourceDefinition file (deprecated
    versions such as KubeRay's ``v1alpha1`` are left out)."""
    crd = yaml.safe_load(crd_file.read_text(encoding="utf-8"))
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    result = []
    for version in crd["spec"]["versions"]:
        if not version.get("storage", False):
            continue
        api_version = f"{group}/{version['name']}"
        schema = _walk(version["schema"]["openAPIV3Schema"], _strict_openapi)
        schema["properties"]["apiVersion"] = {"type": "string", "enum": [api_version]}
        schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
        schema["properties"]["metadata"] = {"$ref": f"#/$defs/{OBJECT_META}"}
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
        schema["x-kubernetes-group-version-kind"] = [{"group": group, "kind": kind, "version": version["name"]}]
        result.append((api_version, kind, _bundle(schema, definitions)))
    return result


def _file_name(api_version: str, kind: str) -> str:
    group_version = re.sub(r"[^a-z0-9]+", "-", api_version.lower())
    return f"{kind.lower()}-{group_version}.json"


def _write(path: Path, schema: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-json-schema", type=Path, required=True,
                        help="a kubernetes-json-schema '-local-strict' directory (with _definitions.json)")
    parser.add_argument("--kubernetes-version", default="v1.32", help="directory name under kubernetes/")
    parser.add_argument("--kuberay-crds", type=Path, required=True, help="kuberay ray-operator/config/crd/bases")
    parser.add_argument("--kuberay-version", default="v1.7.0")
    parser.add_argument("--prometheus-operator-crds", type=Path, required=True,
                        help="prometheus-operator example/prometheus-operator-crd")
    parser.add_argument("--prometheus-operator-version", default="v0.93.0")
    parser.add_argument("--compose-spec", type=Path, required=True, help="compose-spec schema/compose-spec.json")
    args = parser.parse_args(argv)

    source = args.kubernetes_json_schema
    definitions = json.loads((source / "_definitions.json").read_text(encoding="utf-8"))
    definitions = definitions.get("$defs", definitions.get("definitions"))
    index: dict[str, str] = {}

    for file_name, api_version, kind in KUBERNETES_KINDS:
        schema = _bundle(json.loads((source / file_name).read_text(encoding="utf-8")), definitions)
        target = Path("kubernetes") / args.kubernetes_version / _file_name(api_version, kind)
        _write(HERE / target, schema)
        index[f"{api_version}/{kind}"] = target.as_posix()

    for folder, version, files in (
        (args.kuberay_crds, args.kuberay_version, KUBERAY_CRDS),
        (args.prometheus_operator_crds, args.prometheus_operator_version, PROMETHEUS_OPERATOR_CRDS),
    ):
        for crd_name in files:
            for api_version, kind, schema in crd_schemas(folder / crd_name, definitions):
                project = "kuberay" if api_version.startswith("ray.io/") else "prometheus-operator"
                target = Path(project) / version / _file_name(api_version, kind)
                _write(HERE / target, schema)
                index[f"{api_version}/{kind}"] = target.as_posix()

    compose = json.loads(args.compose_spec.read_text(encoding="utf-8"))
    _write(HERE / "compose-spec.json", compose)

    _write(HERE / "index.json", {"comment": "apiVersion/kind -> schema file, written by vendor_schemas.py",
                                 "schemas": dict(sorted(index.items()))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
