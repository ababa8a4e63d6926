#!/usr/bin/env python3
"""Static checks of docker/ for machines without a Docker engine (CI).

Run by scripts/check-docker.sh, which first validates docker/compose.yaml
against the compose-spec JSON schema. This adds what a schema cannot see:

- docker/Dockerfile: base images pinned, every COPY source present in the
  build context and not excluded by .dockerignore, COPY --from naming an
  earlier stage, a non-root runtime stage with a health check;
- docker/compose.yaml: pinned images, every depends_on target defined (and
  health-checked when waited on as healthy), bind-mounted files present,
  named volumes declared, build context and Dockerfile present;
- docker/config/*.toml: accepted by `homeserver check-config` (the server's
  own parser, so the check follows the code: unknown keys, bad values,
  settings that conflict), hosts that are compose services, and limits that
  agree with nginx and the Kafka topic;
- docker/nginx/nginx.conf: upstream hosts are compose services, then
  `nginx -t` on a copy whose upstream hosts are 127.0.0.1 (compose names do
  not resolve here).

The homeserver binary is $TERN_BIN, else release/homeserver under
$CARGO_TARGET_DIR (default ~/.cache/tern-target, as scripts/test.sh), else
target/release/homeserver: build it first.

Usage: check_docker.py [REPO_ROOT]: exits 1 listing every problem found.
       check_docker.py --self-test [REPO_ROOT]: breaks a scratch copy of the
       files once per check (BREAKAGES) and exits 1 if any breakage passes.
"""

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

from dockerfile_parse import DockerfileParser
from ruamel.yaml import YAML, YAMLError

# Tags that move: an image with one of these (or none) is not pinned.
FLOATING_TAGS = {"latest", "stable", "mainline", "edge", "rolling", "current", "nightly"}

