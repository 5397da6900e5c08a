"""Labels the engine defines in Chinese (roles, organisation kinds), marked here for translation.

The engine never imports Flask-Babel, so its dictionaries hold plain Chinese text. Listing each
label once more as a literal lets ``pybabel extract`` find it; ``tests/test_labels.py`` fails if
the engine gains a label this list lacks.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

ROLE_LABELS = {
    "party_committee": _l("公司党委"),
    "party_office": _l("党建工作部"),
    "review_committee": _l("党建项目评审委员会"),
    "branch_secretary": _l("支部书记"),
    "party_member": _l("党员"),
    "masses": _l("群众代表"),
    "auditor": _l("纪检/审计"),
    "designer": _l("流程设计"),
    "admin": _l("系统管理员"),
}
KIND_LABELS = {
    "committee": _l("公司党委"),
    "general_branch": _l("党总支"),
    "branch": _l("党支部"),
    "group": _l("党小组"),
}
