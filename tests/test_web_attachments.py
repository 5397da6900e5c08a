"""Evidence files on task forms: upload with the form, kept on disk under a random key, checked by
extension and content, audited, downloadable only by people who may see the instance."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from engine import Engine
from engine.directory import add_user, grant
from engine.models import Attachment, AuditEvent, User
from tests.helpers import assert_chain_intact, files, only_task
from tests.test_web_tasks import browser_form
from tests.web import post, sign_in
from web.passwords import hash_password
from web.settings import ATTACHMENTS_DIR

PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
EVIDENCE_FORM = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "项目申报书",
    "type": "object",
    "required": ["title", "problems"],
    "properties": {
        "title": {"type": "string", "title": "项目名称", "minLength": 2, "maxLength": 100},
        "problems": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 2}},
        "evidence": {
            "type": "array",
            "title": "佐证材料",
            "items": {"type": "string", "format": "attachment"},
        },
        "minutes": {"type": "string", "title": "会议纪要", "format": "attachment"},
    },
}


def docx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<document/>")
    return buffer.getvalue()


@pytest.fixture
def approval(engine: Engine) -> Engine:
    """The approval fixture process with an application form that takes evidence files."""
    bundle = files("approval.bpmn", "review.json")
    bundle["apply.json"] = json.dumps(EVIDENCE_FORM, ensure_ascii=False).encode()
    engine.deploy(bundle, "designer")
    return engine


def start(engine: Engine) -> tuple[int, int]:
    inst = engine.start("approval", "sec1", "B1")
    return inst.id, only_task(engine, "sec1", "apply").id


def stored(engine: Engine) -> list[Attachment]:
    with engine.db.read() as s:
        return list(s.execute(select(Attachment).order_by(Attachment.id)).scalars())


def upload(client: FlaskClient, task_id: int, extra: dict | None = None, **fields: object):  # type: ignore[no-untyped-def]
    data: dict[str, object] = {"title": "红旗项目", "problems-0": "问题一", "problems-rows": "1"}
    data.update(fields)
    data.update(extra or {})
    return post(client, f"/tasks/{task_id}", data, content_type="multipart/form-data")


def test_files_are_stored_under_random_keys_audited_and_referenced_from_the_data(
    approval: Engine, web_app: Flask
) -> None:
    inst_id, task_id = start(approval)
    client = sign_in(web_app, "sec1")
    assert 'name="evidence" type="file"' in client.get(f"/tasks/{task_id}").get_data(as_text=True)

    done = upload(
        client,
        task_id,
        evidence=[(io.BytesIO(PDF), "支部会议纪要.pdf"), (io.BytesIO(docx()), "reports/2026/实施方案.docx")],
        minutes=(io.BytesIO("学习记录\n第一次".encode("gb18030")), "记录.txt"),
    )

    assert done.status_code == 302
    rows = stored(approval)
    assert [r.filename for r in rows] == ["支部会议纪要.pdf", "实施方案.docx", "记录.txt"]
    assert rows[0].content_type == "application/pdf" and rows[0].sha256 == hashlib.sha256(PDF).hexdigest()
    assert all(r.instance_id == inst_id and r.task_id == task_id for r in rows)
    folder = Path(web_app.config[ATTACHMENTS_DIR])
    assert sorted(p.name for p in folder.iterdir()) == sorted(r.storage_key for r in rows)
    assert all(re.fullmatch(r"[0-9a-f]{48}", r.storage_key) for r in rows)
    assert (folder / rows[0].storage_key).read_bytes() == PDF
    data = approval.instance(inst_id).data
    assert data["evidence"] == [
        f"attachment:{rows[0].id}:支部会议纪要.pdf",
        f"attachment:{rows[1].id}:实施方案.docx",
    ]
    assert data["minutes"] == f"attachment:{rows[2].id}:记录.txt"
    with approval.db.read() as s:
        events = s.execute(select(AuditEvent).where(AuditEvent.action == "attachment_uploaded")).scalars()
        payloads = [(e.actor, e.instance_id, e.payload) for e in events]
    assert payloads[0] == (
        "sec1",
        inst_id,
        {
            "attachment": rows[0].id,
            "task": task_id,
            "filename": "支部会议纪要.pdf",
            "size": len(PDF),
            "sha256": rows[0].sha256,
        },
    )
    assert len(payloads) == 3
    assert_chain_intact(approval)


def test_download_only_for_people_who_may_see_the_instance(approval: Engine, web_app: Flask) -> None:
    _inst, task_id = start(approval)
    uploader = sign_in(web_app, "sec1")
    upload(uploader, task_id, evidence=[(io.BytesIO(PDF), "支部会议纪要.pdf")])
    [row] = stored(approval)
    url = f"/tasks/attachments/{row.id}"

    for allowed in (uploader, sign_in(web_app, "office"), sign_in(web_app, "secretary")):
        got = allowed.get(url)
        assert got.status_code == 200 and got.data == PDF
        assert got.headers["Content-Type"] == "application/pdf"
        disposition = got.headers["Content-Disposition"]
        assert (
            disposition.startswith("attachment;")
            and f"filename*=UTF-8''{quote('支部会议纪要.pdf')}" in disposition
        )
        assert got.headers["X-Content-Type-Options"] == "nosniff"
    for stranger in ("sec2", "member3", "outsider"):
        assert sign_in(web_app, stranger).get(url).status_code == 404, stranger
    assert uploader.get("/tasks/attachments/999999").status_code == 404
    assert web_app.test_client().get(url).status_code == 302  # signed out: to the sign-in page

    review = only_task(approval, "office", "review")
    shown = sign_in(web_app, "office").get(f"/tasks/{review.id}").get_data(as_text=True)
    material = shown.split('class="task-material"')[1].split("</section>")[0]
    assert f'href="{url}">支部会议纪要.pdf</a>' in material  # the reviewer reaches the evidence
    done_page = uploader.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert f'href="{url}">支部会议纪要.pdf</a>' in done_page  # the completed task links its file


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("tool.exe", b"MZ\x90\x00" + b"\x00" * 60, "不支持此文件类型"),
        ("report.pdf", b"MZ\x90\x00" + b"\x00" * 60, "文件内容与扩展名不符"),
        ("photo.png", PDF, "文件内容与扩展名不符"),
        ("plan.docx", PDF, "文件内容与扩展名不符"),
        ("notes.txt", b"text\x00\x01binary", "文件内容与扩展名不符"),
        ("empty.pdf", b"", "文件是空的"),
        ("big.pdf", PDF + b"0" * (10 * 1024 * 1024), "超过 10 MB"),
    ],
)
def test_wrong_types_and_oversize_files_are_refused_and_nothing_is_kept(
    approval: Engine, web_app: Flask, name: str, content: bytes, message: str
) -> None:
    _inst, task_id = start(approval)
    client = sign_in(web_app, "sec1")

    refused = upload(client, task_id, evidence=[(io.BytesIO(PNG), "ok.png"), (io.BytesIO(content), name)])

    html = refused.get_data(as_text=True)
    assert refused.status_code == 422 and message in html and "红旗项目" in html
    assert stored(approval) == [] and not any(Path(web_app.config[ATTACHMENTS_DIR]).glob("*"))
    assert only_task(approval, "sec1", "apply").id == task_id


def test_a_request_over_the_size_limit_gets_a_friendly_page(approval: Engine, web_app: Flask) -> None:
    _inst, task_id = start(approval)
    client = sign_in(web_app, "sec1")

    huge = upload(client, task_id, evidence=[(io.BytesIO(PDF + b"0" * (21 * 1024 * 1024)), "huge.pdf")])

    assert huge.status_code == 413 and "文件过大" in huge.get_data(as_text=True)
    assert stored(approval) == []


def test_a_form_that_fails_validation_stores_no_file(approval: Engine, web_app: Flask) -> None:
    _inst, task_id = start(approval)
    client = sign_in(web_app, "sec1")

    invalid = upload(client, task_id, {"title": "x"}, evidence=[(io.BytesIO(PDF), "纪要.pdf")])

    html = invalid.get_data(as_text=True)
    assert invalid.status_code == 422 and "请重新选择要上传的文件" in html and "至少 2 个字" in html
    assert stored(approval) == []


def test_a_form_may_keep_only_its_own_instances_files(approval: Engine, web_app: Flask) -> None:
    _first, first_task = start(approval)
    client = sign_in(web_app, "sec1")
    upload(client, first_task, evidence=[(io.BytesIO(PDF), "甲.pdf")])
    [theirs] = stored(approval)
    second, second_task = start(approval)

    borrowed = upload(client, second_task, {"evidence-keep": f"attachment:{theirs.id}:甲.pdf"})
    forged = upload(client, second_task, {"minutes-keep": "attachment:abc:x.pdf"})

    assert borrowed.status_code == 422 and "不属于此流程" in borrowed.get_data(as_text=True)
    assert forged.status_code == 422 and "附件引用无效" in forged.get_data(as_text=True)
    assert "evidence" not in approval.instance(second).data


def test_a_stale_page_offers_the_stored_files_again_and_keeps_them(approval: Engine, web_app: Flask) -> None:
    inst_id, task_id = start(approval)
    client = sign_in(web_app, "sec1")
    revision = approval.instance(inst_id).revision

    stale = upload(client, task_id, {"revision": str(revision - 1)}, evidence=[(io.BytesIO(PDF), "纪要.pdf")])

    html = stale.get_data(as_text=True)
    [row] = stored(approval)
    assert stale.status_code == 409 and "已有更新" in html
    assert f'name="evidence-keep" value="attachment:{row.id}:纪要.pdf" checked' in html
    again = client.post(f"/tasks/{task_id}", data=browser_form(html), content_type="multipart/form-data")
    assert again.status_code == 302
    assert approval.instance(inst_id).data["evidence"] == [f"attachment:{row.id}:纪要.pdf"]
    assert len(stored(approval)) == 1


def test_files_of_a_task_someone_else_completed_meanwhile_are_discarded(
    approval: Engine, web_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inst, task_id = start(approval)
    with approval.db.write() as s:
        add_user(s, "sec1b", "一支部副书记")
        grant(s, "sec1b", "B1", "branch_secretary")
        s.execute(
            update(User).where(User.username == "sec1b").values(password_hash=hash_password("pw-sec1b-long"))
        )
    client = sign_in(web_app, "sec1")
    real = Engine.complete

    def raced(self: Engine, task: int, actor: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if actor == "sec1":  # the deputy gets there first, between the upload and the completion
            real(self, task, "sec1b", {"title": "副书记的申报", "problems": ["问题"]})
        return real(self, task, actor, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "complete", raced)
    late = upload(client, task_id, evidence=[(io.BytesIO(PDF), "纪要.pdf")])

    assert late.status_code == 409 and "一支部副书记 办理完毕" in late.get_data(as_text=True)
    assert stored(approval) == [] and not any(Path(web_app.config[ATTACHMENTS_DIR]).glob("*"))
    with approval.db.read() as s:
        actions = list(s.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())
    assert actions.count("attachment_uploaded") == 1 and actions.count("attachment_discarded") == 1
    assert_chain_intact(approval)
