"""JATS (PMC full-text XML): article metadata and every figure's label, caption and graphic.

Works on a single ``<article>`` file, an E-utilities ``<pmc-articleset>`` and a PMC OAI-PMH ``GetRecord``
answer (articles wrapped in ``<record><metadata>``). Element names are matched by local name so that
namespaced JATS variants parse the same way. Figures inside
``<sub-article>``/``<response>`` belong to other documents (reviews, translations) and are left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from data.captions import normalize_space
from data.scrape import licenses
from data.scrape.candidates import ArticleMeta, normalize_pmcid
from data.scrape.panel_images import FigureImage, panel_images
from data.scrape.safe_xml import parse_xml

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"

# Elements whose text is a block: spaces keep words of neighbouring blocks apart.
_BLOCK = {"p", "title", "label", "list", "list-item", "def-list", "def-item", "term", "def",
          "disp-quote", "sec", "break", "table-wrap", "caption"}
# Elements whose text is not prose: LaTeX duplicates of MathML, MathML annotations, identifiers.
_SKIP = {"tex-math", "annotation", "annotation-xml", "object-id", "alt-text", "long-desc"}
_NESTED_DOCS = {"sub-article", "response"}
_DATE_PREFERENCE = ("epub", "ppub", "pub", "collection", "pmc-release")


@dataclass
class Figure:
    """One ``<fig>``: its id, label, flattened caption, first graphic href, own licence if any, and its
    image files (several when its authors split it into one file per panel, see ``panel_images``)."""

    fig_id: str
    label: str
    caption: str
    graphic: str
    license: str | None = None
    license_url: str = ""
    images: list[FigureImage] = field(default_factory=list)


@dataclass
class Article(ArticleMeta):
    """Article metadata plus its figures in document order."""

    pmcid: str
    license: str = licenses.UNKNOWN
    license_url: str = ""
    figures: list[Figure] = field(default_factory=list)


def parse_jats(data: bytes, origin: str) -> list[Article]:
    """All articles in ``data`` (one ``<article>`` or a ``<pmc-articleset>``).

    ``origin`` (a file name or URL) names the input in errors. Raises ``ValueError`` for XML that
    does not parse and for an article without a PMCID.
    """
    root = parse_xml(data, f"{origin}: malformed XML")
    return [parse_article(el, origin) for el in _articles(root)]


def figures_in(data: bytes, origin: str) -> list[Figure]:
    """Every figure of every article in ``data``, without the article metadata (no PMCID needed)."""
    root = parse_xml(data, f"{origin}: malformed XML")
    return [fig for article in _articles(root) for fig in _figures(article)]


def _articles(node: etree._Element) -> list[etree._Element]:
    """The ``<article>`` elements at or under ``node``, not those nested inside another article."""
    if isinstance(node.tag, str) and _local(node) == "article":
        return [node]
    return [a for child in node if isinstance(child.tag, str) for a in _articles(child)]


def parse_article(article: etree._Element, origin: str = "<article>") -> Article:
    """Metadata and figures of one ``<article>`` element."""
    meta = _path(article, "front", "article-meta")
    if meta is None:
        raise ValueError(f"{origin}: <article> without <front>/<article-meta>")
    ids = {el.get("pub-id-type"): (el.text or "").strip() for el in _kids(meta, "article-id")}
    raw_pmcid = ids.get("pmc") or ids.get("pmcid") or ""
    try:
        pmcid = normalize_pmcid(raw_pmcid)
    except ValueError as err:
        raise ValueError(f"{origin}: article without a usable PMCID ({err})") from err
    lic, lic_url = _license(_path(meta, "permissions"))
    title = _path(meta, "title-group", "article-title")
    return Article(
        pmcid=pmcid,
        pmid=ids.get("pmid", ""),
        doi=ids.get("doi", ""),
        title=flatten(title) if title is not None else "",
        journal=_journal(article),
        year=_year(meta),
        license=lic or licenses.UNKNOWN,
        license_url=lic_url,
        figures=list(_figures(article)),
    )


def flatten(element: etree._Element) -> str:
    """The element's text with inline markup dropped, blocks separated, whitespace normalised."""
    parts: list[str] = []
    _collect_text(element, parts)
    return normalize_space("".join(parts))


def _collect_text(node: etree._Element, out: list[str]) -> None:
    block = _local(node) in _BLOCK
    if block:
        out.append(" ")
    if node.text:
        out.append(node.text)
    for child in node:
        # Comments and processing instructions have non-string tags; only their tail is text.
        if isinstance(child.tag, str) and _local(child) not in _SKIP:
            _collect_text(child, out)
        if child.tail:
            out.append(child.tail)
    if block:
        out.append(" ")


def _figures(article: etree._Element):
    count = 0
    for fig in _walk(article):
        count += 1
        yield _figure(fig, count)


def _walk(node: etree._Element):
    """``<fig>`` elements in document order, not descending into nested documents."""
    for child in node:
        if not isinstance(child.tag, str):
            continue
        name = _local(child)
        if name == "fig":
            yield child
        elif name not in _NESTED_DOCS:
            yield from _walk(child)


