"""OCR back-ends behind one small interface, with a per-image cache.

``make_ocr("rapidocr" | "gcv" | "none", cache_dir=...)`` returns an object with ``name`` and
``read(image) -> list[OcrWord]``; where the back-end has a recogniser of its own (``can_recognise``),
``recognise(image) -> (text, score)`` reads a crop that holds one line of text, without detection.
Back-ends load lazily: nothing happens at import time.

- ``rapidocr``: the ONNX models inside the ``rapidocr-onnxruntime`` wheel; offline, the default.
- ``gcv``: Google Cloud Vision TEXT_DETECTION with ``google-cloud-vision``; credentials come from the
  environment only (``GOOGLE_APPLICATION_CREDENTIALS`` or application-default credentials).
- ``none``: reads nothing, so figures are split without panel letters.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from data.files import atomic_write_json
from models.optional import require

log = logging.getLogger(__name__)

BACKENDS = ("rapidocr", "gcv", "none")
GCV_CREDENTIALS_HELP = (
    "Google Cloud Vision needs credentials: set GOOGLE_APPLICATION_CREDENTIALS to the path of a "
    "service-account JSON key, or run `gcloud auth application-default login`; or use --ocr rapidocr"
)


class OcrError(RuntimeError):
    """An OCR back-end is missing, misconfigured or failed on an image."""


@dataclass(frozen=True)
class OcrWord:
    """One recognised token: its text, pixel box (x0, y0, x1, y1) and confidence (1.0 if unknown)."""

    text: str
    box: tuple[int, int, int, int]
    score: float = 1.0


class Ocr(Protocol):
    name: str

    def prepare(self) -> None:
        """Load models or clients now, raising OcrError with a clear message if that fails."""

    def read(self, image: Image.Image) -> list[OcrWord]:
        """Words found in ``image``, boxes in its pixel coordinates."""


def _poly_box(points: Any) -> tuple[int, int, int, int]:
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    return int(min(xs)), int(min(ys)), int(round(max(xs))), int(round(max(ys)))


class NoOcr:
    """The ``none`` back-end: panels are found, but no letters are read."""

    name = "none"

    def prepare(self) -> None:
        pass

    def read(self, image: Image.Image) -> list[OcrWord]:
        return []


class RapidOcr:
    """Offline OCR with the models shipped in the ``rapidocr-onnxruntime`` wheel (loaded on first use)."""

    name = "rapidocr"

    def __init__(self, threads: int | None = None) -> None:
        self._engine: Any = None
        self.threads = threads  # ONNX Runtime intra-op threads; None: all cores (split_figures --workers sets it)

    def _load(self) -> Any:
        if self._engine is None:
            require("figures", "the rapidocr OCR back-end")
            from rapidocr_onnxruntime import RapidOCR

            self._engine = RapidOCR(**({"intra_op_num_threads": self.threads} if self.threads else {}))
        return self._engine

    def prepare(self) -> None:
        self._load()

    def _run(self, image: Image.Image, **options) -> list:
        """The engine's result list for ``image`` (empty when it finds nothing)."""
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        try:
            result, _ = self._load()(bgr, **options)
        except OcrError:
            raise
        except Exception as e:
            raise OcrError(f"rapidocr failed: {e}") from e
        return result or []

    def read(self, image: Image.Image) -> list[OcrWord]:
        return [OcrWord(str(text), _poly_box(points), float(score)) for points, text, score in self._run(image)]

    def recognise(self, image: Image.Image) -> tuple[str, float]:
        """The text of a crop holding one line, by the recogniser alone (no detection, no rotation).

        The detector often passes over a lone letter; the recogniser reads it once it is cropped.
        """
        result = self._run(image, use_det=False, use_cls=False, use_rec=True)
        if not result:
            return "", 0.0
        text, score = result[0]
        return str(text), float(score)


def words_from_gcv(response: dict) -> list[OcrWord]:
    """Words of a TEXT_DETECTION reply (REST JSON, camelCase or snake_case keys).

    Entry 0 of ``textAnnotations`` is the whole text and is skipped; entries without a description
    are skipped; vertices may leave out coordinates that are 0.
    """
    entries = response.get("textAnnotations", response.get("text_annotations")) or []
    words = []
    for entry in entries[1:]:
        text = entry.get("description")
        poly = entry.get("boundingPoly", entry.get("bounding_poly")) or {}
        vertices = poly.get("vertices") or []
        if not text or not vertices:
            continue
        points = [(v.get("x", 0), v.get("y", 0)) for v in vertices]
        words.append(OcrWord(text, _poly_box(points), float(entry.get("score") or 1.0)))
    return words


