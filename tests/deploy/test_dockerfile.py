"""deploy/docker/Dockerfile: its stage, user, volume, healthcheck and entrypoint; the wheel
build.sh makes is this project; hadolint finds nothing.

These are the static checks; tests/deploy/test_container.py builds and runs the image with
podman. Here build.sh's `pip wheel` command is reproduced on a copy of the sources, and the
HEALTHCHECK's command is run against the real admin server.
"""

from __future__ import annotations

import configparser
import hashlib
import importlib.metadata
import json
import re
import shlex
import shutil
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

import natsbridge
import natsbridge.bridge
from tests.conftest import REPO_ROOT
from tests.deploy.tools import find_tool, parse_cli, run

DOCKERFILE = REPO_ROOT / "deploy/docker/Dockerfile"
BUILD_SH = REPO_ROOT / "deploy/docker/build.sh"
WHEELHOUSE = "deploy/docker/dist/wheelhouse"  # made by build.sh, bind-mounted by the build
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
PACKAGES = ("bridge", "connectors", "mappings")  # installed as natsbridge.<package>
SOURCES = ("natsbridge", *PACKAGES)
DATA_DIR = "/var/lib/natsbridge"
CONFIG_PATH = "/etc/natsbridge/bridge.yaml"
VENV = "/opt/natsbridge"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case) and its text, continuations joined."""

    keyword: str
    value: str

    def json_args(self) -> list[str]:
        """The exec (JSON array) form's arguments."""
        args = json.loads(self.value)
        assert isinstance(args, list), f"{self.keyword} is not in exec form: {self.value}"
        return [str(a) for a in args]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order: comments dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continuation is dropped by Docker too
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        keyword, _, value = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def stages(instructions: list[Instruction]) -> dict[str, list[Instruction]]:
    """Instructions per stage name (`FROM image AS name`); "" holds what precedes any FROM."""
    result: dict[str, list[Instruction]] = {"": []}
    current = ""
    for ins in instructions:
        if ins.keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", ins.value, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {ins.value}"
            current = match.group(2)
            assert current not in result, f"stage {current} defined twice"
            result[current] = []
        result[current].append(ins)
    return result


def env_of(stage: list[Instruction]) -> dict[str, str]:
    """The ENV key=value pairs a stage sets."""
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.value):
                key, sep, value = item.partition("=")
                assert sep, f"ENV in the legacy `ENV key value` form: {ins.value}"
                env[key] = value
    return env


def one(stage: list[Instruction], keyword: str) -> Instruction:
    found = [ins for ins in stage if ins.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, list[Instruction]]:
    return stages(parse_dockerfile(DOCKERFILE.read_text()))


def test_one_stage_from_slim_python_311(dockerfile: dict[str, list[Instruction]]) -> None:
    assert list(dockerfile) == ["", "runtime"]
    args = dict(ins.value.split("=", 1) for ins in dockerfile[""] if ins.keyword == "ARG")
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    assert dockerfile["runtime"][0].value.split()[0] == "${PYTHON_IMAGE}"


# build.sh's command that makes natsbridge's own wheel, from the repository root.
WHEEL_COMMAND = 'pip wheel -q --no-deps --wheel-dir "$DIST/wheelhouse" .'


def test_build_sh_wheels_the_checkout_and_pins_natsbridge_all() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert includes == ["natsbridge*"]
    script = BUILD_SH.read_text()
    assert f'"$PY" -m {WHEEL_COMMAND})' in script
    assert 'cd "$ROOT" && SOURCE_DATE_EPOCH=' in script  # the same sources, the same wheel
    assert "printf 'natsbridge[all]==%s" in script
    assert "--require-hashes" in script and "--no-index" in script
    lock = (REPO_ROOT / "deploy/docker/requirements.lock").read_text()
    pins = re.findall(r"^([a-z0-9-]+)==\S+ \\$", lock, flags=re.MULTILINE)
    for requirement in all_requirements(pyproject["project"]):
        assert re.sub(r"[._]", "-", requirement.name.lower()) in pins, requirement
    # Every pin carries at least one sha256, so pip --require-hashes accepts the file.
    hashed = re.findall(r"^[a-z0-9-]+==\S+ \\\n    --hash=sha256:[0-9a-f]{64}", lock, re.MULTILINE)
    assert len(hashed) == len(pins)


