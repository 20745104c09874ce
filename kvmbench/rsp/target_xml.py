"""Target descriptions (``target.xml``): building ours, reading a stub's.

GDB manual, "Target Descriptions": a ``<target>`` names its
``<architecture>`` and holds ``<feature name=...>`` elements (directly or
through ``<xi:include href="..."/>``, fetched as further documents with
``qXfer:features:read``); each feature has ``<reg name= bitsize=
[regnum=] [type=] [group=]/>`` elements and the types they use. A
register without ``regnum`` is numbered one after the register before it
(in this feature or an earlier one), the first one 0.

Stubs write ``xi:include`` without declaring the XInclude namespace (QEMU
7.2 does), so documents are read with expat's namespace processing off.
Entity declarations are refused: a description never needs them, and
they are how hostile XML grows without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

from kvmbench.errors import RspError
from kvmbench.rsp.layout import Register, RegisterLayout

#: Documents one description may pull in through xi:include, and how deep.
MAX_INCLUDES = 64
MAX_INCLUDE_DEPTH = 8
#: Numbers and sizes beyond these are not a register description.
MAX_REGNUM = 1 << 16
MAX_BITSIZE = 1 << 16

# --- building -------------------------------------------------------------------------

# Types gdb predefines (GDB manual, "Predefined Target Types"); others
# must be defined in the description that uses them.
_PREDEFINED_TYPES = frozenset({
    "bool", "int", "int8", "int16", "int24", "int32", "int64", "int128",
    "uint8", "uint16", "uint24", "uint32", "uint64", "uint128",
    "code_ptr", "data_ptr", "ieee_half", "ieee_single", "ieee_double",
    "arm_fpa_ext", "i387_ext", "bfloat16",
})  # fmt: skip


def _flags(type_id: str, size: int, fields: list[tuple[str, int, int]]) -> str:
    lines = [f'  <flags id="{type_id}" size="{size}">']
    lines += [f'    <field name="{name}" start="{start}" end="{end}"/>' for name, start, end in fields]
    lines.append("  </flags>")
    return "\n".join(lines)


def _vec128() -> str:
    vectors = [
        ("v4f", "ieee_single", 4), ("v2d", "ieee_double", 2), ("v16i8", "int8", 16),
        ("v8i16", "int16", 8), ("v4i32", "int32", 4), ("v2i64", "int64", 2),
    ]  # fmt: skip
    lines = [f'  <vector id="{vid}" type="{elem}" count="{count}"/>' for vid, elem, count in vectors]
    lines.append('  <union id="vec128">')
    names = ("v4_float", "v2_double", "v16_int8", "v8_int16", "v4_int32", "v2_int64")
    lines += [f'    <field name="{name}" type="{vid}"/>' for name, (vid, _, _) in zip(names, vectors)]
    lines.append('    <field name="uint128" type="uint128"/>')
    lines.append("  </union>")
    return "\n".join(lines)


# The types our x86-64 layout uses: EFLAGS (Intel SDM vol. 1, 3.4.3; the
# fields of gdb's own features/i386/64bit-core.xml, which has no IOPL, so
# gdb prints eflags over kvmbench as over QEMU) and
# MXCSR (vol. 1, 10.2.3) bit fields, and the 128-bit SSE register union.
_TYPE_DEFINITIONS: dict[str, Callable[[], str]] = {
    "i386_eflags": lambda: _flags("i386_eflags", 4, [
        ("CF", 0, 0), ("PF", 2, 2), ("AF", 4, 4), ("ZF", 6, 6), ("SF", 7, 7), ("TF", 8, 8),
        ("IF", 9, 9), ("DF", 10, 10), ("OF", 11, 11), ("NT", 14, 14),
        ("RF", 16, 16), ("VM", 17, 17), ("AC", 18, 18), ("VIF", 19, 19), ("VIP", 20, 20),
        ("ID", 21, 21),
    ]),
    "i386_mxcsr": lambda: _flags("i386_mxcsr", 4, [
        ("IE", 0, 0), ("DE", 1, 1), ("ZE", 2, 2), ("OE", 3, 3), ("UE", 4, 4), ("PE", 5, 5),
        ("DAZ", 6, 6), ("IM", 7, 7), ("DM", 8, 8), ("ZM", 9, 9), ("OM", 10, 10), ("UM", 11, 11),
        ("PM", 12, 12), ("FZ", 15, 15),
    ]),
    "vec128": _vec128,
}  # fmt: skip


def build_target_xml(layout: RegisterLayout) -> bytes:
    """One self-contained ``target.xml`` describing ``layout``: its
    architecture, one ``<feature>`` per feature of the layout, the types
    its registers use, and a ``regnum`` wherever numbering does not simply
    go on from the register before."""
    lines = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">', '<target version="1.0">']
    if layout.architecture:
        lines.append(f"  <architecture>{layout.architecture}</architecture>")
    defined: set[str] = set()
    expected = 0
    for feature in layout.features:
        regs = [r for r in layout.registers if r.feature == feature]
        lines.append(f"  <feature name={quoteattr(feature)}>")
        for reg in regs:
            if reg.type in _PREDEFINED_TYPES or reg.type in defined:
                continue
            if reg.type not in _TYPE_DEFINITIONS:
                raise RspError(f"register {reg.name!r} has type {reg.type!r}, which this builder cannot define")
            lines.append(_TYPE_DEFINITIONS[reg.type]())
            defined.add(reg.type)
        for reg in regs:
            attributes = f"name={quoteattr(reg.name)} bitsize=\"{reg.bitsize}\" type={quoteattr(reg.type)}"
            if reg.regnum != expected:
                attributes += f' regnum="{reg.regnum}"'
            if reg.group is not None:
                attributes += f" group={quoteattr(reg.group)}"
            lines.append(f"    <reg {attributes}/>")
            expected = reg.regnum + 1
        lines.append("  </feature>")
    lines.append("</target>")
    return ("\n".join(lines) + "\n").encode()


# --- parsing --------------------------------------------------------------------------

#: Fetch an included document by its href (through ``qXfer:features:read``).
FetchDocument = Callable[[str], bytes]


class _Reader:
    """Collects the registers of a description and its includes, in order."""

    def __init__(self, fetch: FetchDocument | None) -> None:
        self.fetch = fetch
        self.registers: list[Register] = []
        self.architecture: str | None = None
        self.next_regnum = 0
        self.includes = 0

    def read(self, document: bytes, name: str, depth: int) -> None:
        parser = expat.ParserCreate()
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        features: list[str] = []
        in_architecture = [False]
        architecture: list[str] = []

        def refuse_entity(*_: object) -> None:
            raise RspError(f"{name}: declares an XML entity; target descriptions have none")

        def start(tag: str, attrs: dict[str, str]) -> None:
            if tag == "feature":
                features.append(attrs.get("name", ""))
            elif tag == "reg":
                self._register(attrs, features[-1] if features else "", name)
            elif tag == "architecture":
                in_architecture[0] = True
            elif tag == "xi:include" or tag.endswith(":include"):
                self._include(attrs.get("href"), name, depth)

        def end(tag: str) -> None:
            if tag == "feature" and features:
                features.pop()
            elif tag == "architecture":
                in_architecture[0] = False
                self.architecture = "".join(architecture).strip() or None

        def text(data: str) -> None:
            if in_architecture[0]:
                architecture.append(data)

        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = text
        parser.EntityDeclHandler = refuse_entity
        parser.UnparsedEntityDeclHandler = refuse_entity
        try:
            parser.Parse(document, True)
        except expat.ExpatError as e:
            raise RspError(f"{name}: not well-formed XML ({expat.errors.messages.get(e.code, e)}, line {e.lineno})") from None

    def _register(self, attrs: dict[str, str], feature: str, document: str) -> None:
        reg_name = attrs.get("name")
        if not reg_name:
            raise RspError(f"{document}: a <reg> without a name")
        bitsize = _number(attrs.get("bitsize"), f"{document}: register {reg_name!r} bitsize", MAX_BITSIZE)
        if bitsize == 0:
            raise RspError(f"{document}: register {reg_name!r} has bitsize 0")
        if "regnum" in attrs:
            self.next_regnum = _number(attrs["regnum"], f"{document}: register {reg_name!r} regnum", MAX_REGNUM)
        self.registers.append(
            Register(reg_name, bitsize, self.next_regnum, attrs.get("type", "int"), attrs.get("group"), feature)
        )
        self.next_regnum += 1

    def _include(self, href: str | None, document: str, depth: int) -> None:
        if not href:
            raise RspError(f"{document}: an xi:include without href")
        if self.fetch is None:
            raise RspError(f"{document}: includes {href!r} but nothing can fetch it")
        if depth >= MAX_INCLUDE_DEPTH:
            raise RspError(f"{document}: includes nest deeper than {MAX_INCLUDE_DEPTH} ({href!r})")
        self.includes += 1
        if self.includes > MAX_INCLUDES:
            raise RspError(f"{document}: more than {MAX_INCLUDES} included documents")
        self.read(self.fetch(href), href, depth + 1)


def _number(text: str | None, what: str, limit: int) -> int:
    if text is None or not text.isdigit() or not text.isascii():
        raise RspError(f"{what} is not a decimal number: {text!r}")
    value = int(text)
    if value >= limit:
        raise RspError(f"{what} {value} is out of range")
    return value


def parse_target_xml(document: bytes, fetch: FetchDocument | None = None, name: str = "target.xml") -> RegisterLayout:
    """The register layout a stub's ``target.xml`` describes; ``fetch``
    reads the documents it includes."""
    reader = _Reader(fetch)
    reader.read(document, name, 0)
    if not reader.registers:
        raise RspError(f"{name}: describes no registers")
    return RegisterLayout(tuple(reader.registers), reader.architecture)
