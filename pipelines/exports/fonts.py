"""The invoice's fonts, parsed once per process, and their subsets, made once per glyph set.

fpdf2 parses a TrueType font each time a document adds it, and subsets it (with fontTools,
destructively) each time a document is written: with the bundled CJK face (22,109 glyphs) that
was about half of a PDF's CPU time. Here:

- the font is parsed once; each document gets a copy with its own subset map (the glyphs it
  used), sharing the read-only metrics;
- each document's ``ttfont`` is a ``_SubsetSource``: when fpdf2 subsets it, the subset of that
  set of glyphs is made once (by the same fontTools call, on a fresh parse of the same bytes)
  and kept; the next document that uses the same glyphs gets the same bytes without the work;
- a new set of glyphs is subset from the process's "universe" of that face (a subset holding
  every glyph used so far, Latin to begin with), not from the whole face: the same bytes in a
  tenth of the time.

fpdf2 calls ``fontTools.subset.Subsetter`` through its module ``fpdf.output``; ``install()``
points that name at a Subsetter that serves ``_SubsetSource`` fonts from the cache and hands
any other font to fontTools unchanged. The PDF bytes are those of ``FPDF.add_font``
(bench/export_digests.py compares them).
"""

from __future__ import annotations

import copy
import io
import types
from collections import OrderedDict
from pathlib import Path

from pipelines.exports.common import FONT_BOLD, FONT_REGULAR

FAMILY = "cjk"
SUBSETS_KEPT = 256  # a subset of the CJK face is about 20-60 KB
_PARSED: dict[tuple[str, Path], object] = {}  # (style, file) -> a TTFFont no document uses
_BYTES: dict[Path, bytes] = {}
_SUBSETS: OrderedDict[tuple, tuple[bytes, dict[str, int]]] = OrderedDict()


def add_fonts(pdf) -> None:
    """Add the CJK family (regular and bold) to ``pdf``, as ``pdf.add_font`` would."""
    install()
    for style, path in (("", FONT_REGULAR), ("B", FONT_BOLD)):
        template = _PARSED.get((style, path))
        if template is None:
            from fpdf import FPDF

            scratch = FPDF()
            scratch.add_font(FAMILY, style, str(path))
            template = _PARSED[(style, path)] = scratch.fonts[FAMILY + style]
            _BYTES[path] = path.read_bytes()
        pdf.fonts[FAMILY + style] = _copy_for(pdf, template, path)


def _copy_for(pdf, template, path: Path):
    from fpdf.fonts import SubsetMap

    font = copy.copy(template)
    font.i = len(pdf.fonts) + 1
    font.biggest_size_pt = 0
    font.missing_glyphs = []
    font._hbfont = None
    font.ttfont = _SubsetSource(path)
    font.subset = SubsetMap(font)
    return font


def _parse(path: Path):
    from fontTools import ttLib

    return ttLib.TTFont(io.BytesIO(_BYTES[path]), recalcTimestamp=False, lazy=True)


# The universe of each face: a subset of the bundled font holding every glyph the documents of
# this process used so far (and Latin text, to begin with). Subsetting that small font to a
# document's glyphs gives the very bytes subsetting the whole face would (tests/test_exports.py
# checks it) in a tenth of the time: fontTools' cost grows with the glyphs of its input, and
# the CJK face has 22,109. It grows when a document needs glyphs it lacks (a full subset, once).
UNIVERSE_MAX = 4000  # glyphs; past it, a universe starts again from the Latin glyphs
_UNIVERSE: dict[tuple[Path, tuple], tuple[frozenset[str], bytes]] = {}
_BASE: dict[Path, frozenset[str]] = {}
BASE_TEXT = (
    "".join(chr(i) for i in range(0x20, 0x7F))
    + "".join(chr(i) for i in range(0xA0, 0x100))
    + "\u2010\u2011\u2012\u2013\u2014\u2018\u2019\u201c\u201d\u2022\u2026\u20ac\u2212\u00b7"
)


