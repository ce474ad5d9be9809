"""docker-compose.yaml: valid against the compose spec, and the deployment's invariants hold.

CI has no Docker engine, so the file is checked, not run: offline against the compose spec's
JSON schema (vendored in check-jsonschema), then parsed for what the schema cannot see.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"

SECRET_KEY = re.compile(r"PASSWORD(?!S?_FILE)|SECRET|FERNET|TOKEN|_KEY$|_KEY_ID$|JWT", re.I)  # a *_FILE is a path
REQUIRED_REF = re.compile(r"^\$\{([A-Z][A-Z0-9_]*):\?[^}]+\}$")  # ${VAR:?message}: no fallback value
ANY_REF = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
URL_CREDENTIALS = re.compile(r"://[^/\s:@]*:([^@\s]*)@")


def _check_jsonschema() -> str:
    exe = Path(sys.executable).parent / "check-jsonschema"
    found = str(exe) if exe.exists() else shutil.which("check-jsonschema")
    assert found, "check-jsonschema is not installed: it is in the `test` extra (make install)"
    return found


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # SafeLoader resolves the `<<:` merge keys


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def airflow(services) -> dict:
    found = {name: svc for name, svc in services.items() if name.startswith("airflow-")}
    assert {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
            "airflow-worker", "airflow-worker-gpu"} <= set(found)
    return found


def _command(svc: dict) -> list[str]:
    cmd = svc.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _queues(svc: dict) -> set[str] | None:
    """The Celery queues a worker consumes, or None when the service is not a Celery worker."""
    cmd = _command(svc)
    if "celery" not in cmd or "worker" not in cmd:
        return None
    for i, arg in enumerate(cmd):
        if arg in ("--queues", "-q"):
            return set(cmd[i + 1].split(","))
        if arg.startswith("--queues="):
            return set(arg.split("=", 1)[1].split(","))
    return {"default"}  # a worker without --queues consumes [operators] default_queue


def _with_defaults(text: str) -> str:
    """`text` as compose would interpolate it with an .env that sets only the required variables."""
    return ANY_REF.sub(lambda m: m.group(3) if m.group(2) in ("-", ":-") else "set", text)


def _strings(node, path=""):
    """Every (path, string) in the parsed file, keys included."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{path}.{k}", str(k)
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


# -- the schema ------------------------------------------------------------------------------

def test_compose_file_validates_against_the_compose_spec():
    proc = subprocess.run([_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_rejects_a_broken_file(tmp_path):
    """Guards the guard: a service with an unknown key must fail validation."""
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text("services:\n  web:\n    image: x\n    restart_policy_typo: always\n")
    proc = subprocess.run([_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(broken)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout


# -- secrets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("var", ["AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY",
                                 "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
                                 "AIRFLOW__CELERY__RESULT_BACKEND"])
def test_every_airflow_service_shares_one_reference(airflow, var):
    """Components with different JWT secrets fail each other's signature checks; different Fernet
    keys cannot read each other's connections."""
    values = {name: (svc.get("environment") or {}).get(var) for name, svc in airflow.items()}
    assert None not in values.values(), {n: v for n, v in values.items() if v is None}
    assert len(set(values.values())) == 1, values
    value = next(iter(values.values()))
    if var in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
        assert REQUIRED_REF.match(value), f"{var} must be a required ${{VAR:?...}} reference, not {value!r}"


def test_no_literal_secret_anywhere(services):
    """Every secret-looking value is a `${VAR:?...}` reference to .env (or a pass-through from it)."""
    bad = []
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        for key, value in env.items():
            if SECRET_KEY.search(key) and value is not None and not REQUIRED_REF.match(str(value)):
                bad.append(f"{name}.environment.{key}={value!r}")
    for where, text in _strings(yaml.safe_load(COMPOSE.read_text())):
        for password in URL_CREDENTIALS.findall(text):
            if password and not REQUIRED_REF.match(password):
                bad.append(f"{where}: URL password {password!r}")
        for m in ANY_REF.finditer(text):
            var, op, default = m.groups()
            if SECRET_KEY.search(var) and op in ("-", ":-") and default:
                bad.append(f"{where}: {var} falls back to a literal {default!r}")
    raw = COMPOSE.read_text()
    for m in re.finditer(r"--requirepass\s+(\S+)", raw):
        if "$" not in m.group(1):
            bad.append(f"redis password {m.group(1)!r}")
    assert not bad, bad


def test_env_example_names_every_required_variable_and_holds_no_value():
    raw = COMPOSE.read_text()
    required = {m.group(1) for m in ANY_REF.finditer(raw) if m.group(2) in ("?", ":?")}
    referenced = {m.group(1) for m in ANY_REF.finditer(raw)}
    example = ENV_EXAMPLE.read_text()
    set_lines = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", example, re.M))
    mentioned = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.M))
    assert required, "the compose file requires nothing from .env?"
    assert required <= set(set_lines), f"missing from .env.example: {sorted(required - set(set_lines))}"
    assert referenced <= mentioned, f"not documented in .env.example: {sorted(referenced - mentioned)}"
    filled = {k: v for k, v in set_lines.items() if SECRET_KEY.search(k) and v.split("#")[0].strip()}
    assert not filled, f".env.example must hold placeholders, not values: {sorted(filled)}"
    gitignore = (REPO / ".gitignore").read_text().split()
    assert ".env" in gitignore, ".env holds the real secrets: it must be git-ignored"


