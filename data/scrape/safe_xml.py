"""Parsing XML that comes from the network (E-utilities replies, JATS articles) without its dangers.

Entities are not expanded (no "billion laughs", no local files read through external entities), no
DTD or anything else is fetched, and lxml's default limits on depth and text size stay on.
"""
from __future__ import annotations

from lxml import etree


def parse_xml(data: bytes, error: str) -> etree._Element:
    """The root element of ``data``; ``ValueError("<error> (<parser message>)")`` when it does not parse."""
    # A parser per call: lxml parsers must not be shared between threads.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as err:
        raise ValueError(f"{error} ({err})") from err