def all_requirements(project: dict[str, Any]) -> list[Requirement]:
    """natsbridge[all]'s requirements: the base ones and the `all` extra's, expanded."""
    extras = project.get("optional-dependencies", {})
    found = [Requirement(r) for r in project["dependencies"]]
    pending = ["all"] if "all" in extras else []
    while pending:
        for requirement in map(Requirement, extras[pending.pop()]):
            if requirement.name == "natsbridge":
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def test_runtime_installs_from_the_wheelhouse_only(
    dockerfile: dict[str, list[Instruction]],
) -> None:
    runs = " ".join(ins.value for ins in dockerfile["runtime"] if ins.keyword == "RUN")
    assert f"--mount=type=bind,source={WHEELHOUSE},target=/wheelhouse" in runs
    assert f"python -m venv {VENV}" in runs
    install = f"{VENV}/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse"
    assert install in runs
    assert "--require-hashes -r /wheelhouse/requirements.txt" in runs
    # The wheelhouse's digest is in the layer's cache key (a bind mount's content is not).
    order = [(ins.keyword, ins.value) for ins in dockerfile["runtime"]]
    assert order.index(("ARG", "WHEELHOUSE_SHA256=unset")) < [k for k, _ in order].index("RUN")
    assert '--build-arg "WHEELHOUSE_SHA256=$digest"' in BUILD_SH.read_text()
    assert f"{VENV}/bin" in env_of(dockerfile["runtime"])["PATH"].split(":")[0]
    assert not any(ins.keyword == "COPY" for ins in dockerfile["runtime"]), (
        "the image takes nothing but the wheelhouse (through the bind mount)"
    )


def test_non_root_user_data_volume_and_port(dockerfile: dict[str, list[Instruction]]) -> None:
    runtime = dockerfile["runtime"]
    user = one(runtime, "USER").value
    assert user == "10001:10001"
    runs = " ".join(ins.value for ins in runtime if ins.keyword == "RUN")
    assert "useradd --system --uid 10001 --gid 10001" in runs
    assert f"chown 10001:10001 {DATA_DIR}" in runs
    # USER comes after the RUNs that need root, VOLUME after the directory is chowned (a
    # named volume copies the image's ownership when first mounted).
    order = [ins.keyword for ins in runtime]
    assert order.index("USER") > max(i for i, k in enumerate(order) if k == "RUN")
    assert json.loads(one(runtime, "VOLUME").value) == [DATA_DIR]
    assert env_of(runtime)["NATSBRIDGE_DATA_DIR"] == DATA_DIR
    assert one(runtime, "WORKDIR").value == DATA_DIR
    assert one(runtime, "EXPOSE").value == "7777"
    assert one(runtime, "STOPSIGNAL").value == "SIGTERM"


def test_entrypoint_and_command_are_what_the_cli_accepts(
    dockerfile: dict[str, list[Instruction]],
) -> None:
    runtime = dockerfile["runtime"]
    assert one(runtime, "ENTRYPOINT").json_args() == ["natsbridge"]
    cmd = one(runtime, "CMD").json_args()
    assert cmd[:3] == ["run", "-c", CONFIG_PATH]
    args = parse_cli(cmd)
    assert args.command == "run"
    assert args.config == CONFIG_PATH
    # In a container the admin endpoint must be reachable from outside its loopback.
    assert args.admin_listen == "0.0.0.0:7777"
    header = DOCKERFILE.read_text().split("ARG ", 1)[0]
    assert CONFIG_PATH in header and DATA_DIR in header and "/run/secrets" in header


def healthcheck(dockerfile: dict[str, list[Instruction]]) -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options and its exec-form command."""
    value = one(dockerfile["runtime"], "HEALTHCHECK").value
    options, sep, command = value.partition("CMD ")
    assert sep, value
    flags = dict(f.removeprefix("--").split("=", 1) for f in options.split())
    return flags, Instruction("CMD", command).json_args()


def test_healthcheck_uses_python_urllib_on_healthz(
    dockerfile: dict[str, list[Instruction]],
) -> None:
    flags, command = healthcheck(dockerfile)
    assert set(flags) == {"interval", "timeout", "start-period", "retries"}
    assert command[:2] == [f"{VENV}/bin/python", "-c"]
    assert "urllib" in command[2]
    assert not {"curl", "wget"} & set(re.split(r"\W+", " ".join(command)))
    url = env_of(dockerfile["runtime"])["NATSBRIDGE_HEALTHCHECK_URL"]
    assert url == "http://127.0.0.1:7777/healthz"


def test_healthcheck_command_against_the_real_admin_server(
    dockerfile: dict[str, list[Instruction]],
) -> None:
    """The HEALTHCHECK's exact code: 0 on /healthz, non-zero on an error status or no server."""
    from natsbridge.bridge.admin.server import AdminServer
    from natsbridge.bridge.config.model import Admin

    _, command = healthcheck(dockerfile)
    code = command[2]
    server = AdminServer(Admin(listen="127.0.0.1:0", token="s3cret"), [])
    server.start()
    try:
        host, port = server.address

        def probe(url: str) -> int:
            env = {"NATSBRIDGE_HEALTHCHECK_URL": url, "PATH": "/usr/bin:/bin"}
            return run([sys.executable, "-c", code], env=env, check=False).returncode

        assert probe(f"http://{host}:{port}/healthz") == 0  # no token needed
        assert probe(f"http://{host}:{port}/readyz") != 0  # 401 without the token
        assert probe(f"http://{host}:{port}/no-such-path") != 0
    finally:
        server.close()
    assert probe(f"http://{host}:{port}/healthz") != 0  # nothing listens any more


# ------------------------------------------------------------------------ the wheel


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps a path (relative to the context) out of the context."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "no exceptions, so this simple matcher is exact"
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch(prefix.rsplit("/", 1)[-1], bare)
            ):
                return True
    return False


