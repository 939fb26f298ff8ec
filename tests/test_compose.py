"""compose.yaml and deploy/nginx.conf (issue 12's several-hosts setup) agree with the code: every
chessstats service's environment is a configuration the service accepts (``config check``, the same
decoding ``serve`` does), on PostgreSQL and Redis, trusting X-Forwarded-For from the proxy only; and
nginx sends to exactly the chessstats hosts, on the port they listen on. (No container runs here: the
hosts' behaviour on a shared PostgreSQL and Redis is tests/test_redis_hosts.py's.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
HOSTS = [name for name, svc in SERVICES.items() if "serve" in (svc.get("command") or [])]


def _substitute(value: str, env: dict[str, str]) -> str:
    """compose's ``${VAR:-default}`` interpolation."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def _config_of(service: str, tmp_path: Path, given: dict[str, str]) -> dict:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    env.update({k: _substitute(str(v), given) for k, v in SERVICES[service]["environment"].items()})
    env["CHESSSTATS_DATA_DIR"] = str(tmp_path / service)  # the volume's mount point, here
    done = subprocess.run([sys.executable, "-m", "chessstats", "config", "check"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_two_hosts_and_a_proxy() -> None:
    assert HOSTS == ["chessstats-a", "chessstats-b"]
    assert {"postgres", "redis", "proxy", "migrate"} <= set(SERVICES)
    for host in HOSTS:
        assert SERVICES[host]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        mounts = SERVICES[host]["volumes"]
        assert f"host-{host[-1]}:/var/lib/chessstats" in mounts  # a data dir per host


def test_every_host_environment_is_a_valid_configuration_on_postgresql_and_redis(tmp_path: Path) -> None:
    proxy_ip = SERVICES["proxy"]["networks"]["chessstats"]["ipv4_address"]
    for service in [*HOSTS, "migrate"]:
        config = _config_of(service, tmp_path, {"POSTGRES_PASSWORD": "s3cret", "CHESSSTATS_CONTACT": "a@b.c"})
        assert config["store"]["url"] == "postgresql://chessstats:***@postgres:5432/chessstats"  # password hidden
        assert config["cache"]["url"] == "redis://redis:6379/0"
        assert config["ratelimit"]["trusted_proxies"] == [f"{proxy_ip}/32"]
        assert config["upstream"]["contact"] == "a@b.c"


def test_nginx_sends_to_the_hosts_on_their_port_with_the_client_address() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    upstream = re.search(r"upstream chessstats \{(.*?)\}", conf, re.S)
    assert upstream is not None
    servers = re.findall(r"server ([\w.-]+):(\d+)", upstream.group(1))
    for host in HOSTS:
        command = SERVICES[host]["command"]
        assert (host, command[command.index("--port") + 1]) in servers
    assert len(servers) == len(HOSTS)
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in SERVICES["proxy"]["volumes"]
