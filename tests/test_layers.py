"""The layering the design promises, read from the source with `ast`: HTTP stays in service/api/ (and the app
factory), every protocol decodes JSON through one reader and runs one handler helper."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

SERVICE = ROOT / "service"
WEB_FRAMEWORKS = {"flask", "werkzeug"}
# Where HTTP may be known: the blueprints, and create_app (plus the gunicorn hooks that call it).
HTTP_ALLOWED = {SERVICE / "app.py", SERVICE / "gunicorn_conf.py"}
PROTOCOL_BLUEPRINTS = ("predict.py", "tfserving.py", "v2.py")


def _modules() -> Iterator[Path]:
    yield from sorted(SERVICE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Top-level package of every module `path` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _calls(path: Path) -> set[str]:
    """Dotted names of everything `path` calls (`json.loads`, `request.get_json`, `infer`, ...)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            names.add(ast.unparse(node.func))
    return names


def test_nothing_outside_the_api_package_imports_flask() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & WEB_FRAMEWORKS)
        for path in _modules()
        if (SERVICE / "api") not in path.parents
        and path not in HTTP_ALLOWED
        and _imports(path) & WEB_FRAMEWORKS
    }
    assert offenders == {}


def test_the_codecs_and_the_data_plane_are_importable_without_flask_loaded() -> None:
    """The import check above would miss a Flask import hidden behind another module: import them alone."""
    import subprocess
    import sys

    code = (
        "import sys; import service.codecs.own, service.codecs.tfserving, service.codecs.v2, service.state, "
        "service.openapi; bad = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_json_reader_serves_every_protocol() -> None:
    readers = {"json.loads", "request.get_json", "request.json"}
    users = {
        str(path.relative_to(ROOT))
        for path in [*(SERVICE / "api").glob("*.py"), *(SERVICE / "codecs").glob("*.py")]
        if _calls(path) & readers
    }
    assert users == {"service/codecs/body.py"}


def test_every_prediction_route_runs_the_one_handler_helper() -> None:
    for name in PROTOCOL_BLUEPRINTS:
        path = SERVICE / "api" / name
        calls = _calls(path)
        assert "infer" in calls or "handler.infer" in calls, name
        # The batcher hint and the request info are the helper's business, not each route's.
        source = path.read_text()
        assert "arrivals" not in source and "request_info" not in source, name
