"""Issue 22, images that run: docker/compose.yml and docker/Dockerfile agree with each other
and with the code. Images cannot be built here (no base images offline), so this checks what
can be: `docker compose config` (or docker-compose) where installed, and everywhere the file read
with PyYAML against the Dockerfile's stages, the commands against the modules, files and
queues they name, and the compose environment against the settings module."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
# What an operator must supply (the file's ${VAR:?...}): test values.
REQUIRED = {"SECRET_KEY": "test-compose-secret-0123456789", "MINIO_PASSWORD": "test-minio-pw"}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == keyword]


def logical_lines(path: Path) -> Iterator[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def parse_dockerfile(path: Path) -> tuple[dict[str, str], dict[str, Stage]]:
    """(the global ARG defaults, the stages by name)."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical_lines(path):
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = re.split(r"\s+as\s+", rest, flags=re.IGNORECASE)
            current = stages[parts[-1].strip()] = Stage(parts[-1].strip(), parts[0].strip())
        elif current is None and word == "ARG":
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        elif current is not None:
            current.instructions.append((word, rest.strip()))
    return args, stages


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    found = [stages[name]]
    while found[-1].base in stages:
        found.append(stages[found[-1].base])
    return found


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def built_services() -> dict[str, dict]:
    return {name: s for name, s in compose()["services"].items() if "build" in s}


