"""The registered backends, by name. Adding a backend: one module exporting `BACKEND`, one line here.

Everything else (config, CLIs, API, page, benchmarks, tests) loops over this registry.
"""
from models import memoryformer, memsizer, performer, transformer
from models.backend import Backend

_BACKENDS: dict[str, Backend] = {}
# answers requests that name no backend (PLACEVALUE_DEFAULT_MODEL overrides it): the most accurate shipped one
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


for _module in (transformer, memsizer, performer, memoryformer):
    register(_module.BACKEND)
