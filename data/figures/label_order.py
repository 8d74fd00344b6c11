"""Reading order of panel labels: what it expects (A, B, C, ... or A1, A2, ..., B1 by rows), how well a
corner's reading agrees with it, repairing misread letters by it, and joining unlabelled pieces.

Pure functions of labels and panel boxes; ``labels.read_labels`` uses them to choose a corner.
"""
from __future__ import annotations

Box = tuple[int, int, int, int]

RUN_MIN = 5  # consecutive letters that count as reading order wherever they sit (see settles)


def overlaps(a: Box, b: Box) -> bool:
    """Whether boxes ``a`` and ``b`` share any pixel."""
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def same_row(a: Box, b: Box) -> bool:
    """Whether ``a`` and ``b`` overlap in height by more than half of the shorter one."""
    return min(a[3], b[3]) - max(a[1], b[1]) > 0.5 * min(a[3] - a[1], b[3] - b[1])


def follows(a: Box, b: Box, by_columns: bool = False) -> bool:
    """Whether ``b`` comes after ``a`` in reading order: on a later row, or further right on the same row;
    ``by_columns``: in a later column, or lower in the same column."""
    if by_columns:
        a, b = (a[1], a[0], a[3], a[2]), (b[1], b[0], b[3], b[2])
    return b[1] >= a[3] or (same_row(a, b) and b[0] > a[0])


def grid_labels(boxes: list[Box]) -> list[str]:
    """Row letter and column number of each box ("A1", "A2", "B1", ...): rows by overlapping heights."""
    rows: list[list[int]] = []
    for i in sorted(range(len(boxes)), key=lambda k: (boxes[k][1], boxes[k][0])):
        for row in rows:
            if same_row(boxes[i], boxes[row[0]]):
                row.append(i)
                break
        else:
            rows.append([i])
    out = [""] * len(boxes)
    for r, row in enumerate(rows[:26]):
        for c, i in enumerate(sorted(row, key=lambda k: boxes[k][0])[:9]):
            out[i] = f"{chr(ord('A') + r)}{c + 1}"
    return out


def expected_labels(labels: list[str | None], boxes: list[Box] | None = None) -> list[str]:
    """What reading order names the panels: A, B, C, ...; or A1, A2, ..., B1 by rows when most of
    the labels read carry a digit (and the boxes are known)."""
    read = [x for x in labels if x]
    if boxes is not None and read and 2 * sum(1 for x in read if len(x) > 1) > len(read):
        return grid_labels(boxes)
    return [chr(ord("A") + i) if i < 26 else "" for i in range(len(labels))]


def _agree(labels: list[str | None], boxes: list[Box] | None) -> int:
    want = expected_labels(labels, boxes)
    return sum(1 for x, w in zip(labels, want) if x and x == w)


def order_score(found: list[tuple[str, float] | None], boxes: list[Box]) -> tuple[int, int]:
    """(labels where reading order puts them, distinct labels) of one corner's reading."""
    labels = [f[0] if f else None for f in found]
    return 2 * _agree(labels, boxes) + len({x for x in labels if x}), count_read(found)


def settles(found: list[tuple[str, float] | None], boxes: list[Box]) -> bool:
    """At least half of the panels read, and two thirds of those in reading order: where the plain
    sequence puts them, or in one unbroken run A, B, C, ... of at least RUN_MIN letters (an unlabelled
    extra piece, such as a colour bar, shifts the sequence without breaking the run; shorter runs are
    often a neighbour's letters read at the wrong corner)."""
    labels = [f[0] if f else None for f in found]
    n_read = count_read(found)
    run = _run(labels)
    in_order = max(_agree(labels, boxes), run if run >= RUN_MIN else 0)
    return 2 * n_read >= len(boxes) and 3 * in_order >= 2 * n_read


def _run(labels: list[str | None]) -> int:
    """The longest run of letters read that follow each other (B after A, C after B, ...), the panels
    without a label skipped."""
    best = run = 0
    prev = None
    for x in labels:
        if not x:
            continue
        run = run + 1 if prev and len(x) == len(prev) == 1 and ord(x) == ord(prev) + 1 else 1
        best, prev = max(best, run), x
    return best


def one_scheme(labels: list[str | None], boxes: list[Box]) -> list[str | None]:
    """Labels of the figure's kind only: letters, or letters with digits when most read have a digit
    (a lone "T2" among letters is a sequence name)."""
    read = [x for x in labels if x]
    with_digit = 2 * sum(1 for x in read if len(x) > 1) > len(read)
    return [x if x and (len(x) > 1) == with_digit else None for x in labels]


