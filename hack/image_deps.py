"""The image's Python dependencies (used by ``hack/build-image.sh`` and, inside the image build,
by the Dockerfile): the pinned closure, quantramp's imports, and their byte code.

``python hack/image_deps.py [--python-full-version X.Y.Z] [pyproject.toml]`` (run with
the venv's python) prints one ``name==version`` line per distribution in the closure of
``[project].dependencies`` (no extras of the project itself), sorted, with the versions
*installed in this venv*: the image gets exactly the versions the tests ran against.

Markers are evaluated for this interpreter (CPython 3.11 on Linux x86_64, as in the image),
except ``python_full_version``, which is the image's (``--python-full-version``; Debian
bookworm has 3.11.2 while the venv may have 3.11.7). A requirement that only the image's
interpreter needs (``redis`` wants ``async-timeout`` below 3.11.3) is not in the venv: it is
printed as its requirement (``async-timeout>=4.0.3``), for ``pip download`` to resolve, and
named on stderr. Anything else missing, or installed at a version that does not satisfy a
requirement, exits 1 (then run ``make setup``). Used by ``hack/build-image.sh``.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path


def closure(requirements: list[str], python_full_version: str | None = None) -> tuple[dict[str, str], list[str]]:
    """``(canonical name -> installed version, requirements only the image needs)`` for
    ``requirements`` and everything they need."""
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # pragma: no cover - pip always vendors it
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name

    image_env = {"python_full_version": python_full_version} if python_full_version else {}
    extras: dict[str, set[str]] = {}
    versions: dict[str, str] = {}
    image_only: list[str] = []
    problems: list[str] = []
    todo = [(Requirement(r), "pyproject.toml", True) for r in requirements]
    while todo:
        req, needed_by, here_too = todo.pop()
        name = canonicalize_name(req.name)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            if here_too:
                problems.append(f"{req} (needed by {needed_by}) is not installed")
            else:
                req.marker = None
                image_only.append(str(req))
                print(f"image_deps: {req} (needed by {needed_by} on Python {python_full_version}) "
                      "is not in the venv: resolved at download time", file=sys.stderr)
            continue
        if not req.specifier.contains(dist.version, prereleases=True):
            problems.append(f"{req} (needed by {needed_by}): installed {dist.version}")
        new = set(req.extras) - extras.get(name, set())
        if name in versions and not new:
            continue
        versions[name] = dist.version
        wanted = extras.setdefault(name, set())
        wanted |= set(req.extras)
        for spec in dist.requires or []:
            sub = Requirement(spec)
            if sub.marker is None:
                todo.append((sub, f"{dist.metadata['Name']} {dist.version}", True))
                continue
            in_image = any(sub.marker.evaluate({**image_env, "extra": e}) for e in {"", *wanted})
            here = any(sub.marker.evaluate({"extra": e}) for e in {"", *wanted})
            if in_image:
                todo.append((sub, f"{dist.metadata['Name']} {dist.version}", here))
    if problems:
        raise SystemExit("image_deps: the venv does not match pyproject.toml:\n  " + "\n  ".join(sorted(set(problems))))
    return versions, sorted(set(image_only))


def imports(dirs: list[str]) -> list[str]:
    """Absolute non-project imports in the .py files under ``dirs``."""
    names: set[str] = set()
    for d in dirs:
        for path in sorted(Path(d).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module)
                    # ``from scipy import stats`` imports a submodule: a candidate ("?": may be a name)
                    names.update(f"?{node.module}.{a.name}" for a in node.names if a.name != "*")
    return sorted(n for n in names if n.lstrip("?").split(".")[0] not in {"quantramp", "__future__"})


def compile_imports(listing: str) -> int:
    """Import every module named in ``listing`` (see :func:`imports`); 1 if any fails."""
    import importlib

    failed, done = [], 0
    for name in Path(listing).read_text().split():
        optional, name = name.startswith("?"), name.lstrip("?")
        try:
            importlib.import_module(name)
            done += 1
        except ModuleNotFoundError as exc:
            if not (optional and exc.name == name):  # "from a import b" where b is a name, not a module
                failed.append(f"{name}: {exc!r}")
        except Exception as exc:  # noqa: BLE001 - report them all
            failed.append(f"{name}: {exc!r}")
    print(f"image_deps: imported {done} modules ({len(sys.modules)} in all)", file=sys.stderr)
    if failed:
        print("image_deps: these do not import:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--compile-imports"]:
        return compile_imports(argv[1])
    if argv[:1] == ["--imports"]:
        print("\n".join(imports(argv[1:])))
        return 0
    full_version = None
    if argv[:1] == ["--python-full-version"]:
        full_version, argv = argv[1], argv[2:]
    pyproject = Path(argv[0] if argv else "pyproject.toml")
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins, image_only = closure(deps, full_version)
    for name, version in sorted(pins.items()):
        print(f"{name}=={version}")
    for req in image_only:
        print(req)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
