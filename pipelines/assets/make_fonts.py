"""Rebuild the CJK font subsets used by the PDF exports (run by hand, not at runtime).

Source: Debian package ``fonts-noto-cjk`` 1:20220127+repack1-1 (Noto Sans CJK 2.004,
SIL Open Font License 1.1, see NotoSansCJK-OFL.txt)::

    apt-get download fonts-noto-cjk && dpkg-deb -x fonts-noto-cjk_*.deb x
    python pipelines/assets/make_fonts.py x/usr/share/fonts/opentype/noto pipelines/assets

The Simplified Chinese face of each collection is subset (Regular: Latin, punctuation, symbols,
kana, fullwidth forms and all CJK Unified Ideographs U+4E00-9FFF; Bold: Latin only, for
headings, with Regular as the fallback for CJK) and its CFF outlines converted to TrueType
outlines: fpdf2 embeds TrueType as CIDFontType2 with Identity-H, which every PDF reader
(pypdf included) extracts as text. The Reserved Font Name of the licence ('Source') is not used.
"""

from __future__ import annotations

import sys
from pathlib import Path

REGULAR = (
    "0020-007E,00A0-00FF,0100-017F,2000-206F,20A0-20CF,2100-214F,2190-21FF,2200-22FF,"
    "25A0-25FF,3000-303F,3040-30FF,3200-32FF,4E00-9FFF,FF00-FFEF"
)
BOLD = "0020-007E,00A0-00FF,0100-017F,2000-206F,20A0-20CF"


def _codepoints(ranges: str) -> set[int]:
    out: set[int] = set()
    for r in ranges.split(","):
        a, b = r.split("-")
        out.update(range(int(a, 16), int(b, 16) + 1))
    return out


def _to_truetype(font) -> None:
    # after fontTools Snippets/otf2ttf.py
    from fontTools.pens.cu2quPen import Cu2QuPen
    from fontTools.pens.ttGlyphPen import TTGlyphPen
    from fontTools.ttLib import newTable

    order = font.getGlyphOrder()
    glyph_set = font.getGlyphSet()
    quads = {}
    for name in glyph_set.keys():
        pen = TTGlyphPen(glyph_set)
        glyph_set[name].draw(Cu2QuPen(pen, 1.0, reverse_direction=True))
        quads[name] = pen.glyph()
    font["loca"] = newTable("loca")
    font["glyf"] = glyf = newTable("glyf")
    glyf.glyphOrder = order
    glyf.glyphs = quads
    del font["CFF "]
    if "VORG" in font:
        del font["VORG"]
    glyf.compile(font)
    font["maxp"] = maxp = newTable("maxp")
    maxp.tableVersion = 0x00010000
    for attr in ("maxZones",):
        setattr(maxp, attr, 1)
    for attr in (
        "maxTwilightPoints",
        "maxStorage",
        "maxFunctionDefs",
        "maxInstructionDefs",
        "maxStackElements",
        "maxSizeOfInstructions",
        "maxComponentElements",
    ):
        setattr(maxp, attr, 0)
    maxp.compile(font)
    post = font["post"]
    post.formatType = 3.0
    post.extraNames = []
    post.mapping = {}
    post.glyphOrder = order
    font.sfntVersion = "\000\001\000\000"


def build(src_ttc: Path, out: Path, ranges: str) -> None:
    from fontTools import subset
    from fontTools.ttLib import TTCollection, TTFont

    face = next(
        f for f in TTCollection(str(src_ttc)).fonts if f["name"].getDebugName(1).endswith(" SC")
    )
    tmp = out.with_suffix(".otf")
    face.save(str(tmp))
    opts = subset.Options()
    opts.layout_features = []
    opts.name_IDs = ["*"]
    opts.name_languages = ["*"]
    opts.notdef_outline = True
    opts.hinting = False
    font = subset.load_font(str(tmp), opts)
    sub = subset.Subsetter(opts)
    sub.populate(unicodes=_codepoints(ranges))
    sub.subset(font)
    subset.save_font(font, str(tmp), opts)
    font = TTFont(str(tmp))  # reloaded, so every glyph carries its bounds
    _to_truetype(font)
    font.save(str(out))
    tmp.unlink()


if __name__ == "__main__":
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    build(src / "NotoSansCJK-Regular.ttc", dst / "NotoSansCJKsc-Regular-subset.ttf", REGULAR)
    build(src / "NotoSansCJK-Bold.ttc", dst / "NotoSansCJKsc-Bold-subset.ttf", BOLD)