def dockerfile_of(service: dict) -> Path:
    build = service["build"]
    return (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()


def exec_form(text: str) -> list[str]:
    """A CMD / RUN in JSON (exec) form, or a shell line split as sh would."""
    return json.loads(text) if text.startswith("[") else shlex.split(text)


def compose_command() -> list[str] | None:
    """Docker's compose plugin, else the standalone docker-compose; None without either."""
    for command in (["docker", "compose"], ["docker-compose"]):
        try:
            probe = subprocess.run([*command, "version"], capture_output=True, timeout=30)
        except FileNotFoundError:
            continue
        if probe.returncode == 0:
            return command
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed here")
    env = {**os.environ, **REQUIRED}
    config = [*command, "-f", str(COMPOSE), "config", "--quiet"]
    done = subprocess.run(config, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    bare = {k: v for k, v in env.items() if k != "SECRET_KEY"}
    refused = subprocess.run(config, env=bare, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "set SECRET_KEY" in refused.stderr


def test_every_built_service_names_a_stage_of_its_dockerfile() -> None:
    images: dict[str, tuple] = {}
    for name, service in built_services().items():
        _, stages = parse_dockerfile(dockerfile_of(service))
        assert service["build"]["target"] in stages, f"{name}: no stage {service['build']}"
        # One image name, one build: compose builds it once for every service that names it.
        key = tuple(sorted(service["build"].items()))
        assert images.setdefault(service["image"], key) == key, name


def commands(service: dict, stage: Stage) -> list[list[str]]:
    """What the service's container runs: its command, or its image's CMD."""
    cmd = service.get("command") or exec_form(stage.args("CMD")[-1])
    return [cmd, *[exec_form(c.split("CMD ", 1)[1]) for c in stage.args("HEALTHCHECK")]]


def copies_of(stage: Stage, stages: dict[str, Stage]) -> set[str]:
    """The top-level repo paths a stage COPYs into /app: from the build context, or from
    another stage of the file (what that stage holds under the path taken)."""
    found: set[str] = set()
    for args in stage.args("COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--chown")]
        origin = words[0].removeprefix("--from=") if words[0].startswith("--from=") else None
        sources = words[1:-1] if origin else words[:-1]
        if origin is None:
            found |= {Path(src).parts[0] for src in sources}
        elif origin in stages:
            inner = copies_of(stages[origin], stages)
            for src in (Path(s) for s in sources if s.startswith("/app")):
                taken = src.relative_to("/app")
                found |= inner if taken == Path(".") else inner & {taken.parts[0]}
    return found


@dataclass
class Image:
    """An image as docker/Dockerfile builds a stage: what a command run in it finds."""

    stages: list[Stage]  # the stage and those it is built FROM
    every: dict[str, Stage]  # every stage of its Dockerfile, by name
    queues: set[str]  # the queues webapp.jobs.queue and the settings know

    def copied(self) -> set[str]:
        return set().union(*(copies_of(stage, self.every) for stage in self.stages))

    def present(self, path: str) -> list[str]:
        if not (ROOT / path).exists():
            return [f"{path} does not exist"]
        inside = Path(path).parts[0] in self.copied()
        return [] if inside else [f"{path} is not copied into the image"]

    def problems(self, argv: list[str]) -> list[str]:
        """Why `argv` would fail in this image (empty: it would not)."""
        check = {"sh": self.shell, "python": self.python, "celery": self.celery}.get(argv[0])
        if argv[0] == "gunicorn":
            return self.present(argv[argv.index("-c") + 1])
        return check(argv[1:]) if check else [f"unknown command {argv}"]

    def shell(self, args: list[str]) -> list[str]:
        return [p for part in args[1].split("&&") for p in self.problems(shlex.split(part))]

    def python(self, args: list[str]) -> list[str]:
        if args[0] == "-m":
            found = importlib.util.find_spec(args[1]) is not None
            return self.present(args[1].split(".")[0]) if found else [f"no module {args[1]}"]
        if args[0] == "manage.py":
            from django.core.management import get_commands

            known = args[1] in get_commands()
            return self.present(args[0]) + ([] if known else [f"no command {args[1]}"])
        return self.present(args[0])

    def celery(self, args: list[str]) -> list[str]:
        found = self.present(args[args.index("-A") + 1])
        queues = args[args.index("-Q") + 1].split(",") if "-Q" in args else []
        found += [f"no queue {q}" for q in queues if q not in self.queues]
        return found + ([] if args[2] in ("worker", "beat") else [f"celery {args[2]}?"])


def known_queues() -> set[str]:
    from django.conf import settings

    from webapp.jobs.queue import LANES

    return {q for lane in LANES for q in lane} | set(settings.TRAINING_QUEUES)


def image_of(service: dict) -> Image:
    _, stages = parse_dockerfile(dockerfile_of(service))
    return Image(chain(stages, service["build"]["target"]), stages, known_queues())


def test_every_command_runs_something_the_image_holds_and_every_queue_is_served() -> None:
    from django.conf import settings

    from webapp.jobs.queue import ROUTES

    served: set[str] = set()
    for name, service in built_services().items():
        image = image_of(service)
        for argv in commands(service, image.stages[0]):
            assert not image.problems(argv), (name, argv, image.problems(argv))
            if argv[0] == "celery" and argv[3] == "worker":
                served |= set(argv[argv.index("-Q") + 1].split(","))
    routed = set(ROUTES.values()) | set(settings.TRAINING_QUEUES)
    assert routed <= served, "a queue no compose worker serves"


def test_the_command_check_names_what_an_image_lacks(tmp_path: Path) -> None:
    """The issue's first finding: a worker image that does not hold what it runs."""
    text = (DOCKER / "Dockerfile").read_text().replace("COPY workers /app/workers\n", "")
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text(text)
    service = {
        "build": {"context": "..", "dockerfile": "docker/Dockerfile", "target": "worker-cpu"}
    }
    image = image_of({**service, "build": {**service["build"], "context": str(tmp_path)}})
    argv = ["celery", "-A", "workers", "worker", "-Q", "default,nowhere"]
    assert image.problems(argv) == ["workers is not copied into the image", "no queue nowhere"]


def test_every_worker_image_compiles_the_kernels_at_build() -> None:
    _, stages = parse_dockerfile(DOCKER / "Dockerfile")
    workers = [s for s in stages.values() if s.args("CMD") and "worker" in s.args("CMD")[-1]]
    assert {s.name for s in workers} == {"worker-cpu", "worker-gpu"}
    for stage in workers:
        holds = Image(chain(stages, stage.name), stages, set()).copied()
        runs = stage.args("RUN")
        assert "csrc" in holds and any("install_worker.sh build" in r for r in runs), stage.name
    gpu_build = [r for r in stages["worker-gpu"].args("RUN") if "install_worker.sh build" in r]
    assert gpu_build == ["docker/install_worker.sh build --cuda"]


def test_the_cuda_base_and_the_torch_index_name_one_cuda_version() -> None:
    args, stages = parse_dockerfile(DOCKER / "Dockerfile")
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-devel-", args["CUDA_IMAGE"])
    index = re.search(r"/whl/cu(\d+)$", args["TORCH_INDEX_CUDA"])
    assert cuda and index and index[1] == cuda[1] + cuda[2]
    assert args["TORCH_INDEX_CPU"].endswith("/whl/cpu")
    assert stages["worker-gpu"].base == "${CUDA_IMAGE}"


def test_the_build_context_holds_every_path_the_images_copy() -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else stays out of the context
    _, stages = parse_dockerfile(DOCKER / "Dockerfile")
    for stage in stages.values():
        for args in stage.args("COPY"):
            if args.startswith("--from"):
                continue
            for src in shlex.split(args)[:-1]:
                assert (ROOT / src).exists(), src
                assert Path(src).parts[0] in allowed, f"{src} is outside the build context"


def test_the_compose_environment_loads_the_settings(tmp_path: Path) -> None:
    env = {
        key: re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: REQUIRED[m[1]], str(value))
        for key, value in compose()["x-env"].items()
    }
    secrets = {s["environment"]["SECRET_KEY"] for s in built_services().values()}
    assert secrets == {"${SECRET_KEY:?set SECRET_KEY}"}  # every host the same key
    env["DATA_DIR"] = str(tmp_path)  # not this machine's /data
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.DEBUG, s.SECRET_KEY, s.DATABASES['default']['ENGINE'], "
        "s.DATABASES['default']['HOST'], s.CELERY_BROKER_URL, s.STORAGES['default']['BACKEND']]))"
    )
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**clean, **env, "DJANGO_SETTINGS_MODULE": "webapp.settings"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    debug, key, engine, host, broker, storage = json.loads(done.stdout.splitlines()[-1])
    assert (debug, key, host) == (False, REQUIRED["SECRET_KEY"], "db")
    assert engine.endswith("postgresql") and broker.startswith("redis://redis:")
    assert storage.endswith("S3Storage")  # the bucket, not local folders
