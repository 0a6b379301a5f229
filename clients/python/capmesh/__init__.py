"""capmesh: generative-AI capabilities over gRPC. `__version__` is the installed package's version."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("capmesh")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
