"""Uploaded XML is refused before lxml can expand entities, fetch DTDs or read local files."""

from __future__ import annotations

import pytest
from lxml import etree
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser

from engine.safexml import UnsafeXML, check_xml, parse_xml

BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<!-- exported by a modeler; comments are fine -->
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="defs"
                  targetNamespace="http://example.com/qizhi">
  <bpmn:process id="meeting" name="支部会议" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:endEvent id="end"><bpmn:incoming>f1</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="end"/>
  </bpmn:process>
</bpmn:definitions>
"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lolz>&lol3;</lolz>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE definitions [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<definitions>&secret;</definitions>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE definitions SYSTEM "http://attacker.example/evil.dtd">
<definitions/>
"""

PLAIN_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE definitions [<!ELEMENT definitions ANY>]>
<definitions/>
"""

STYLESHEET_PI = b"""<?xml version="1.0"?>
<?xml-stylesheet type="text/xsl" href="http://attacker.example/x.xsl"?>
<definitions/>
"""

MALFORMED = b"""<?xml version="1.0"?>
<definitions>
  <process>
</definitions>
"""

REFUSED = [
    ("billion_laughs.bpmn", BILLION_LAUGHS, "DOCTYPE"),
    ("xxe.bpmn", XXE, "DOCTYPE"),
    ("external_dtd.dmn", EXTERNAL_DTD, "DOCTYPE"),
    ("plain_dtd.bpmn", PLAIN_DTD, "DOCTYPE"),
    ("stylesheet.bpmn", STYLESHEET_PI, "processing instructions are not allowed"),
    ("malformed.bpmn", MALFORMED, "not well-formed"),
    ("empty.bpmn", b"", "not well-formed"),
    ("text.bpmn", b"this is not xml", "not well-formed"),
]


@pytest.mark.parametrize(("filename", "data", "reason"), REFUSED, ids=[name for name, _, _ in REFUSED])
@pytest.mark.parametrize("entry", [check_xml, parse_xml], ids=["check_xml", "parse_xml"])
def test_dangerous_or_broken_xml_is_refused(entry, filename: str, data: bytes, reason: str) -> None:
    with pytest.raises(UnsafeXML) as info:
        entry(data, filename)
    message = str(info.value)
    assert message.startswith(filename)
    assert reason in message
    assert info.value.filename == filename


def test_refusals_name_the_line() -> None:
    with pytest.raises(UnsafeXML) as info:
        parse_xml(MALFORMED, "malformed.bpmn")
    assert info.value.line == 4
    assert "malformed.bpmn, line 4:" in str(info.value)
    with pytest.raises(UnsafeXML) as info:
        check_xml(XXE, "xxe.bpmn")
    assert info.value.line == 2


def test_str_input_is_refused_the_same_way() -> None:
    with pytest.raises(UnsafeXML, match="DOCTYPE"):
        parse_xml(XXE.decode(), "xxe.bpmn")


def test_normal_bpmn_parses_and_feeds_spiffworkflow() -> None:
    root = parse_xml(BPMN.encode("utf-8"), "meeting.bpmn")
    assert isinstance(root, etree._Element)
    assert root.tag == "{http://www.omg.org/spec/BPMN/20100524/MODEL}definitions"
    parser = SpiffBpmnParser()
    parser.add_bpmn_xml(root, "meeting.bpmn")
    spec = parser.get_spec("meeting")
    assert spec.description == "支部会议"


def test_str_with_encoding_declaration_parses() -> None:
    # lxml alone refuses str input that carries an encoding declaration.
    root = parse_xml(BPMN, "meeting.bpmn")
    assert root.find(".//{http://www.omg.org/spec/BPMN/20100524/MODEL}process").get("name") == "支部会议"


def test_non_utf8_bytes_follow_their_declaration() -> None:
    data = '<?xml version="1.0" encoding="GBK"?><definitions name="党支部"/>'.encode("gbk")
    assert parse_xml(data, "gbk.bpmn").get("name") == "党支部"


def test_non_utf8_bytes_are_checked_too() -> None:
    data = '<?xml version="1.0" encoding="GBK"?>\n<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<d>&x;</d>'
    with pytest.raises(UnsafeXML, match="DOCTYPE"):
        parse_xml(data.encode("gbk"), "gbk.bpmn")
    with pytest.raises(UnsafeXML, match="encoding"):
        parse_xml(b'<?xml version="1.0" encoding="no-such-codec"?><d/>', "odd.bpmn")