def test_dockerignore_keeps_local_state_out_but_not_the_sources(
    dockerfile: dict[str, list[Instruction]],
) -> None:
    patterns = dockerignore_patterns()
    for local in (
        ".venv",
        ".git",
        "natsbridge-data",
        "bench/results",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        "bridge/__pycache__",
        "natsbridge.egg-info",
    ):
        assert ignored(local, patterns), f"{local} would be sent to the Docker daemon"
    for inside in (WHEELHOUSE, f"{WHEELHOUSE}/requirements.txt", f"{WHEELHOUSE}/x.whl"):
        assert not ignored(inside, patterns), f".dockerignore drops {inside}"


def build_context(into: Path) -> Path:
    """A copy of what the wheel is made of (the checkout may be edited meanwhile)."""
    workdir = into / "src"
    workdir.mkdir(parents=True)
    for src in ("pyproject.toml", "README.md", *SOURCES):
        source = REPO_ROOT / src
        if source.is_dir():
            shutil.copytree(source, workdir / src, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, workdir / src)
    return workdir


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel build.sh makes, by its own command, from a copy of the sources."""
    tmp = tmp_path_factory.mktemp("docker-build")
    workdir = build_context(tmp)
    dist = tmp / "dist"
    command = shlex.split(WHEEL_COMMAND.replace('"$DIST/wheelhouse"', str(dist)))
    run([sys.executable, "-m", *command], cwd=workdir, timeout=300)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def wheel_files(path: Path) -> dict[str, str]:
    """Member name -> sha256 of its content."""
    with zipfile.ZipFile(path) as archive:
        return {
            name: hashlib.sha256(archive.read(name)).hexdigest()
            for name in archive.namelist()
            if not name.endswith("/")
        }


def read_member(path: Path, suffix: str) -> str:
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(suffix)]
        return archive.read(name).decode()


def test_wheel_is_this_version_of_natsbridge(wheel: Path) -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert wheel.name == f"natsbridge-{natsbridge.__version__}-py3-none-any.whl"
    assert pyproject["version"] == natsbridge.__version__
    metadata = read_member(wheel, ".dist-info/METADATA")
    assert re.search(r"^Name: natsbridge$", metadata, flags=re.MULTILINE)
    assert re.search(rf"^Version: {re.escape(natsbridge.__version__)}$", metadata, re.MULTILINE)
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, flags=re.MULTILINE)
    base = [Requirement(r) for r in requires if "extra ==" not in r]
    declared = [Requirement(r) for r in pyproject["dependencies"]]
    key = lambda r: (r.name.lower(), str(r.specifier), str(r.marker))  # noqa: E731
    assert sorted(map(key, base)) == sorted(map(key, declared))


def test_wheel_holds_every_module_the_tests_import(wheel: Path) -> None:
    members = wheel_files(wheel)
    for package in PACKAGES:
        assert f"natsbridge/{package}/__init__.py" in members
        on_disk = {
            f"natsbridge/{path.relative_to(REPO_ROOT).as_posix()}"
            for path in (REPO_ROOT / package).rglob("*.py")
            if "__pycache__" not in path.parts
        }
        prefix = f"natsbridge/{package}/"
        in_wheel = {m for m in members if m.startswith(prefix) and m.endswith(".py")}
        assert in_wheel == on_disk, f"{package}: wheel and checkout differ"
    # The modules the tests run are the checkout's files (an editable install), and the
    # wheel holds them byte for byte, as copied into the build context (compared with that
    # copy rather than the live checkout, which someone may be editing meanwhile).
    assert Path(natsbridge.bridge.__file__).resolve() == REPO_ROOT / "bridge/__init__.py"
    context = wheel.parent.parent / "src"
    for name, digest in members.items():
        if name.split("/")[0] == "natsbridge":
            assert hashlib.sha256((context / name).read_bytes()).hexdigest() == digest, name


def test_wheel_entry_points_match_the_installed_distribution(wheel: Path) -> None:
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(read_member(wheel, ".dist-info/entry_points.txt"))
    assert dict(parser["console_scripts"]) == {"natsbridge": "natsbridge.bridge.cli:main"}
    connectors = dict(parser["natsbridge.connectors"])
    assert set(connectors) == {"amqp", "kafka", "stomp", "nats", "mqtt"}
    members = wheel_files(wheel)
    for target in connectors.values():
        module = target.split(":")[0].replace(".", "/")
        assert f"{module}/__init__.py" in members or f"{module}.py" in members, target
    installed = importlib.metadata.distribution("natsbridge")
    assert installed.version == natsbridge.__version__
    got = {(ep.group, ep.name, ep.value) for ep in installed.entry_points}
    want = {
        (group, name, value)
        for group in ("console_scripts", "natsbridge.connectors")
        for name, value in parser[group].items()
    }
    assert got >= want


def test_hadolint_finds_nothing() -> None:
    hadolint = find_tool("hadolint")
    result = run([hadolint, "--version"])
    assert "Haskell Dockerfile Linter" in result.stdout
    lint = run([hadolint, "--no-color", str(DOCKERFILE)], check=False)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