def count_read(found: list[tuple[str, float] | None]) -> int:
    return sum(1 for f in found if f)


def _area(b: Box) -> int:
    return (b[2] - b[0]) * (b[3] - b[1])


def repair_sequence(labels: list[str | None], boxes: list[Box] | None = None) -> list[str | None]:
    """Labels in reading order A, B, C, ... (or A1, A2, ..., B1 by rows, see ``expected_labels``)
    when most labels read agree with that order.

    OCR misreads single letters ("C" as "V", "D" as "T") or misses them; when at least two thirds of
    the letters read (and at least two) sit where the plain sequence puts them, the sequence wins.
    """
    n_read, want, agree = sum(1 for x in labels if x), expected_labels(labels, boxes), _agree(labels, boxes)
    if len(labels) > 26 or n_read < 2 or agree < 2 or agree * 3 < n_read * 2 or not all(want):
        return labels
    return list(want)


ORDER_TRUST = 0.8  # share of the letters read that must sit where reading order puts them


def mostly_in_order(labels: list[str | None], boxes: list[Box]) -> bool:
    """Whether at least three letters were read and ORDER_TRUST of them sit where reading order puts
    them: real figures are lettered down columns or around a large panel often enough that two thirds
    (what ``repair_sequence`` asks) would let reading order undo right readings."""
    n_read = sum(1 for x in labels if x)
    return n_read >= 3 and _agree(labels, boxes) >= ORDER_TRUST * n_read


def merge_unlabelled(boxes: list[Box], labels: list[str | None]) -> tuple[list[Box], list[str | None]]:
    """Join an unlabelled piece to the labelled panel just left of or above it.

    Used only when most panels have letters: then a piece without one is most likely a part of a
    panel that the gutter analysis cut apart (a schematic with white space inside). Small pieces
    join; a larger one joins only when reading order speaks for it: every letter read sits where
    the sequence A, B, C, ... puts it once the piece is gone, and not while it is there ("A", piece,
    "B", "C"). Otherwise a full-size piece is more likely a panel whose letter was not read.
    """
    if sum(1 for x in labels if x) < max(2, (len(labels) + 1) // 2):
        return boxes, labels
    boxes, labels = list(boxes), list(labels)
    changed = True
    while changed:
        changed = False
        for i, (box, label) in enumerate(zip(boxes, labels)):
            if label is not None:
                continue
            j = _labelled_neighbour(i, boxes, labels)
            if j is None or (_area(box) > 0.5 * _area(boxes[j]) and not _order_wants_gone(i, labels)):
                continue
            other = boxes[j]
            merged = (min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]), max(box[3], other[3]))
            if any(overlaps(merged, boxes[k]) for k in range(len(boxes)) if k not in (i, j)):
                continue
            boxes[j] = merged
            del boxes[i], labels[i]
            changed = True
            break
    return boxes, labels


def in_reading_order(labels: list[str | None]) -> bool:
    """Whether at least two letters were read and each sits where the sequence A, B, C, ... puts it."""
    read = [(k, x) for k, x in enumerate(labels) if x]
    return len(read) >= 2 and all(x == chr(ord("A") + k) for k, x in read)


def _order_wants_gone(i: int, labels: list[str | None]) -> bool:
    """Whether the letters fall into reading order without piece ``i`` and not with it."""
    return in_reading_order(labels[:i] + labels[i + 1:]) and not in_reading_order(labels)


def _labelled_neighbour(i: int, boxes: list[Box], labels: list[str | None]) -> int | None:
    """The nearest labelled box directly left of (same row) or above (same column) box ``i``."""
    b = boxes[i]
    best, best_gap = None, None
    for j, (o, lab) in enumerate(zip(boxes, labels)):
        if j == i or lab is None:
            continue
        same_col = min(b[2], o[2]) - max(b[0], o[0]) > 0.5 * min(b[2] - b[0], o[2] - o[0])
        if same_row(b, o) and o[2] <= b[0] + 2:
            gap = b[0] - o[2]
        elif same_col and o[3] <= b[1] + 2:
            gap = b[1] - o[3]
        else:
            continue
        if best_gap is None or gap < best_gap:
            best, best_gap = j, gap
    return best