class Checker:
    def __init__(self, root: Path):
        self.root = root
        self.docker = root / "docker"
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    # ---- Dockerfile ----------------------------------------------------

    def check_dockerfile(self) -> None:
        path = self.docker / "Dockerfile"
        where = str(path.relative_to(self.root))
        if not path.is_file():
            self.fail(where, "missing")
            return
        parser = DockerfileParser(str(path))
        ignored = self.read_dockerignore()
        arg_defaults: dict[str, str] = {}
        stages: list[str] = []
        final_user = None
        final_healthcheck = False
        for insn in parser.structure:
            kind, value = insn["instruction"], insn["value"]
            line = f"{where}:{insn['startline'] + 1}"
            if kind == "ARG" and not stages and "=" in value:
                name, default = value.split("=", 1)
                arg_defaults[name.strip()] = default.strip()
            elif kind == "FROM":
                words = value.split()
                image = re.sub(
                    r"\$\{?(\w+)\}?", lambda m: arg_defaults.get(m.group(1), m.group(0)), words[0]
                )
                if image not in stages:
                    self.check_pinned(line, image)
                stages.append(words[2] if len(words) >= 3 and words[1].upper() == "AS" else image)
                final_user, final_healthcheck = None, False
            elif kind in ("COPY", "ADD"):
                self.check_copy(line, value, stages, ignored)
            elif kind == "USER":
                final_user = value.split(":")[0].strip()
            elif kind == "HEALTHCHECK":
                final_healthcheck = value.strip().upper() != "NONE"
        if final_user is None or final_user in ("root", "0"):
            self.fail(where, "the runtime (last) stage must switch to a non-root USER")
        if not final_healthcheck:
            self.fail(where, "the runtime (last) stage has no HEALTHCHECK")

    def check_copy(self, line: str, value: str, stages: list[str], ignored: list[str]) -> None:
        words = value.split()
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        if len(paths) < 2:
            self.fail(line, f"COPY needs a source and a destination: {value!r}")
            return
        source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        if source_stage is not None:
            if source_stage not in stages:
                self.fail(line, f"COPY --from={source_stage}: no earlier stage of that name")
            return
        for source in paths[:-1]:
            if not (self.root / source).exists():
                self.fail(line, f"COPY source {source!r} does not exist in the build context")
            elif self.is_ignored(source, ignored):
                self.fail(line, f"COPY source {source!r} is excluded by .dockerignore")

    def read_dockerignore(self) -> list[str]:
        path = self.root / ".dockerignore"
        if not path.is_file():
            self.fail(".dockerignore", "missing (the build context would include target/ and .git)")
            return []
        return [
            line.strip().rstrip("/")
            for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]

    @staticmethod
    def is_ignored(source: str, patterns: list[str]) -> bool:
        """Docker's rule, simplified: the last matching pattern decides, and
        a pattern that matches a parent directory excludes what is under it."""
        source = source.strip("/")
        parts = source.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        ignored = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").strip("/")
            bare = pattern[3:] if pattern.startswith("**/") else None
            for prefix in prefixes:
                if fnmatch.fnmatchcase(prefix, pattern) or (
                    bare is not None and fnmatch.fnmatchcase(prefix.split("/")[-1], bare)
                ):
                    ignored = not negate
                    break
        return ignored

    def check_pinned(self, where: str, image: str) -> None:
        if "@sha256:" in image:
            return
        name, _, tag = image.rpartition(":")
        if not name or "/" in tag or tag in FLOATING_TAGS:
            self.fail(where, f"image {image!r} is not pinned to a version tag or digest")

    # ---- compose.yaml --------------------------------------------------

    def check_compose_schema(self) -> None:
        """The compose-spec JSON schema that check-jsonschema vendors."""
        tool = Path(sys.executable).parent / "check-jsonschema"
        result = subprocess.run(
            [
                str(tool),
                "--builtin-schema",
                "vendor.compose-spec",
                str(self.docker / "compose.yaml"),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            self.fail("docker/compose.yaml", f"fails the compose-spec schema:\n{output}")

    def load_compose(self) -> dict:
        path = self.docker / "compose.yaml"
        try:
            data = YAML(typ="safe").load(path.read_text())
        except YAMLError as err:
            self.fail("docker/compose.yaml", f"does not parse: {err}")
            return {}
        return data if isinstance(data, dict) else {}

    def check_compose(self, compose: dict) -> None:
        where = "docker/compose.yaml"
        services = compose.get("services") or {}
        if not services:
            self.fail(where, "no services")
        volumes = set((compose.get("volumes") or {}).keys())
        for name, service in services.items():
            at = f"{where}: service {name}"
            if "image" in service:
                self.check_pinned(at, service["image"])
            elif "build" not in service:
                self.fail(at, "has neither image nor build")
            build = service.get("build")
            if build is not None:
                self.check_build(at, build)
            depends = service.get("depends_on") or {}
            if isinstance(depends, list):
                depends = {target: {} for target in depends}
            for target, spec in depends.items():
                if target not in services:
                    self.fail(at, f"depends_on {target!r}, which is not a service")
                elif (spec or {}).get(
                    "condition"
                ) == "service_healthy" and not self.has_healthcheck(services[target]):
                    self.fail(at, f"waits for {target!r} to be healthy, but it has no healthcheck")
            for mount in service.get("volumes") or []:
                self.check_mount(at, mount, volumes)

    def check_build(self, at: str, build) -> None:
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        context_dir = (self.docker / context).resolve()
        if not context_dir.is_dir():
            self.fail(at, f"build context {context!r} does not exist")
        elif not (context_dir / dockerfile).is_file():
            self.fail(at, f"Dockerfile {dockerfile!r} not found in the build context")

    def has_healthcheck(self, service: dict) -> bool:
        check = service.get("healthcheck")
        if check is not None:
            return not check.get("disable", False) and check.get("test") not in (None, ["NONE"])
        build = service.get("build")
        if build is None:
            return False
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        path = (self.docker / context / dockerfile).resolve()
        if not path.is_file():
            return False
        # The last stage's HEALTHCHECK (check_dockerfile vouches for ours).
        healthcheck = False
        for insn in DockerfileParser(str(path)).structure:
            if insn["instruction"] == "FROM":
                healthcheck = False
            elif insn["instruction"] == "HEALTHCHECK":
                healthcheck = insn["value"].strip().upper() != "NONE"
        return healthcheck

    def check_mount(self, at: str, mount, volumes: set[str]) -> None:
        source = mount.get("source") if isinstance(mount, dict) else mount.split(":")[0]
        if source is None:
            return
        if source.startswith((".", "/", "~")):
            if not (self.docker / source).exists():
                self.fail(at, f"bind-mounted {source!r} does not exist")
        elif source not in volumes:
            self.fail(at, f"named volume {source!r} is not declared under top-level volumes")

    # ---- node configuration --------------------------------------------

    def homeserver_binary(self) -> Path | None:
        candidates = [os.environ.get("TERN_BIN")]
        target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache/tern-target")
        candidates += [f"{target}/release/homeserver", str(self.root / "target/release/homeserver")]
        for candidate in candidates:
            if candidate and Path(candidate).is_file():
                return Path(candidate)
        return None

    def check_config_file(self, where: str, path: Path) -> None:
        """The server's own parser: `homeserver check-config FILE`. Without
        this machine's TERN_* variables, which the nodes do not get."""
        binary = self.homeserver_binary()
        if binary is None:
            self.fail(where, "no homeserver binary to check it with: build it or set TERN_BIN")
            return
        env = {key: value for key, value in os.environ.items() if not key.startswith("TERN_")}
        result = subprocess.run(
            [str(binary), "check-config", str(path)],
            check=False,
            capture_output=True,
            text=True,
            env=env,
        )
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            self.fail(where, f"homeserver check-config refuses it: {output}")

    def check_configs(self, compose: dict, nginx_text: str) -> None:
        configs = sorted((self.docker / "config").glob("*.toml"))
        if not configs:
            self.fail("docker/config", "no node configuration (*.toml)")
        services = set((compose.get("services") or {}).keys())
        for path in configs:
            where = str(path.relative_to(self.root))
            self.check_config_file(where, path)
            try:
                config = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as err:
                self.fail(where, f"is not valid TOML: {err}")
                continue
            for host in self.config_hosts(config):
                if host not in services:
                    self.fail(where, f"names host {host!r}, which is not a compose service")
            self.check_limits(where, config, compose, nginx_text)

    @staticmethod
    def config_hosts(config: dict) -> list[str]:
        hosts = []
        for url in (
            (config.get("postgres") or {}).get("url"),
            (config.get("redis") or {}).get("url"),
            ((config.get("media") or {}).get("s3") or {}).get("endpoint"),
        ):
            if url:
                hosts.append(urlsplit(url).hostname or "")
        brokers = (config.get("kafka") or {}).get("brokers", "")
        hosts += [b.strip().rsplit(":", 1)[0] for b in brokers.split(",") if b.strip()]
        hosts += [n.rsplit(":", 1)[0] for n in (config.get("scylla") or {}).get("nodes", [])]
        return hosts

    def check_limits(self, where: str, config: dict, compose: dict, nginx_text: str) -> None:
        upload = (config.get("media") or {}).get("max_upload_bytes", 50 * 1024 * 1024)
        match = re.search(r"client_max_body_size\s+(\d+)([kmg]?);", nginx_text, re.IGNORECASE)
        if match:
            unit = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
            if int(match.group(1)) * unit != upload:
                self.fail(
                    where,
                    f"media.max_upload_bytes = {upload} but nginx's client_max_body_size is "
                    f"{match.group(0)}: uploads in between get nginx's 413 instead of M_TOO_LARGE",
                )
        kafka = config.get("kafka")
        init = (compose.get("services") or {}).get("kafka-init")
        if kafka and init:
            command = [str(word) for word in init.get("command") or []]
            for flag, key in (("--topic", "topic"), ("--partitions", "partitions")):
                if flag in command:
                    given = command[command.index(flag) + 1]
                    if given != str(
                        kafka.get(key, {"topic": "tern.events", "partitions": 64}[key])
                    ):
                        self.fail(where, f"kafka.{key} differs from kafka-init's {flag} {given}")

    # ---- nginx -----------------------------------------------------------

    def check_nginx(self, compose: dict) -> str:
        path = self.docker / "nginx/nginx.conf"
        where = str(path.relative_to(self.root))
        if not path.is_file():
            self.fail(where, "missing")
            return ""
        text = path.read_text()
        services = set((compose.get("services") or {}).keys())
        upstream = re.compile(r"^(\s*server\s+)([A-Za-z][\w.-]*)(:\d+)", re.MULTILINE)
        for match in upstream.finditer(text):
            if match.group(2) not in services:
                self.fail(where, f"upstream server {match.group(2)!r} is not a compose service")
        for directive in ("proxy_buffering off;", "proxy_http_version 1.1;"):
            if directive not in text:
                self.fail(where, f"needs `{directive}` for SSE and long-polls")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).is_file():
            self.fail(where, "nginx is not installed, so `nginx -t` cannot run")
            return text
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "nginx.conf"
            copy.write_text(upstream.sub(r"\g<1>127.0.0.1\g<3>", text))
            result = subprocess.run(
                [nginx, "-t", "-q", "-p", tmp, "-e", f"{tmp}/error.log", "-c", str(copy)],
                check=False,
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                self.fail(where, f"nginx -t failed: {(result.stderr or result.stdout).strip()}")
        return text

    def run(self) -> int:
        self.check_dockerfile()
        self.check_compose_schema()
        compose = self.load_compose()
        self.check_compose(compose)
        nginx_text = self.check_nginx(compose)
        self.check_configs(compose, nginx_text)
        return 1 if self.problems else 0

    def report(self) -> None:
        for problem in self.problems:
            print(f"check-docker: {problem}", file=sys.stderr)


# Each check must be able to fail: one breakage per check, applied to a copy
# of docker/ (and .dockerignore), with the words its finding must contain.
BREAKAGES = [
    (
        "docker/compose.yaml",
        "    restart: unless-stopped\n\n  scylla:",
        "    restarts: always\n\n  scylla:",
        "compose-spec schema",
    ),
    (
        "docker/compose.yaml",
        "      node3:\n        condition: service_healthy\n    healthcheck",
        "      node4:\n        condition: service_healthy\n    healthcheck",
        "'node4', which is not a service",
    ),
    (
        "docker/compose.yaml",
        '      test: ["CMD", "redis-cli", "ping"]\n',
        "      disable: true\n",
        "'redis' to be healthy, but it has no healthcheck",
    ),
    (
        "docker/compose.yaml",
        "./nginx/nginx.conf:/etc",
        "./nginx/missing.conf:/etc",
        "'./nginx/missing.conf' does not exist",
    ),
    (
        "docker/compose.yaml",
        "- redis-data:/data",
        "- redis-state:/data",
        "'redis-state' is not declared",
    ),
    (
        "docker/compose.yaml",
        "image: redis:7.4.5-bookworm",
        "image: redis:latest",
        "'redis:latest' is not pinned",
    ),
    ("docker/compose.yaml", '      - "64"', '      - "32"', "kafka.partitions differs"),
    (
        "docker/Dockerfile",
        "COPY migrations ./migrations",
        "COPY migration ./migrations",
        "'migration' does not exist",
    ),
    (
        "docker/Dockerfile",
        "RUNTIME_IMAGE=debian:bookworm-slim",
        "RUNTIME_IMAGE=debian",
        "'debian' is not pinned",
    ),
    ("docker/Dockerfile", "USER tern:tern", "USER root", "non-root USER"),
    (
        "docker/Dockerfile",
        "COPY --from=builder",
        "COPY --from=build",
        "--from=build: no earlier stage",
    ),
    ("docker/Dockerfile", "HEALTHCHECK --interval", "# HEALTHCHECK --interval", "no HEALTHCHECK"),
    (
        ".dockerignore",
        "\ndocker\n",
        "\ndocker\napi-spec\n",
        "'api-spec' is excluded by .dockerignore",
    ),
    (
        "docker/config/tern.toml",
        'topic = "tern.events"',
        "topic = tern.events",
        "is not valid TOML",
    ),
    (
        "docker/config/tern.toml",
        "key_prefix =",
        "key_prefx =",
        "unknown field: found `key_prefx`",
    ),
    ("docker/config/tern.toml", "[scylla]", "[cassandra]", "unknown field: found `cassandra`"),
    (
        "docker/config/tern.toml",
        'keyspace = "tern"',
        'keyspac = "tern"',
        "unknown field: found `keyspac`",
    ),
    (
        "docker/config/tern.toml",
        'backend = "s3"',
        'backend = "gcs"',
        "unknown variant: found `gcs`",
    ),
    (
        "docker/config/tern.toml",
        "partitions = 64",
        "partitions = 0",
        "kafka.partitions and kafka.replication_factor must be at least 1",
    ),
    (
        "docker/config/tern.toml",
        "redis://redis:6379",
        "redis://cache:6379",
        "host 'cache', which is not a compose service",
    ),
    (
        "docker/config/tern.toml",
        "max_upload_bytes = 52428800",
        "max_upload_bytes = 10485760",
        "client_max_body_size",
    ),
    (
        "docker/nginx/nginx.conf",
        "proxy_read_timeout 1h;",
        "proxy_read_timeout 1h",
        "nginx -t failed",
    ),
    (
        "docker/nginx/nginx.conf",
        "server node3:8008",
        "server node4:8008",
        "upstream server 'node4' is not a compose service",
    ),
    (
        "docker/nginx/nginx.conf",
        "proxy_buffering off;",
        "proxy_buffering on;",
        "needs `proxy_buffering off;`",
    ),
]


def self_test(root: Path) -> int:
    """Runs every breakage against a scratch copy; 1 if one went unnoticed."""
    failures = 0
    for index, breakage in enumerate([None] + BREAKAGES):
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp)
            for entry in root.iterdir():
                if entry.name in ("docker", ".dockerignore"):
                    copy = shutil.copytree if entry.is_dir() else shutil.copy
                    copy(entry, scratch / entry.name)
                elif entry.name not in ("target", ".git"):
                    (scratch / entry.name).symlink_to(entry)
            if breakage is None:
                checker = Checker(scratch)
                if checker.run() != 0:
                    checker.report()
                    print("self-test: the unbroken files do not pass", file=sys.stderr)
                    failures += 1
                continue
            file, old, new, expected = breakage
            target = scratch / file
            text = target.read_text()
            if text.count(old) != 1:
                print(f"self-test {index}: {old!r} is not in {file} exactly once", file=sys.stderr)
                failures += 1
                continue
            target.write_text(text.replace(old, new))
            checker = Checker(scratch)
            status = checker.run()
            if status == 0 or not any(expected in problem for problem in checker.problems):
                print(
                    f"self-test {index}: breaking {file} ({old!r} -> {new!r}) was not reported "
                    f"as {expected!r}; got {checker.problems}",
                    file=sys.stderr,
                )
                failures += 1
    print(f"check-docker self-test: {len(BREAKAGES)} breakages, {failures} unnoticed")
    return 1 if failures else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    default_root = Path(__file__).resolve().parent.parent
    if args[:1] == ["--self-test"]:
        sys.exit(self_test(Path(args[1] if len(args) > 1 else default_root).resolve()))
    checker = Checker(Path(args[0] if args else default_root).resolve())
    status = checker.run()
    checker.report()
    if status == 0:
        print("check-docker: Dockerfile, compose.yaml, node configs and nginx.conf are consistent")
    sys.exit(status)