def _figure(fig: etree._Element, position: int) -> Figure:
    label_el, caption_el = _first(fig, "label"), _first(fig, "caption")
    group = fig.getparent()
    images = _images(fig)
    if group is not None and _local(group) == "fig-group":
        # A panel of a figure group may rely on the group's label and caption.
        label_el = label_el if label_el is not None else _first(group, "label")
        if caption_el is None:
            caption_el = _first(group, "caption")
            images = _group_panel(fig, group) or images
    lic, lic_url = _license(_first(fig, "permissions"))
    # Some journals print the panel legend ("A: Habitus, dorsal view; B: ...") in an <abstract> of the
    # figure, after its one-line <caption>; a reader sees both as the caption.
    parts = [caption_el] if caption_el is not None else []
    return Figure(
        fig_id=fig.get("id") or f"fig{position}",
        label=flatten(label_el) if label_el is not None else "",
        caption=" ".join(t for t in (flatten(e) for e in parts + _kids(fig, "abstract")) if t),
        graphic=images[0].href if images else "",
        license=lic,
        license_url=lic_url,
        images=images,
    )


def _graphics(fig: etree._Element) -> list[str]:
    """The graphic hrefs of a ``<fig>`` in document order; of an ``<alternatives>`` group (renditions of
    one image) only the first counts."""
    hrefs: list[str] = []
    seen_alternatives = set()
    for g in fig.iter():
        if not isinstance(g.tag, str) or _local(g) != "graphic" or not g.get(XLINK_HREF, "").strip():
            continue
        alt = next((a for a in g.iterancestors() if isinstance(a.tag, str) and _local(a) == "alternatives"), None)
        if alt is not None and fig in alt.iterancestors():
            if id(alt) in seen_alternatives:
                continue
            seen_alternatives.add(id(alt))
        hrefs.append(g.get(XLINK_HREF).strip())
    return hrefs


def _images(fig: etree._Element) -> list[FigureImage]:
    """A figure's images: one per graphic, as panel files when there are several."""
    hrefs = _graphics(fig)
    return panel_images(hrefs) if len(hrefs) > 1 else [FigureImage(h) for h in hrefs]


def _group_panel(fig: etree._Element, group: etree._Element) -> list[FigureImage]:
    """The image of a one-graphic ``<fig>`` that shares its ``<fig-group>``'s caption with other such
    figs, as one panel file of the group ([] when it is the only one)."""
    panels = [f for f in _kids(group, "fig") if _first(f, "caption") is None and len(_graphics(f)) == 1]
    if len(panels) < 2 or fig not in panels:
        return []
    labels = [flatten(_first(f, "label")) if _first(f, "label") is not None else "" for f in panels]
    return [panel_images([_graphics(f)[0] for f in panels], labels)[panels.index(fig)]]


def panel_fields(fig: Figure, part: int) -> dict:
    """The candidate fields (see ``Candidate``) of image ``part`` of ``fig``."""
    if part >= len(fig.images) or fig.images[part].count < 2:
        return {"part": part}
    image = fig.images[part]
    return {"panel_letter": image.letter, "panel_index": image.index, "panel_count": image.count, "part": part}


def _license(permissions: etree._Element | None) -> tuple[str | None, str]:
    """(licence, URL) from a ``<permissions>`` element; (None, "") when it names none."""
    if permissions is None:
        return None, ""
    for lic in _kids(permissions, "license"):
        urls = [lic.get(XLINK_HREF, "")]
        urls += [(el.text or "") for el in lic.iter() if isinstance(el.tag, str) and _local(el) == "license_ref"]
        urls += [el.get(XLINK_HREF, "") for el in lic.iter() if isinstance(el.tag, str) and _local(el) == "ext-link"]
        for url in urls:
            name = licenses.from_url(url)
            if name:
                return name, url.strip()
        if (lic.get("license-type") or "").lower() == "public-domain":
            return licenses.PUBLIC_DOMAIN, ""
    return None, ""


def _journal(article: etree._Element) -> str:
    journal_meta = _path(article, "front", "journal-meta")
    if journal_meta is None:
        return ""
    for el in journal_meta.iter():
        if isinstance(el.tag, str) and _local(el) == "journal-title":
            return flatten(el)
    ids = {el.get("journal-id-type"): (el.text or "").strip() for el in _kids(journal_meta, "journal-id")}
    return ids.get("nlm-ta", "")


def _year(meta: etree._Element) -> str:
    years: dict[str, str] = {}
    for date in _kids(meta, "pub-date"):
        kind = date.get("pub-type") or date.get("date-type") or ""
        year = _first(date, "year")
        if year is not None and (year.text or "").strip().isdigit():
            years.setdefault(kind, year.text.strip())
    for kind in _DATE_PREFERENCE:
        if kind in years:
            return years[kind]
    return next(iter(years.values()), "")


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _kids(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str) and _local(c) == name]


def _first(el: etree._Element, name: str) -> etree._Element | None:
    kids = _kids(el, name)
    return kids[0] if kids else None


def _path(el: etree._Element, *names: str) -> etree._Element | None:
    for name in names:
        el = _first(el, name)
        if el is None:
            return None
    return el
