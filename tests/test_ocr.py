"""OCR back-ends: real Google Cloud Vision replies, the client's REST transport against a local server,
the credentials message, and the per-image cache around real rapidocr."""
from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from PIL import Image, ImageDraw, ImageFont

from data.figures.ocr import GCV_CREDENTIALS_HELP, OcrError, make_ocr, words_from_gcv


def test_gcv_words_from_real_replies(fixtures_dir):
    old = json.loads((fixtures_dir / "gcv_ocr" / "test.jpg.json").read_text())
    words = words_from_gcv(old)
    assert len(words) == len(old["textAnnotations"]) - 1  # entry 0 is the whole text
    first = old["textAnnotations"][1]
    xs = [v.get("x", 0) for v in first["boundingPoly"]["vertices"]]
    assert words[0].text == first["description"] and words[0].box[0] == min(xs)
    new = json.loads((fixtures_dir / "gcv_ocr" / "1.jpg.json").read_text())
    assert len(words_from_gcv(new)) == len(new["textAnnotations"]) - 1


def test_gcv_missing_coordinates_and_descriptions():
    reply = {"textAnnotations": [{"description": "A b"},
                                 {"description": "A", "boundingPoly": {"vertices": [{}, {"x": 9}, {"x": 9, "y": 12}, {"y": 12}]}},
                                 {"boundingPoly": {"vertices": [{"x": 1, "y": 1}]}}]}
    words = words_from_gcv(reply)
    assert [(w.text, w.box) for w in words] == [("A", (0, 0, 9, 12))]


class _Vision(BaseHTTPRequestHandler):
    reply: dict = {}
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, body))
        data = json.dumps({"responses": [type(self).reply]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def vision_server(fixtures_dir):
    _Vision.reply = json.loads((fixtures_dir / "gcv_ocr" / "test.jpg.json").read_text())
    _Vision.seen = []
    server = HTTPServer(("127.0.0.1", 0), _Vision)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _rest_client(port: int):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import vision
    from google.cloud.vision_v1.services.image_annotator.transports.rest import ImageAnnotatorRestTransport

    transport = ImageAnnotatorRestTransport(host=f"127.0.0.1:{port}", credentials=AnonymousCredentials(),
                                            url_scheme="http")
    return vision.ImageAnnotatorClient(transport=transport)


def test_gcv_through_rest_transport(vision_server, fixtures_dir):
    ocr = make_ocr("gcv", client=_rest_client(vision_server.server_address[1]))
    with Image.open(fixtures_dir / "gcv_ocr" / "test.jpg") as im:
        words = ocr.read(im)
    assert words == words_from_gcv(_Vision.reply)
    path, body = _Vision.seen[0]
    assert path.split("?")[0] == "/v1/images:annotate"
    request = body["requests"][0]
    from google.cloud import vision

    text_detection = vision.Feature.Type.TEXT_DETECTION
    assert request["features"][0]["type"] in (text_detection.name, int(text_detection))
    with Image.open(fixtures_dir / "gcv_ocr" / "test.jpg") as im:
        sent = Image.open(io.BytesIO(base64.b64decode(request["image"]["content"])))
        assert sent.size == im.size
        ocr.read(im)  # the same picture again comes from the cache, with no second request
    assert len(_Vision.seen) == 1


def test_gcv_error_reply_is_an_ocr_error(vision_server):
    _Vision.reply = {"error": {"code": 7, "message": "billing is off"}}
    ocr = make_ocr("gcv", client=_rest_client(vision_server.server_address[1]))
    with pytest.raises(OcrError, match="billing is off"):
        ocr.read(Image.new("RGB", (20, 20), "white"))


def test_gcv_without_credentials_says_how(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent-key.json"))
    with pytest.raises(OcrError) as err:
        make_ocr("gcv").prepare()
    assert str(err.value) == GCV_CREDENTIALS_HELP and "GOOGLE_APPLICATION_CREDENTIALS" in str(err.value)


def test_unknown_backend():
    with pytest.raises(OcrError, match="rapidocr, gcv, none"):
        make_ocr("tesseract")


def test_rapidocr_cache_on_disk(tmp_path):
    img = Image.new("RGB", (160, 60), "white")
    ImageDraw.Draw(img).text((10, 10), "CT 12", fill="black", font=ImageFont.load_default(size=32))
    first = make_ocr("rapidocr", cache_dir=tmp_path)
    words = first.read(img)
    assert any("12" in w.text for w in words), words
    assert first.misses == 1 and len(list((tmp_path / "rapidocr").glob("*.json"))) == 1
    again = make_ocr("rapidocr", cache_dir=tmp_path)  # a new process would see the same files
    assert again.read(img.copy()) == words and (again.hits, again.misses) == (1, 0)
    assert make_ocr("none").read(img) == []


def test_rapidocr_recognises_a_crop_and_caches_it(tmp_path):
    img = Image.new("RGB", (40, 48), "white")
    ImageDraw.Draw(img).text((10, 6), "b", fill="black", font=ImageFont.load_default(size=32))
    first = make_ocr("rapidocr", cache_dir=tmp_path)
    assert first.can_recognise
    text, score = first.recognise(img)
    assert text == "b" and score > 0.5
    assert len(list((tmp_path / "rapidocr" / "rec").glob("*.json"))) == 1
    again = make_ocr("rapidocr", cache_dir=tmp_path)
    assert again.recognise(img.copy()) == (text, score) and (again.hits, again.misses) == (1, 0)
    none = make_ocr("none")
    assert not none.can_recognise
    with pytest.raises(OcrError, match="no recogniser"):
        none.recognise(img)