# -- topology --------------------------------------------------------------------------------

def test_the_gpu_worker_reserves_a_gpu_and_alone_consumes_queue_gpu(services):
    gpu = services["airflow-worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices, devices
    cmd = _command(gpu)
    assert cmd[cmd.index("--concurrency") + 1] == "1", cmd
    consumers = {name: q for name, svc in services.items() if (q := _queues(svc)) is not None}
    assert consumers.get("airflow-worker-gpu") == {"gpu"}, consumers
    assert "default" in consumers.get("airflow-worker", set()), consumers
    assert [n for n, q in consumers.items() if "gpu" in q] == ["airflow-worker-gpu"], consumers
    assert "TORCH_INDEX_URL" in (gpu["build"].get("args") or {}), "the GPU worker's image must carry CUDA torch"


def test_ports_bind_to_localhost_only(services):
    published = []
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else _with_defaults(str(port)).rsplit(":", 2)[0]
            published.append((name, host_ip))
    assert published, "nothing published: where are the UIs?"
    assert all(ip == "127.0.0.1" for _, ip in published), published


def test_every_airflow_service_runs_with_the_nightshift_environment(airflow):
    for name, svc in airflow.items():
        env = svc.get("environment") or {}
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", name
        assert env.get("MLFLOW_TRACKING_URI") == "http://mlflow:5000", name
        assert env.get("NIGHTSHIFT_HOME"), name
        assert str(env.get("NIGHTSHIFT_LAKE", "")).startswith("${NIGHTSHIFT_LAKE"), name
        assert env.get("AIRFLOW__CORE__DAGS_FOLDER"), name


def test_services_wait_for_healthy_dependencies(services, airflow):
    for name in ("postgres", "redis", "mlflow", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer", "airflow-worker", "airflow-worker-gpu"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name, svc in airflow.items():
        deps = svc.get("depends_on") or {}
        for infra in ("postgres", "redis"):
            assert deps.get(infra, {}).get("condition") == "service_healthy", (name, deps)
        if name != "airflow-init":
            assert deps.get("airflow-init", {}).get("condition") == "service_completed_successfully", (name, deps)
    for worker in ("airflow-worker", "airflow-worker-gpu"):
        assert services[worker]["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_images_are_built_from_the_repo_under_the_constraints(services, airflow):
    for name, svc in [*airflow.items(), ("mlflow", services["mlflow"])]:
        build = svc.get("build") or {}
        assert build.get("dockerfile") == "docker/Dockerfile", name
        assert (REPO / build.get("context", ".") / build["dockerfile"]).exists(), name
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile and "ARG TORCH_INDEX_URL" in dockerfile


def test_mlflow_serves_artifacts_from_postgres_with_allowed_hosts(services):
    mlflow = services["mlflow"]
    cmd = " ".join(_command(mlflow))
    assert "--serve-artifacts" in cmd and "--allowed-hosts" in cmd, cmd
    assert str(mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]).startswith("postgresql"), mlflow["environment"]
    init = (REPO / "docker" / "postgres" / "init-databases.sh").read_text()
    assert "CREATE DATABASE airflow" in init and "CREATE DATABASE mlflow" in init


def test_init_creates_the_gpu_pool(services):
    script = " ".join(_command(services["airflow-init"]))
    assert "airflow db migrate" in script and "airflow pools set gpu" in script