class GcvOcr:
    """Google Cloud Vision TEXT_DETECTION. ``client`` may be any ``ImageAnnotatorClient``."""

    name = "gcv"
    whole_image_first = True  # one request per figure; it reads small letters well

    def __init__(self, client: Any = None) -> None:
        self._client = client

    def _load(self) -> Any:
        if self._client is None:
            require("google-ocr", "the gcv OCR back-end (Google Cloud Vision)")
            from google.cloud import vision

            try:
                import google.auth.exceptions as auth_errors

                self._client = vision.ImageAnnotatorClient()
            except auth_errors.DefaultCredentialsError as e:
                raise OcrError(GCV_CREDENTIALS_HELP) from e
        return self._client

    def prepare(self) -> None:
        self._load()

    def read(self, image: Image.Image) -> list[OcrWord]:
        from google.cloud import vision

        client = self._load()
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        try:
            response = client.text_detection(image=vision.Image(content=buf.getvalue()))
        except Exception as e:
            raise OcrError(f"Google Cloud Vision request failed: {e}") from e
        if response.error.message:
            raise OcrError(f"Google Cloud Vision error: {response.error.message}")
        as_dict = type(response).to_dict(response)
        return words_from_gcv(as_dict)


def image_key(image: Image.Image) -> str:
    """A content hash of the decoded pixels (same picture, same key, whatever the file format)."""
    rgb = image.convert("RGB")
    h = hashlib.sha256(f"{rgb.size}".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


class CachedOcr:
    """Per-image cache around a back-end: in memory, and as ``<dir>/<backend>/<hash>.json`` if a dir is given."""

    def __init__(self, backend: Ocr, cache_dir: str | Path | None = None) -> None:
        self.backend = backend
        self.name = backend.name
        self.whole_image_first = bool(getattr(backend, "whole_image_first", False))
        self.can_recognise = callable(getattr(backend, "recognise", None))
        self.cache_dir = Path(cache_dir) / backend.name if cache_dir else None
        self._memory: dict[str, list[OcrWord]] = {}
        self._lines: dict[str, tuple[str, float]] = {}
        self.hits = 0
        self.misses = 0

    def prepare(self) -> None:
        self.backend.prepare()

    def read(self, image: Image.Image) -> list[OcrWord]:
        """The back-end's words in ``image``, cached as ``<dir>/<backend>/<hash>.json``."""
        return self._cached(image, self._memory, "", self.backend.read, lambda words: [asdict(w) for w in words],
                            lambda data: [OcrWord(w["text"], tuple(w["box"]), w["score"]) for w in data])

    def recognise(self, image: Image.Image) -> tuple[str, float]:
        """The back-end's one-line reading of ``image``, cached like ``read`` (under ``rec/``)."""
        if not self.can_recognise:
            raise OcrError(f"the {self.name} back-end has no recogniser for single crops")
        return self._cached(image, self._lines, "rec", self.backend.recognise, list,
                            lambda data: (str(data[0]), float(data[1])))

    def _cached(self, image: Image.Image, memory: dict, folder: str, compute, encode, decode):
        """``compute(image)``, remembered in ``memory`` and in ``<cache_dir>/<folder>/<hash>.json``."""
        key = image_key(image)
        if key in memory:
            self.hits += 1
            return memory[key]
        path = self.cache_dir / folder / f"{key}.json" if self.cache_dir else None
        if path is not None and path.is_file():
            try:
                memory[key] = decode(json.loads(path.read_text()))
                self.hits += 1
                return memory[key]
            except (ValueError, KeyError, IndexError, TypeError):
                log.warning("OCR cache file %s is unreadable; reading the image again", path)
        self.misses += 1
        memory[key] = compute(image)
        if path is not None:
            atomic_write_json(path, encode(memory[key]), indent=None)
        return memory[key]


def make_ocr(name: str, cache_dir: str | Path | None = None, client: Any = None,
             threads: int | None = None) -> CachedOcr:
    """The named back-end wrapped in a cache. ``client`` is passed to ``gcv`` only, ``threads`` to
    ``rapidocr`` only."""
    if name == "rapidocr":
        backend: Ocr = RapidOcr(threads)
    elif name == "gcv":
        backend = GcvOcr(client)
    elif name == "none":
        backend = NoOcr()
    else:
        raise OcrError(f"unknown OCR back-end {name!r}; choose one of {', '.join(BACKENDS)}")
    return CachedOcr(backend, cache_dir)
