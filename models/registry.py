"""The registered backends, by name. Adding a backend: one module exporting `BACKEND`, its name in
BACKEND_MODULES.

Everything else (config, CLIs, API, page, benchmarks, tests) loops over this registry.
"""
import importlib

from models.backend import Backend

BACKEND_MODULES = ("transformer", "memsizer", "performer", "memoryformer")

_BACKENDS: dict[str, Backend] = {}
# answers requests that name no backend (PLACEVALUE_DEFAULT_MODEL overrides it): the backend the
# project started with, whose decoding state stays the same size however long the answer
DEFAULT = "memsizer"


def register(backend: Backend) -> Backend:
    """Add a backend (tests register throwaway ones); its name must be new and lower-case."""
    if backend.name in _BACKENDS:
        raise ValueError(f"backend {backend.name!r} is already registered")
    if not backend.name.isidentifier() or backend.name != backend.name.lower():
        raise ValueError(f"backend names are lower-case identifiers, got {backend.name!r}")
    _BACKENDS[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    _BACKENDS.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def backends() -> tuple[Backend, ...]:
    return tuple(_BACKENDS.values())


def get(name: str) -> Backend:
    """The backend called `name`, or a ValueError that lists the known ones."""
    try:
        return _BACKENDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(_BACKENDS)}") from None


for _module in BACKEND_MODULES:
    register(importlib.import_module(f"models.{_module}").BACKEND)
