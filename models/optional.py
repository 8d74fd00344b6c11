"""Optional dependencies, grouped as the package's extras (pyproject.toml): a feature whose packages are
missing stops with the ``pip install`` line that adds them, instead of an ImportError deep in a call."""
from __future__ import annotations

import importlib.util

# extra -> the modules it provides (import names)
EXTRAS = {
    "scrape": ("requests", "urllib3", "lxml"),
    "figures": ("rapidocr_onnxruntime",),
    "google-ocr": ("google.cloud.vision",),
    "clinical": ("pydicom", "nibabel"),
    "export": ("onnx", "onnxscript", "onnxruntime"),
}


class MissingDependency(ImportError):
    """A feature's optional packages are not installed; the message gives the install line."""

    exit_code = 2  # data.errors.BAD_INPUT (the library imports no data code)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package (google.cloud)
        return False


def require(extra: str, feature: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingDependency` unless the modules of ``extra`` (or ``modules`` of it) are installed;
    ``feature`` names what needs them (a command, an option, a file)."""
    missing = [m for m in (modules or EXTRAS[extra]) if not _installed(m)]
    if missing:
        raise MissingDependency(f"{feature} needs {', '.join(missing)}, which is not installed: "
                                f"pip install 'medvl[{extra}]' (or pip install -r requirements.txt)")
