"""Imports flow one way: api → services → store/cache/upstream → models/errors/config (never upwards)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "chessstats"

#: layer → the layers it must never import
FORBIDDEN = {
    "models": {"api", "services", "store", "upstream", "scheduler", "app", "cache", "cli", "commands"},
    "locks": {"api", "services", "store", "upstream", "scheduler", "app", "cache", "models", "config"},
    "errors": {"api", "services", "store", "upstream", "scheduler", "app", "cache", "models"},
    "config": {"api", "services", "store", "upstream", "scheduler", "app", "cache"},
    "upstream": {"api", "services", "store", "scheduler", "app", "cache", "cli", "commands"},
    "store": {"api", "services", "scheduler", "app", "cache", "cli", "commands", "upstream"},
    "cache": {"api", "services", "store", "upstream", "scheduler", "app"},
    "payload": {"api", "services", "store", "upstream", "scheduler", "app", "cache"},
    "keys": {"api", "services", "store", "upstream", "scheduler", "app", "cache", "models", "config", "resources"},
    "services": {"api", "app", "cli", "commands", "resources", "scheduler"},
    # the scheduler only schedules: job bodies live in the services (its registry names them)
    "scheduler": {"api", "cli", "commands", "upstream", "cache", "payload", "keys"},
    "resources": {"api", "app", "cli", "commands", "scheduler"},
    "api": {"cli", "commands", "store", "upstream", "resources"},
    # leaf modules every layer may use
    "metrics": {"api", "services", "store", "upstream", "scheduler", "app", "cache", "resources", "cli", "commands"},
    "ratelimit": {"api", "services", "store", "upstream", "scheduler", "app", "cache", "resources", "cli",
                  "commands"},
}


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "chessstats" and len(parts) > 1:
                layers.add(parts[1])
    return layers


def test_no_module_imports_a_layer_above_it() -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        layer = rel.parts[0].removesuffix(".py")
        for target in imported_layers(path) & FORBIDDEN.get(layer, set()):
            violations.append(f"{rel} imports chessstats.{target}")
    assert violations == []


def test_the_check_sees_imports() -> None:
    assert "store" in imported_layers(PACKAGE / "services" / "tournaments.py")


def _sources() -> list[tuple[Path, str]]:
    return [(p, p.read_text(encoding="utf-8")) for p in PACKAGE.rglob("*.py")]


def test_the_scheduler_reaches_the_services_only_through_its_registry() -> None:
    offenders = [str(p.relative_to(PACKAGE)) for p, _ in _sources()
                 if p.parent.name == "scheduler" and p.name != "registry.py" and "services" in imported_layers(p)]
    assert offenders == []


def test_resources_are_opened_only_by_the_resources_object() -> None:
    """Database, cache and upstream clients are built in chessstats/resources.py alone (and the
    upstream modules' own factories), so the data-dir layout has one owner."""
    built = {"Database", "TTLCache", "RedisTTLCache", "PostgresDatabase", "LichessClient", "FideClient"}
    offenders = []
    for path, text in _sources():
        rel = str(path.relative_to(PACKAGE))
        if rel == "resources.py" or rel.startswith("upstream/"):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name in built:
                    offenders.append(f"{rel}:{node.lineno}: {name}(...)")
    assert offenders == []


def _string_starts(tree: ast.AST) -> list[str]:
    """The literal text every string constant and f-string of a module starts with (docstrings excluded)."""
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append(node.value)
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            out.append(str(node.values[0].value))
    return out


def test_cache_keys_are_spelled_in_one_module() -> None:
    """Every cache key is built by chessstats/keys.py: no other module spells a key prefix."""
    prefixes = ("tournament:", "results:", "games:", "tournaments:", "players:", "player:", "history:", "fail:",
                "missing:")
    offenders = []
    for path, text in _sources():
        rel = str(path.relative_to(PACKAGE))
        if rel == "keys.py":
            continue
        offenders += [f"{rel}: {value!r}" for value in _string_starts(ast.parse(text)) if value.startswith(prefixes)]
    assert offenders == []


def test_one_http_client_factory_for_every_upstream() -> None:
    offenders = [str(p.relative_to(PACKAGE)) for p, text in _sources()
                 if "httpx.AsyncClient(" in text and p.relative_to(PACKAGE).as_posix() != "upstream/http.py"]
    assert offenders == []


def test_api_answers_are_built_where_the_rate_limits_are_put_on() -> None:
    """An ``/api`` answer carries the limiter's ``RateLimit-*`` lines because the functions that build it
    put them on (``chessstats.api.envelope.add_limits``; there is no response hook without the
    metrics), so an ``HTTPResponse`` is built only in a function that does, or outside ``/api``."""
    outside_api = {  # functions whose answers are never under /api (or not counted: a CORS preflight)
        "api/observe.py": {"metrics_route"}, "api/ops.py": {"health"}, "api/status.py": {"status_page"},
        "api/docs.py": {"docs"}, "app.py": {"_preflight"},
    }
    offenders = []
    for path, text in _sources():
        rel = path.relative_to(PACKAGE).as_posix()
        for func in ast.walk(ast.parse(text)):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            calls = _calls_in(func)
            builds = bool(calls & {"HTTPResponse", "EnvelopeResponse"}) and not calls & {"add_limits", "limits_of"}
            exempt = func.name in outside_api.get(rel, set()) or (rel, func.name) == ("api/envelope.py", "respond")
            if builds and not exempt:  # (envelope.respond puts the lines on its EnvelopeResponse itself)
                offenders.append(f"{rel}: {func.name}")
    assert offenders == []


def _calls_in(func: ast.AST) -> set[str]:
    """The names a function calls in its own body (not in the functions it defines)."""
    out: set[str] = set()
    todo = list(ast.iter_child_nodes(func))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
        todo.extend(ast.iter_child_nodes(node))
    return out
