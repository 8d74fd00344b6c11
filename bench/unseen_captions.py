"""Sub-caption quality on captions the splitter's rules were not made on, printed as JSON.

The gold is bench/gold/unseen_subcaptions.json: captions of public JATS articles kept in GitHub
repositories, labelled by reading them (see its ``conventions`` field). The captions themselves are read
from a local sources folder laid out as ``<owner>+<repo>/<path>`` (``--sources``, else
``$MEDVL_UNSEEN_CAPTIONS``, else ../shared/unseen_captions). ``--fetch-from DIR`` first fills that folder
from fetched repository snapshots: DIR holds one git directory per repository, named ``<owner>+<repo>``
(or ``<owner>+<repo>/repo``), and only the XML files the gold names are copied, each at the commit the
gold names.

Scores are those of bench.split_quality's "real_captions" section (its ``score_caption``): label-set
accuracy (share of captions whose list of label groups is exactly right) and mean token F1 of the gold
sub-caption texts. ``failures`` lists every caption whose label groups are wrong or with a gold
sub-caption below ``--f1-below`` token F1.

    python -m bench.unseen_captions [--sources DIR] [--fetch-from DIR] [--f1-below 0.9]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.split_quality import score_caption
from bench.gold_sets import (UNSEEN_CAPTIONS_FILE, GoldCaption, GoldError, load_unseen_captions,
                               parse_github_source, unseen_sources_dir)

ROOT = Path(__file__).resolve().parents[1]
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def _git_dir(snapshots: Path, folder: str) -> Path:
    for candidate in (snapshots / folder / "repo", snapshots / folder):
        if candidate.is_dir() and (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
        if (candidate / ".git").is_dir():
            return candidate / ".git"
    raise GoldError(f"no git directory for {folder} under {snapshots} (fetch github:{folder.replace('+', '/', 1)})")


def materialise(snapshots: Path, sources: Path, gold_path: Path = UNSEEN_CAPTIONS_FILE) -> list[Path]:
    """Copy every source file the gold names, at its commit, from the snapshots into ``sources``."""
    snapshots, sources = Path(snapshots).resolve(), Path(sources).resolve()
    if sources == ROOT or ROOT in sources.parents:
        raise GoldError(f"{sources} is inside the repository; the source files are kept outside it")
    wanted: dict[Path, tuple[str, str, str]] = {}
    for record in json.loads(Path(gold_path).read_text("utf-8"))["captions"]:
        gh = parse_github_source(record["source"])
        wanted.setdefault(gh.local_path(sources), (gh.folder, gh.commit, gh.path))
    written = []
    for target, (folder, commit, path) in sorted(wanted.items()):
        git_dir = _git_dir(snapshots, folder)
        done = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"], capture_output=True)
        if done.returncode:
            raise GoldError(f"github:{folder.replace('+', '/', 1)}@{commit}:{path}: "
                            f"{done.stderr.decode(errors='replace').strip()}")
        if done.stdout.startswith(_LFS_POINTER):
            raise GoldError(f"{folder}@{commit}:{path} is a Git LFS pointer, not the XML")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(done.stdout)
        written.append(target)
    return written


def scores(gold: list[GoldCaption], f1_below: float = 0.9) -> dict:
    exact = exact_clear = n_clear = n_labelled = exact_labelled = 0
    f1s, failures = [], []
    for g in gold:
        right, got, row_f1s = score_caption(g.caption, g.subs)
        f1s += row_f1s
        n_clear += not g.ambiguous
        n_labelled += bool(g.subs[0][0])
        exact += right
        exact_clear += right and not g.ambiguous
        exact_labelled += right and bool(g.subs[0][0])
        if not right or min(row_f1s) < f1_below:
            failures.append({"source": g.source, "got": got, "want": ["".join(x) or "-" for x, _ in g.subs],
                             "labels_right": right, "token_f1": [round(f, 3) for f in row_f1s],
                             "ambiguous": bool(g.ambiguous)})
    return {"captions": len(gold), "labelled_captions": n_labelled,
            "sub_captions": len(f1s), "ambiguous_captions": len(gold) - n_clear,
            "label_set_accuracy": round(exact / max(len(gold), 1), 3),
            "label_set_accuracy_labelled": round(exact_labelled / max(n_labelled, 1), 3),
            "label_set_accuracy_unambiguous": round(exact_clear / max(n_clear, 1), 3),
            "token_f1": round(sum(f1s) / max(len(f1s), 1), 3), "failures": failures}


def add_source_arguments(ap: argparse.ArgumentParser, sources_help: str, gold: Path) -> None:
    """``--sources``, ``--fetch-from``, ``--gold`` and ``--f1-below``: where a caption gold's source files are."""
    ap.add_argument("--sources", default=None, help=f"folder with the source files as <owner>+<repo>/<path> "
                                                    f"(default {sources_help})")
    ap.add_argument("--fetch-from", default=None,
                    help="folder of fetched repository snapshots (<owner>+<repo>[/repo] git directories); "
                         "copies the needed files into --sources first")
    ap.add_argument("--gold", default=str(gold))
    ap.add_argument("--f1-below", type=float, default=0.9, help="a sub-caption below this F1 counts as a failure")


def load_gold(args: argparse.Namespace, default_sources: Path, load, prog: str):
    """(sources folder, the gold ``load(sources, gold)`` reads after fetching), or (folder, None) after
    printing why it cannot be read."""
    sources = Path(args.sources) if args.sources else default_sources
    try:
        if args.fetch_from:
            materialise(Path(args.fetch_from), sources, Path(args.gold))
        return sources, load(sources, Path(args.gold))
    except GoldError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return sources, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(ap, "$MEDVL_UNSEEN_CAPTIONS", UNSEEN_CAPTIONS_FILE)
    args = ap.parse_args(argv)
    sources, gold = load_gold(args, unseen_sources_dir(), load_unseen_captions, "unseen_captions")
    if gold is None:
        return 2
    out = {"gold": str(Path(args.gold).name), "sources": str(sources), **scores(gold, args.f1_below)}
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
