"""Maps the repository's top-level folders onto the one import namespace `capmesh`.

- clients/python/capmesh -> capmesh           (generated stubs, typed client, CLI)
- services               -> capmesh.services  (shared runtime and one package per capability)
- gateway                -> capmesh.gateway.server
"""

from setuptools import find_packages, setup

ROOTS = {
    "capmesh": "clients/python/capmesh",
    "capmesh.services": "services",
    "capmesh.gateway.server": "gateway",
}


def packages_under(prefix: str, folder: str) -> list[str]:
    return [prefix] + [f"{prefix}.{name}" for name in find_packages(folder)]


packages = [pkg for prefix, folder in ROOTS.items() for pkg in packages_under(prefix, folder)]
setup(packages=packages, package_dir=ROOTS, include_package_data=True,
      package_data={"": ["*.pyi", "py.typed", "*.html", "*.js", "*.css"]})
