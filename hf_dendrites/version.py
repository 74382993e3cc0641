"""The package version: one place, read by the build (pyproject) and by saved model records."""

import importlib.metadata
import platform

__version__ = "0.2.0"


def versions(*packages: str) -> dict[str, str]:
    """Python's and the installed versions of the main packages (and of `packages`): what a run records."""
    names = ("torch", "transformers", "datasets", *packages)
    return {
        "python": platform.python_version(),
        **{name: importlib.metadata.version(name) for name in names},
        "hf_dendrites": __version__,
    }
