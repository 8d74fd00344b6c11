"""The tuning knobs of panel detection (:mod:`data.figures.panels` and its helpers), in one place."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PanelParams:
    """Tuning knobs, as fractions of the figure size where the size of the figure matters."""

    bg_tol: int = 15  # max channel difference that still counts as background
    glyph_frac: float = 0.045  # components smaller than this (of the longer side) are text
    word_frac: float = 0.2  # ... and so are thin-stroked ones up to this size
    stroke_frac: float = 0.004  # "thin": half stroke width at most this (of the longer side), >= 2.5 px
    min_panel_frac: float = 0.08  # a panel spans at least this fraction of the figure per axis
    min_panel_px: int = 24
    line_max_px: int = 6  # separator lines between touching panels are at most this thick
    line_uniform: float = 0.97  # share of a separator's drawn pixels that have the line's colour
    line_span: float = 0.75  # a separator is drawn along at least this share of the region (captions,
    # page rules or margins beside touching panels may take the rest)
    line_side_fg: float = 0.25  # both sides of a separator must be this image-like
    line_contrast: float = 0.5  # ... and this share of the pixels bordering it must differ from its colour
    faint_share: float = 0.3  # a gutter's rows may hold this share of foreground (compression noise) ...
    faint_clean: float = 0.05  # ... if one of them is this clean where images border it on both sides,
    faint_side: float = 0.9  # ... the rows beside it being this much foreground
    attach_frac: float = 0.06  # text within this distance (of the longer side) joins a panel
    seam_rows: float = 0.5  # a seam between touching images: this share of its pixels jump across it
    seam_jump: int = 24  # ... by more than this (largest channel difference)
    seam_ratio: float = 4.0  # its mean jump is this many times that of the columns around it
    seam_isolation: float = 0.35  # columns within 4 px jump less than this share of it (no line, edge)
    seam_texture: float = 8.0  # the columns on both sides vary along the seam (no plain margin)
    seam_structure: float = 0.6  # ... and are structure (image) along this share of it
    seam_side: float = 0.15  # pieces on both sides span at least this share of the region, >= 40 px
    plate_frame: float = 0.9  # a dark plate holding images: its frame is this uniform in one colour ...
    plate_share: float = 0.3  # ... which covers this share of it
    plate_spread: float = 4.0  # the pieces cut on a plate differ in area by at most this factor ...
    plate_aspect: float = 3.0  # ... and are no longer than this times their width (not a blot's lanes)
    strip_span: float = 0.6  # a narrow strip beside images (a shared colour bar) spans this share of them
    frame_cover: float = 0.9  # a frame's line is drawn along this share of its side
