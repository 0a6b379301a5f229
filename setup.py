"""One import namespace, `capmesh`, rooted at clients/python.

The design keeps services/ and gateway/ as top-level folders; two committed symlinks place them in
the namespace, so the importable tree on disk is the tree every tool sees (mypy, editors, pip):
- clients/python/capmesh                 -> capmesh                (stubs, typed client, CLI)
- clients/python/capmesh/services        -> services/              (runtime and one package per capability)
- clients/python/capmesh/gateway/server  -> gateway/               (the gateway)
An editable install is then a plain path entry (a .pth line), which static tools read, rather
than an import hook that only the interpreter understands.
"""

from setuptools import find_packages, setup

setup(
    package_dir={"": "clients/python"},
    packages=find_packages("clients/python"),
    include_package_data=True,
    package_data={"": ["*.pyi", "py.typed", "*.html", "*.js", "*.css", "tiny.json"]},
)