def _parse_source(path: Path, okey: tuple, options, glyphs: frozenset[str]):
    """A fresh parse of a font whose subset to ``glyphs`` is the bundled face's: the
    universe of ``path``, grown first if it lacks some of ``glyphs``."""
    have = _UNIVERSE.get((path, okey))
    if have is None or not glyphs <= have[0]:
        base = have[0] if have is not None and len(have[0]) < UNIVERSE_MAX else _base(path)
        want = base | glyphs
        font = _parse(path)
        subsetter = _real_subsetter(options)
        subsetter.populate(glyphs=sorted(want))
        subsetter.subset(font)
        out = io.BytesIO()
        font.save(out)
        have = _UNIVERSE[(path, okey)] = (frozenset(font.getGlyphOrder()), out.getvalue())
    from fontTools import ttLib

    return ttLib.TTFont(io.BytesIO(have[1]), recalcTimestamp=False, lazy=True)


def _base(path: Path) -> frozenset[str]:
    """The glyphs of ``BASE_TEXT`` in the face at ``path``."""
    got = _BASE.get(path)
    if got is None:
        cmap = _parse(path).getBestCmap()
        got = _BASE[path] = frozenset(cmap[ord(ch)] for ch in BASE_TEXT if ord(ch) in cmap)
    return got


def _real_subsetter(options):
    from fontTools import subset as ftsubset

    return ftsubset.Subsetter(options)


class _SubsetSource:
    """What fpdf2 reads of a document's font when it writes the file: ``subset`` (through
    the Subsetter below), then ``getGlyphID`` and ``save``. Anything else parses the font."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._subset: tuple[bytes, dict[str, int]] | None = None
        self._font = None

    def subset_to(self, options, glyphs: tuple[str, ...]) -> None:
        okey = _options_key(options)
        key = (self.path, okey, frozenset(glyphs))
        got = _SUBSETS.get(key)
        if got is None:
            font = _parse_source(self.path, okey, options, key[2])
            subsetter = _real_subsetter(options)
            subsetter.populate(glyphs=list(glyphs))
            subsetter.subset(font)
            out = io.BytesIO()
            font.save(out)
            ids = {name: i for i, name in enumerate(font.getGlyphOrder())}
            got = _SUBSETS[key] = (out.getvalue(), ids)
            while len(_SUBSETS) > SUBSETS_KEPT:
                _SUBSETS.popitem(last=False)
        else:
            _SUBSETS.move_to_end(key)
        self._subset = got

    def getGlyphID(self, name: str) -> int:  # noqa: N802 (fontTools' name)
        if self._subset is None:
            return self._parsed().getGlyphID(name)
        return self._subset[1][name]

    def save(self, file) -> None:
        if self._subset is None:
            return self._parsed().save(file)
        file.write(self._subset[0])

    def close(self) -> None:
        """fpdf2 closes the font after writing it: nothing to close unless it was parsed."""
        if self._font is not None:
            self._font.close()
            self._font = None

    def _parsed(self):
        if self._font is None:
            self._font = _parse(self.path)
        return self._font

    def __contains__(self, tag: str) -> bool:
        return tag in self._parsed()

    def __getitem__(self, tag: str):
        return self._parsed()[tag]

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._parsed(), name)


def _options_key(options) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in vars(options).items()))


class _Subsetter:
    """fontTools' Subsetter, except that a ``_SubsetSource`` is subset through the cache."""

    def __init__(self, options=None) -> None:
        from fontTools import subset as ftsubset

        self._options = options
        self._real = ftsubset.Subsetter(options)
        self._glyphs: tuple[str, ...] | None = None

    def populate(self, glyphs=(), **kwargs) -> None:
        self._glyphs = tuple(glyphs)
        self._real.populate(glyphs=glyphs, **kwargs)
        self._only_glyphs = not any(kwargs.values())

    def subset(self, font) -> None:
        if isinstance(font, _SubsetSource) and self._only_glyphs and self._glyphs is not None:
            font.subset_to(self._options, self._glyphs)
        else:
            self._real.subset(font)


def install() -> None:
    """Point fpdf2's name for fontTools' subset module at one whose Subsetter uses the cache."""
    import fpdf.output
    from fontTools import subset as ftsubset

    if getattr(fpdf.output.ftsubset, "_koobill", False):
        return
    shim = types.ModuleType("koobill_ftsubset")
    shim.__dict__.update(vars(ftsubset))
    shim.Subsetter = _Subsetter
    shim._koobill = True
    fpdf.output.ftsubset = shim
