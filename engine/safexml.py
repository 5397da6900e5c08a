"""Safe parsing of uploaded BPMN/DMN XML.

Why: SpiffWorkflow parses with lxml, which by default expands internal entities (the "billion laughs"
memory bomb) and can resolve external ones (XXE: ``file:///etc/passwd`` or network fetches).  Process
definitions are uploaded by designers, so every file is first checked by defusedxml's expat-based
parser, which refuses DTDs, entity declarations, external references and processing instructions,
and only then parsed by an lxml parser that is itself configured to resolve and fetch nothing.
"""

from __future__ import annotations

import re

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import XMLParser as DefusedXMLParser
from lxml import etree

__all__ = ["UnsafeXML", "check_xml", "parse_xml"]


class UnsafeXML(ValueError):
    """The file was refused: dangerous constructs or not well-formed.  The message names file and line."""

    def __init__(self, filename: str, reason: str, line: int | None = None) -> None:
        self.filename = filename
        self.reason = reason
        self.line = line
        where = f"{filename}, line {line}" if line else filename
        super().__init__(f"{where}: {reason}")


class _ProcessingInstructionFound(Exception):
    """Raised from the expat handler; only used to carry the PI target out of the parser."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


def _refuse_processing_instruction(target: str, _data: str) -> None:
    # <?xml-stylesheet?> and friends: nothing a BPMN modeler emits, but a browser shown the stored
    # file would act on them.  (The <?xml ...?> declaration is not a PI to expat and stays allowed.)
    raise _ProcessingInstructionFound(target)


def _reason(err: Exception) -> str:
    if isinstance(err, DTDForbidden):
        return "DOCTYPE/DTD declarations are not allowed"
    if isinstance(err, EntitiesForbidden):
        return f"entity declarations are not allowed (entity '{err.name}')"
    if isinstance(err, ExternalReferenceForbidden):
        return f"external entity references are not allowed ({err.sysid or err.pubid})"
    if isinstance(err, _ProcessingInstructionFound):
        return f"processing instructions are not allowed (<?{err.target} ...?>)"
    if isinstance(err, ParseError):
        return f"not well-formed XML: {err}"
    return f"refused: {err}"


_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _decode_declared(data: bytes, filename: str) -> str:
    """Decode bytes in an encoding expat cannot read itself (GBK, GB18030, Big5...) with Python's codecs.

    Expat only knows single-byte encodings and UTF-8/16; Chinese tools may export GBK.
    """
    match = _DECLARED_ENCODING.match(data)
    if match is None:
        raise UnsafeXML(filename, "unsupported character encoding")
    encoding = match.group(1).decode("ascii")
    try:
        return data.decode(encoding)
    except (LookupError, UnicodeDecodeError) as err:
        raise UnsafeXML(filename, f"cannot decode as declared encoding {encoding!r}: {err}") from err


def _scan(data: bytes | str, filename: str) -> None:
    parser = DefusedXMLParser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    expat = parser.parser
    expat.ProcessingInstructionHandler = _refuse_processing_instruction
    try:
        parser.feed(data)
        parser.close()
    except ParseError as err:
        line = err.position[0] if getattr(err, "position", None) else None
        raise UnsafeXML(filename, _reason(err), line) from err
    except (DefusedXmlException, _ProcessingInstructionFound) as err:
        raise UnsafeXML(filename, _reason(err), expat.CurrentLineNumber) from err


def check_xml(data: bytes | str, filename: str) -> None:
    """Raise :class:`UnsafeXML` unless ``data`` is well-formed XML without DTD, entities or PIs.

    Runs before lxml sees the bytes, so nothing is ever expanded or fetched.
    """
    try:
        _scan(data, filename)
    except LookupError as err:
        raise UnsafeXML(filename, f"unknown character encoding ({err})") from err
    except ValueError as err:
        if isinstance(err, UnsafeXML) or not isinstance(data, bytes):
            raise
        # expat: "multi-byte encodings are not supported"; decode in Python and scan the text instead
        _scan(_decode_declared(data, filename), filename)


def _lxml_parser(encoding: str | None) -> etree.XMLParser:
    # A fresh parser per call: lxml parser objects keep per-document state.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        encoding=encoding,
    )


def parse_xml(data: bytes | str, filename: str) -> etree._Element:
    """Check ``data`` with :func:`check_xml`, then parse it with a locked-down lxml parser.

    Returns the root element, ready for ``parser.add_bpmn_xml(tree, filename)`` / ``add_dmn_xml``.
    """
    check_xml(data, filename)
    if isinstance(data, str):
        # lxml refuses str with an encoding declaration; the text is already decoded, so feed UTF-8
        # and override whatever the declaration claims.
        raw, encoding = data.encode("utf-8"), "utf-8"
    else:
        raw, encoding = data, None
    try:
        return etree.fromstring(raw, _lxml_parser(encoding))
    except etree.XMLSyntaxError as err:
        raise UnsafeXML(filename, f"not well-formed XML: {err.msg}", err.lineno) from err
