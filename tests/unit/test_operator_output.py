"""The operator commands' pure parts: the warm CSV's checks (in CSV terms), the status tables, the console that
never folds a line. No gateway, no terminal."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from proxy.admission.fair import Priority
from proxy.operator import (
    MAX_PROBLEMS_SHOWN,
    OperatorError,
    WarmCall,
    make_console,
    read_calls,
    status_table,
    status_view,
    tenants_table,
)

WABA, TEMPLATE = "QueryChatappBindWaba", "GetChatappTemplateDetail"


def csv_file(tmp_path: Path, text: str, name: str = "keys.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(OperatorError) as caught:
        read_calls(path)
    return str(caught.value).splitlines()


def test_a_good_csv_mixes_actions_and_leaves_empty_cells_out(tmp_path: Path) -> None:
    # A BOM (a spreadsheet's export), spaces around the header's names, a blank row: all fine. Language is a
    # column only GetChatappTemplateDetail takes: empty on the QueryChatappBindWaba rows, so no problem.
    path = csv_file(tmp_path, "\ufeffAction, CustSpaceId ,Language,TemplateCode\n"
                              f"{WABA},7800,,\n\n{TEMPLATE},7700,en_US,0abc\n")
    assert read_calls(path) == [WarmCall(2, WABA, {"CustSpaceId": "7800"}),
                                WarmCall(4, TEMPLATE, {"CustSpaceId": "7700", "Language": "en_US",
                                                       "TemplateCode": "0abc"})]


def test_no_action_column_names_the_header(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "CustSpaceId,TemplateCode\n7700,0abc\n")
    assert problems(path) == [f"{path}: no Action column (header: CustSpaceId, TemplateCode)"]
    assert "x-acs-action" not in " ".join(problems(path))  # not the HTTP API's message


def test_an_unknown_column_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = csv_file(tmp_path, f"Action,CustSpaceId,Langauge,Colour\n{WABA},7800,,\n")
    takes = "CustSpaceId, CustWabaId, IsvCode, Language, TemplateCode, TemplateName, TemplateType"
    assert problems(path) == [f"{path}: unknown column 'Langauge' (did you mean Language? the actions take: {takes})",
                              f"{path}: unknown column 'Colour' (the actions take: {takes})"]


def test_a_column_named_twice_is_refused(tmp_path: Path) -> None:
    path = csv_file(tmp_path, f"Action,CustSpaceId,CustSpaceId\n{WABA},1,2\n")
    assert problems(path) == [f"{path}: column 'CustSpaceId' appears 2 times"]


def test_row_problems_name_the_line_and_the_column(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "Action,CustSpaceId,Language,TemplateCode,TemplateType\n"
                              f"{TEMPLATE},7700,en_US,0abc,\n"      # 2: fine
                              f"{TEMPLATE},7700,en_US,,\n"          # 3: no template named
                              "Foo,7700,,,\n"                       # 4: no such action
                              ",7700,,,\n"                          # 5: no action
                              f"{WABA},7800,en_US,,\n"              # 6: a value in a column QueryChatappBindWaba lacks
                              f"{TEMPLATE},7700,{'x' * 17},0abc,\n"  # 7: too long
                              f"{TEMPLATE},7700,en_US,0abc,SMS\n"   # 8: not a choice
                              f"{TEMPLATE},7700,,0abc,\n"           # 9: Language missing
                              f"{WABA},7800,,,,extra\n")            # 10: a cell past the header
    known = f"{TEMPLATE}, {WABA}"
    assert problems(path) == [
        f"{path} line 3: one of TemplateCode or TemplateName is required by {TEMPLATE}",
        f"{path} line 4: Action 'Foo' is not one of {known}",
        f"{path} line 5: Action is empty (one of {known})",
        f"{path} line 6: Language is not a parameter of {WABA} (it takes CustSpaceId, IsvCode): leave the cell empty",
        f"{path} line 7: Language is longer than 16 characters",
        f"{path} line 8: TemplateType must be one of VIBER, WHATSAPP; got SMS",
        f"{path} line 9: Language is required by {TEMPLATE}",
        f"{path} line 10: 6 cells, but the header has 5 columns",
    ]


def test_line_numbers_count_lines_of_the_file_not_rows(tmp_path: Path) -> None:
    # A quoted cell across two lines: a row's problem names the line it starts on in the file.
    path = csv_file(tmp_path, f'Action,CustSpaceId\n{WABA},"78\n00"\nFoo,1\n')
    assert problems(path) == [f"{path} line 2: CustSpaceId contains control characters",
                              f"{path} line 4: Action 'Foo' is not one of {TEMPLATE}, {WABA}"]


def test_a_value_under_an_unnamed_column_is_refused_empty_ones_are_not(tmp_path: Path) -> None:
    path = csv_file(tmp_path, f"Action,CustSpaceId,\n{WABA},7800,\n{WABA},7801,oops\n")
    assert problems(path) == [f"{path} line 3: a value in column 3, which the header leaves unnamed"]


def test_many_problems_are_listed_up_to_a_limit(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "Action\n" + "Foo\n" * (MAX_PROBLEMS_SHOWN + 3))
    listed = problems(path)
    assert len(listed) == MAX_PROBLEMS_SHOWN + 1 and listed[0].startswith(f"{path} line 2: Action 'Foo'")
    assert listed[-1] == f"{path}: and 3 more lines with problems"


def test_empty_files_and_header_only_files(tmp_path: Path) -> None:
    empty = csv_file(tmp_path, "", "empty.csv")
    assert problems(empty)[0].startswith(f"{empty}: no header row")
    header_only = csv_file(tmp_path, "Action,CustSpaceId\n", "header.csv")
    assert problems(header_only)[0].startswith(f"{header_only}: no calls")


STATUS: Mapping[str, Any] = {
    "counters": {"hits": 3, "misses": 1},
    "queues": {TEMPLATE: {"use": 0.4, "cap": 5, "depth": {"interactive": 2, "refresh": 1, "warm": 7}, "refused": 4,
                          "mode": "enforce"}},
    "tenants": {"other": {"HIT": 3, "MISS": 1}, "[bold]x": {"MISS": 2}},
}


def rendered(renderable: Any, width: int | None = None) -> str:
    out = io.StringIO()
    console = make_console(file=out) if width is None else Console(file=out, width=width, color_system=None)
    console.print(renderable, soft_wrap=False)
    return out.getvalue()


def test_status_labels_each_queued_priority() -> None:
    table = status_table(STATUS, "http://gw")
    headers = [str(column.header) for column in table.columns]
    assert headers == ["action", "quota\nuse", "cap/s", "queued\ninteractive", "queued\nrefresh", "queued\nwarm",
                       "refused", "mode"]
    assert [p.name.lower() for p in sorted(Priority)] == ["interactive", "refresh", "warm"]  # /admin/status names
    cells = {str(column.header): list(column.cells) for column in table.columns}
    assert [cells["queued\ninteractive"], cells["queued\nrefresh"], cells["queued\nwarm"]] == [["2"], ["1"], ["7"]]
    text = rendered(status_view(STATUS, "http://gw"))
    header_lines = [line for line in text.splitlines() if "queued" in line or "interactive" in line]
    assert header_lines and all(word in "\n".join(header_lines) for word in ("interactive", "refresh", "warm"))
    assert "0 / 0 / 0" not in text and "2 / 1 / 7" not in text


def test_status_lists_tenants_in_their_own_table() -> None:
    tenants = tenants_table(STATUS)
    assert tenants is not None
    assert [str(column.header) for column in tenants.columns] == ["tenant", "answers", "from the cache"]
    assert [list(column.cells) for column in tenants.columns][1:] == [["4", "2"], ["75%", "0%"]]
    assert "[bold]x" in rendered(tenants)  # a tenant's name is text, not markup
    assert tenants_table({"tenants": {}}) is None


def test_status_fits_a_100_column_terminal_without_cutting_action_names() -> None:
    text = rendered(status_view(STATUS, "http://gw"), width=100)
    assert max(len(line) for line in text.splitlines()) <= 100 and TEMPLATE in text and "…" not in text


def test_a_console_that_is_not_a_terminal_never_wraps() -> None:
    out = io.StringIO()
    console = make_console(file=out)
    assert not console.is_terminal and console.width > 10_000
    long_key = "tpl:" + "k" * 300
    console.print(f"  {long_key}", markup=False, highlight=False)
    console.print(status_view({"queues": {"A" * 200: {"depth": {}}}}, "http://gw"), soft_wrap=False)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"  {long_key}"
    assert any("A" * 200 in line for line in lines)
    assert "\x1b" not in out.getvalue()  # no colour or cursor codes
