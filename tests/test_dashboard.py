"""The dashboard pages (/dashboard): tables, JSON, the large screen, drill-down, export and selection.

On the known data set of tests/dashboard_data.py, the server-rendered tables, the charts' JSON and the
spreadsheet must carry the same numbers, which are the engine's (checked by hand in test_figures).
"""

from __future__ import annotations

from html.parser import HTMLParser
from io import BytesIO
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openpyxl import load_workbook

from engine import Engine
from engine.models import Instance, Organisation
from tests.dashboard_data import NOW, YEAR, Known, load_known
from tests.web import post, sign_in
from web import engine_of

FIGURES = ("stages", "overdue", "compliance", "pledges", "grades")


@pytest.fixture
def known(web_app: Flask, engine: Engine) -> Known:
    engine_of(web_app).clock = lambda: NOW  # the overdue figure is read at the data set's "now"
    return load_known(engine.db)


class Tables(HTMLParser):
    """Each figure table's rows: {figure: {org code: [cell data-value, ...]}}, plus rows marked short."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, list[str]]] = {}
        self.short: set[str] = set()
        self.links: dict[tuple[str, str], list[str]] = {}
        self._figure: str | None = None
        self._org: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and "figure-table" in (a.get("class") or ""):
            self._figure = a["data-figure"]
            self.tables[self._figure] = {}
        elif tag == "tr" and self._figure and a.get("data-org"):
            self._org = a["data-org"]
            self.tables[self._figure][self._org] = []
            if "short" in (a.get("class") or ""):
                self.short.add(self._org)
        elif tag == "td" and self._figure and self._org and "data-value" in a:
            self.tables[self._figure][self._org].append(a["data-value"] or "")
        elif tag == "a" and self._figure and self._org:
            self.links.setdefault((self._figure, self._org), []).append(a["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._figure = None
        elif tag == "tr":
            self._org = None


def tables_of(html: str) -> Tables:
    parser = Tables()
    parser.feed(html)
    return parser


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def json_rows(client: FlaskClient, figure: str, **args: str) -> dict[str, list[Any]]:
    response = client.get(f"/dashboard/data/{figure}.json", query_string={"year": YEAR, **args})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    return {org: row[1:] for org, row in zip(body["orgs"], body["rows"], strict=True)}


def test_tables_json_and_engine_numbers_agree(web_app: Flask, known: Known) -> None:
    client = sign_in(web_app, "secretary")
    page = client.get(f"/dashboard/?year={YEAR}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "统计分析" in html and "2 个基层党组织未达标" not in html
    parsed = tables_of(html)
    for figure in FIGURES:
        from_json = json_rows(client, figure)
        assert parsed.tables[figure] == {o: [as_text(v) for v in r] for o, r in from_json.items()}, figure
        assert f'data-chart="{figure}"' in html  # every table has its chart

    t = parsed.tables  # the hand-counted numbers (tests/dashboard_data.py)
    assert t["stages"]["B1"] == ["0", "0", "1", "0", "0", "0", "0", "4", "5"]
    assert t["stages"]["B2"][0] == "1" and t["stages"]["B2"][-3:] == ["1", "1", "3"]
    overdue = client.get(f"/dashboard/data/overdue.json?year={YEAR}").get_json()
    assert overdue["columns"] == ["组织", "党员承诺践诺", "党建项目化管理", "合计", "最早到期（北京时间）"]
    assert t["overdue"] == {
        "B1": ["1", "1", "2", "2026-08-30 12:00"],
        "B2": ["0", "1", "1", "2026-08-22 12:00"],
    }
    assert t["compliance"]["B1"][:3] == ["4", "3", "达标"]
    assert t["compliance"]["B3"] == [
        "0",
        "0",
        "未达标",
        "党建项目 0 个，少于 1 个；解决新问题 0 个，少于 2 个",
    ]
    assert parsed.short == {"B2", "B3", "B1G1"}  # those falling short are marked, with the reason
    assert t["pledges"]["B1"] == ["2", "5", "3", "2", "1", "1", "0", "0"]
    assert t["pledges"]["B2"] == ["1", "4", "4", "4", "0", "0", "0", "1"]
    assert t["grades"] == {
        "B1": ["较好", "85.0", "党委定级", "—"],
        "B2": ["较差", "50.0", "晋位升级", "整改中"],
    }
    assert "3 个基层党组织未达标（共 4 个）" in html


def test_a_long_table_shows_its_first_rows_and_says_where_the_rest_is(
    web_app: Flask, known: Known, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web import dashboard

    monkeypatch.setattr(dashboard, "TABLE_ROWS", 2)
    client = sign_in(web_app, "secretary")
    html = client.get(f"/dashboard/?year={YEAR}").get_data(as_text=True)
    parsed = tables_of(html)
    assert list(parsed.tables["compliance"]) == ["B1G1", "B2"]  # those falling short come first
    assert "仅显示前 2 行（共 4 行）" in html and len(json_rows(client, "compliance")) == 4


def test_a_user_sees_only_the_organisations_they_oversee(web_app: Flask, known: Known) -> None:
    sec2 = sign_in(web_app, "sec2")
    parsed = tables_of(sec2.get(f"/dashboard/?year={YEAR}").get_data(as_text=True))
    assert {org for rows in parsed.tables.values() for org in rows} == {"B2"}
    for url in (
        f"/dashboard/data/stages.json?org=B1&year={YEAR}",
        f"/dashboard/?org=B1&year={YEAR}",
        f"/dashboard/drill?figure=stages&org=B1&year={YEAR}",
        f"/dashboard/drill?figure=pledges&org=B1&key=made&year={YEAR}",
        f"/dashboard/export.xlsx?org=B1&year={YEAR}",
        f"/dashboard/screen?org=B1&year={YEAR}",
    ):
        assert sec2.get(url).status_code == 404, url
    assert set(json_rows(sec2, "pledges")) == {"B2"}

    sec1 = sign_in(web_app, "sec1")
    assert set(json_rows(sec1, "stages")) == {"B1", "B1G1"}
    assert "评选优秀党建项目" not in sec1.get("/dashboard/").get_data(as_text=True)
    committee = sign_in(web_app, "secretary")
    assert set(json_rows(committee, "stages", org="B1")) == {"B1", "B1G1"}  # the filter narrows to a subtree
    for username in ("member1", "outsider", "auditor"):
        assert sign_in(web_app, username).get("/dashboard/").status_code == 403
    anonymous = web_app.test_client().get("/dashboard/data/stages.json")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]


def test_a_number_links_to_the_rows_behind_it(web_app: Flask, known: Known) -> None:
    client = sign_in(web_app, "office")
    parsed = tables_of(client.get(f"/dashboard/?year={YEAR}").get_data(as_text=True))

    def instances(url: str) -> list[int]:
        page = client.get(url)
        assert page.status_code == 200, url
        found = tables_of(page.get_data(as_text=True))
        assert not found.tables  # the drill page lists rows, not figures
        html = page.get_data(as_text=True)
        return sorted(int(part.split('"')[0]) for part in html.split('data-instance="')[1:])

    compliance_b1 = parsed.links[("compliance", "B1")]
    assert instances(compliance_b1[0]) == sorted(known.ids[n] for n in ("P1", "P2", "P8", "P9"))
    overdue_total = parsed.links[("overdue", "B1")][-1]
    assert instances(overdue_total) == sorted([known.ids["P1"], known.ids["X2"]])
    ended = [u for u in parsed.links[("stages", "B1")] if "key=%E5%B7%B2%E7%BB%93%E6%9D%9F" in u]
    assert instances(ended[0]) == sorted(known.ids[n] for n in ("P2", "P3", "P8", "P9"))
    kept = [u for u in parsed.links[("pledges", "B1")] if "key=kept_on_time" in u]
    assert instances(kept[0]) == [known.ids["X1"]]
    assert instances(parsed.links[("grades", "B2")][0]) == [known.ids["G2"]]


def test_the_spreadsheet_has_one_sheet_per_figure_with_the_screen_numbers(
    web_app: Flask, known: Known
) -> None:
    client = sign_in(web_app, "secretary")
    response = client.get(f"/dashboard/export.xlsx?year={YEAR}")
    assert response.status_code == 200
    assert response.mimetype == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert f"qizhi-{YEAR}.xlsx" in response.headers["Content-Disposition"]
    book = load_workbook(BytesIO(response.data))
    assert book.sheetnames == ["项目阶段", "逾期任务", "年度达标", "承诺践诺", "分类定级"]
    for figure, sheet in zip(FIGURES, book.worksheets, strict=True):
        body = client.get(f"/dashboard/data/{figure}.json?year={YEAR}").get_json()
        rows = [list(r) for r in sheet.iter_rows(values_only=True)]
        assert list(rows[0]) == body["columns"]
        assert rows[1:] == [[v if v != "" else None for v in r] for r in body["rows"]], figure
    assert book["年度达标"]["A1"].value == "组织" and book["承诺践诺"]["C1"].value == "承诺事项"
    pledges = {r[0]: r for r in book["承诺践诺"].iter_rows(min_row=2, values_only=True)}
    assert pledges["第一党支部"][1:6] == (2, 5, 3, 2, 1)


def test_a_name_that_looks_like_a_formula_is_exported_as_text(web_app: Flask, known: Known) -> None:
    with engine_of(web_app).db.write() as s:
        s.get(Organisation, known.org["B3"]).name = '=HYPERLINK("http://example.com","点击")'
    client = sign_in(web_app, "secretary")
    book = load_workbook(BytesIO(client.get(f"/dashboard/export.xlsx?year={YEAR}").data))
    cells = [row[0] for row in book["年度达标"].iter_rows(min_row=2) if str(row[0].value).startswith("=")]
    assert len(cells) == 1 and cells[0].data_type == "s"


def test_bad_input_is_a_clear_error(web_app: Flask, known: Known) -> None:
    client = sign_in(web_app, "secretary")
    assert client.get("/dashboard/?year=abc").status_code == 400
    assert "年度应为" in client.get("/dashboard/?year=1999").get_data(as_text=True)
    missing = client.get("/dashboard/data/nope.json")
    assert missing.status_code == 404 and "error" in missing.get_json()
    assert client.get("/dashboard/data/stages.json?year=x").status_code == 400
    assert client.get("/dashboard/?org=NOPE").status_code == 404
    assert client.get("/dashboard/drill?figure=nope&org=B1").status_code == 404
    assert client.get("/dashboard/drill?figure=pledges&org=B1&key=nonsense").status_code == 404
    assert client.get("/dashboard/drill?figure=stages").status_code == 404


def test_the_large_screen_shows_the_key_figures_and_refreshes_itself(web_app: Flask, known: Known) -> None:
    client = sign_in(web_app, "secretary")
    html = client.get(f"/dashboard/screen?year={YEAR}").get_data(as_text=True)
    assert 'data-refresh="60"' in html and "/static/js/dashboard.js" in html and "echarts.min.js" in html
    for figure in FIGURES:
        assert f"/dashboard/data/{figure}.json?year={YEAR}" in html
    totals = {f: client.get(f"/dashboard/data/{f}.json?year={YEAR}").get_json()["totals"] for f in FIGURES}
    assert totals["stages"]["running"] == 4 and totals["overdue"]["overdue"] == 3
    assert totals["compliance"]["short"] == 3 and totals["pledges"]["made"] == 9
    for kpi, value in (
        ("stages.running", 4),
        ("overdue.overdue", 3),
        ("compliance.short", 3),
        ("pledges.made", 9),
        ("pledges.kept_on_time", 6),
        ("grades.graded", 2),
    ):
        assert f'data-kpi="{kpi}">{value}<' in html
    assert "<script>" not in html and "style=" not in html  # CSP: no inline scripts or styles


def test_the_committee_selects_excellent_projects_within_the_cap(web_app: Flask, known: Known) -> None:
    office = sign_in(web_app, "office")
    assert office.get("/dashboard/selection").status_code == 403
    client = sign_in(web_app, "secretary")
    page = client.get(f"/dashboard/selection?year={YEAR}").get_data(as_text=True)
    assert "本年度已验收 4 个，最多可评选 2 个" in page
    assert page.count('name="selected"') == 4
    p2, p8, p9 = (str(known.ids[n]) for n in ("P2", "P8", "P9"))

    over = post(client, "/dashboard/selection", {"year": YEAR, "selected": [p2, p8, p9]})
    assert over.status_code == 422
    assert "超过评选上限：本年度已验收 4 个项目，最多可评选 2 个，您选择了 3 个。" in over.get_data(
        as_text=True
    )
    none = post(client, "/dashboard/selection", {"year": YEAR})
    assert none.status_code == 422 and "请至少选择一个项目" in none.get_data(as_text=True)
    assert post(client, "/dashboard/selection", {"year": YEAR, "selected": ["x"]}).status_code == 400
    assert (
        client.post("/dashboard/selection", data={"year": YEAR, "selected": [p2]}).status_code == 400
    )  # CSRF

    done = post(client, "/dashboard/selection", {"year": YEAR, "selected": [p2, p8]})
    assert done.status_code == 302
    after = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "已评选 2 个 2026 年度优秀党建项目" in after and 'name="selected"' not in after
    assert after.count('class="chosen"') == 2
    with engine_of(web_app).db.read() as s:
        assert s.get(Instance, int(p2)).data["excellent_year"] == YEAR
    again = post(client, "/dashboard/selection", {"year": YEAR, "selected": [p9]})
    assert again.status_code == 422 and "不能重复评选" in again.get_data(as_text=True)


def test_the_selection_share_is_configurable(web_app: Flask, known: Known) -> None:
    web_app.config["QIZHI_EXCELLENT_RATIO"] = "0.75"
    client = sign_in(web_app, "secretary")
    assert "最多可评选 3 个" in client.get(f"/dashboard/selection?year={YEAR}").get_data(as_text=True)
    picks = [str(known.ids[n]) for n in ("P2", "P8", "P9")]
    assert post(client, "/dashboard/selection", {"year": YEAR, "selected": picks}).status_code == 302


def test_the_charts_draw_in_a_browser_under_the_content_security_policy(page, live_server) -> None:  # type: ignore[no-untyped-def]
    """On the demo data, as the committee: every chart is drawn, the large screen too, and no script or
    style is refused by the CSP (a refusal is a console error)."""
    from tests.browser import sign_in_as

    sign_in_as(page, live_server, "wangjianguo")
    for path in ("/dashboard/", "/dashboard/screen"):
        page.goto(live_server.url + path)
        for figure in FIGURES:
            page.wait_for_selector(f'[data-chart="{figure}"][data-drawn="1"]', state="attached")
        assert page.locator("[data-chart] canvas").count() == len(FIGURES)
        if path == "/dashboard/":
            short = page.locator('table[data-figure="compliance"] tr.short').count()
            assert short >= 1  # the demo's branches have not yet solved two problems this year
    assert page.locator('[data-kpi="compliance.short"]').inner_text() == str(short)
    page.goto(live_server.url + "/dashboard/")
    page.locator('table[data-figure="compliance"] a').first.click()
    page.wait_for_url("**/dashboard/drill**")
    assert page.locator("tr[data-instance]").count() >= 1
    assert page.js_errors == []
