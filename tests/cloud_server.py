"""A local stand-in for the PMC Cloud Service bucket (and E-utilities' esearch), for the scraper tests.

It serves the 2026 layout of ``pmc-oa-opendata``: S3 listings of an article's versions
(``/?list-type=2&prefix=PMC<id>.&delimiter=/``), ``/metadata/PMC<id>.<v>.json`` with the real key
names, and the article files under ``/PMC<id>.<v>/``. Faults are queued per path as in
:class:`tests.pubmed_server.FakeNLM`, which it extends.
"""
from __future__ import annotations

import hashlib
import json
import re

from tests.pubmed_server import WEBENV, FakeNLM, make_image

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def graphic_hrefs(xml: bytes) -> list[str]:
    return [h.decode() for h in re.findall(rb'<graphic[^>]*xlink:href="([^"]+)"', xml)]


class FakeCloud(FakeNLM):
    """The bucket; ``url`` serves it, ``url + '/entrez/eutils'`` serves esearch over the added articles."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, list[int]] = {}

    def add_cloud_article(self, xml: bytes, seed: int, version: int = 1, missing: tuple[str, ...] = (),
                          unlisted: tuple[str, ...] = (), **meta) -> str:
        """Serve ``xml`` as version ``version`` of its article, with a JPEG for every graphic: those in
        ``missing`` are listed in the metadata but not served, those in ``unlisted`` are not even listed."""
        pmcid = "PMC" + re.search(rb'<article-id pub-id-type="pmc">(?:PMC)?(\d+)<', xml).group(1).decode()
        name = f"{pmcid}.{version}"
        self.files[f"/{name}/{name}.xml"] = xml
        media = []
        for i, href in enumerate(graphic_hrefs(xml)):
            if href in unlisted:
                continue
            body = make_image(seed + i, (200, 170), "JPEG")
            media.append(f"s3://pmc-oa-opendata/{name}/{href}.jpg?md5={hashlib.md5(body).hexdigest()}")
            if href not in missing:
                self.files[f"/{name}/{href}.jpg"] = body
        record = {"pmcid": pmcid, "version": version, "pmid": None, "doi": None, "mid": None, "title": "",
                  "citation": "", "is_pmc_openaccess": True, "is_manuscript": False, "is_historical_ocr": False,
                  "is_retracted": False, "license_code": "CC BY",
                  "xml_url": f"s3://pmc-oa-opendata/{name}/{name}.xml?md5={hashlib.md5(xml).hexdigest()}",
                  "text_url": f"s3://pmc-oa-opendata/{name}/{name}.txt", "pdf_url": None, "media_urls": media, **meta}
        self.files[f"/metadata/{name}.json"] = json.dumps(record).encode()
        self.versions.setdefault(pmcid, []).append(version)
        self.articles.append((pmcid[3:], b""))  # for esearch
        return pmcid

    def _listing(self, prefix: str) -> bytes:
        pmcid = prefix.rstrip(".")
        prefixes = "".join(f"<CommonPrefixes><Prefix>{pmcid}.{v}/</Prefix></CommonPrefixes>"
                           for v in sorted(self.versions.get(pmcid, [])))
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{S3_NS}"><Name>pmc-oa-opendata'
                f"</Name><Prefix>{prefix}</Prefix><KeyCount>{len(self.versions.get(pmcid, []))}</KeyCount>"
                f"<MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><IsTruncated>false</IsTruncated>{prefixes}"
                "</ListBucketResult>").encode()

    def _esearch(self, params: dict[str, str]) -> tuple[int, str, bytes]:
        start, size = int(params.get("retstart", 0)), int(params.get("retmax", 20))
        ids = "".join(f"<Id>{digits}</Id>" for digits, _ in list(dict.fromkeys(self.articles))[start:start + size])
        body = (f"<eSearchResult><Count>{len(dict.fromkeys(self.articles))}</Count><RetMax>{size}</RetMax>"
                f"<RetStart>{start}</RetStart><QueryKey>1</QueryKey><WebEnv>{WEBENV}</WebEnv>"
                f"<IdList>{ids}</IdList></eSearchResult>")
        return 200, "text/xml; charset=UTF-8", body.encode()

    def _reply(self, path: str, params: dict[str, str]):
        if path == "/" and params.get("list-type") == "2" and not self.faults.get("/"):
            return 200, "application/xml", self._listing(params.get("prefix", "")), {}
        return super()._reply(path, params)
