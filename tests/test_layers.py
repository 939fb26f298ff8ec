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
    "services": {"api", "app", "cli", "commands"},
    "scheduler": {"api", "cli", "commands"},
    "api": {"cli", "commands", "store", "upstream"},
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
