"""Each format is recognised, and each format error is reported with its category and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tunewatch.plugins.validate.validate import validate_file

from .conftest import WriteRows

ASSISTANT = {"role": "assistant", "content": "y"}


def _chat(user: str = "hello there", reply: str = "hi, how can I help?") -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    }


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        (_chat(), "openai_chat"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                    {"role": "assistant", "tool_calls": [{"id": "1", "type": "function"}]},
                    {"role": "tool", "tool_call_id": "1", "content": "sunny"},
                    {"role": "assistant", "content": "It is sunny.", "weight": 1, "name": "bot"},
                ],
                "tools": [],
            },
            "openai_chat",
        ),
        (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
            "sharegpt",
        ),
        ({"instruction": "Add 2 and 2.", "input": "", "output": "4", "history": []}, "alpaca"),
        ({"prompt": "2+2=", "completion": "4"}, "trl_prompt_completion"),
        ({"prompt": "2+2=", "chosen": "4", "rejected": "5"}, "trl_preference"),
        ({"text": "Some pretraining text."}, "text"),
        ({"input": "2+2", "output": "4"}, "input_output"),
    ],
)
def test_each_format_is_detected_and_a_clean_row_has_no_problems(
    write_jsonl: WriteRows, row: dict[str, Any], fmt: str
) -> None:
    report = validate_file(write_jsonl([row]))
    assert report.format == fmt
    assert report.problems == ()


def _categories_by_line(path: Path) -> set[tuple[str, int]]:
    return {(p.category, p.line) for p in validate_file(path).problems}


@pytest.mark.parametrize(
    ("bad", "category"),
    [
        (["not an object"], "data_type"),
        ({"messages": "hi"}, "missing_messages_list"),
        ({"messages": [{"content": "x"}, ASSISTANT]}, "message_missing_key"),
        (
            {"messages": [{"role": "user", "content": "x", "mood": 1}]},
            "message_unrecognized_key",
        ),
        ({"messages": [{"role": "robot", "content": "x"}, ASSISTANT]}, "unrecognized_role"),
        ({"messages": [{"role": "user"}, ASSISTANT]}, "missing_content"),
        ({"messages": [{"role": "user", "content": "x"}]}, "example_missing_assistant_message"),
        (
            {"messages": [{"role": "assistant", "content": " "}]},
            "empty_assistant_content",
        ),
    ],
)
def test_each_chat_error_is_reported_on_its_line(
    write_jsonl: WriteRows, bad: Any, category: str
) -> None:
    path = write_jsonl([_chat(), _chat("a"), bad, _chat("b")])
    assert (category, 3) in _categories_by_line(path)


def test_invalid_json_and_utf8_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    good = b'{"prompt": "p", "completion": "c"}\n'
    path.write_bytes(good + b'{"prompt": \n' + b'{"prompt": "\xff", "completion": "c"}\n' + good)
    assert _categories_by_line(path) >= {("invalid_json", 2), ("invalid_utf8", 3)}


def test_a_field_whose_json_type_changes_is_reported_where_it_changes(
    write_jsonl: WriteRows,
) -> None:
    rows = [{"text": "a", "id": 1}, {"text": "b", "id": None}, {"text": "c", "id": "3"}]
    problems = validate_file(write_jsonl(rows)).problems
    assert [(p.category, p.line) for p in problems] == [("field_type_changed", 3)]
    assert "line 1" in problems[0].message


def test_sharegpt_turns_must_alternate_and_roles_must_be_known(write_jsonl: WriteRows) -> None:
    def conv(*turns: tuple[str, str]) -> dict[str, Any]:
        return {"conversations": [{"from": who, "value": text} for who, text in turns]}

    rows = [
        conv(("system", "be nice"), ("human", "hi"), ("gpt", "hello")),
        conv(("human", "hi"), ("human", "again"), ("gpt", "yes")),
        conv(("human", "hi"), ("bot", "hello")),
        conv(("human", "hi"), ("function_call", "{}"), ("observation", "{}"), ("gpt", "done")),
        conv(("human", "only me")),
    ]
    assert _categories_by_line(write_jsonl(rows)) == {
        ("invalid_turn_order", 2),
        ("unrecognized_role", 3),
        ("example_missing_assistant_message", 3),
        ("example_missing_assistant_message", 5),
    }


def test_alpaca_with_an_empty_output_is_an_error(write_jsonl: WriteRows) -> None:
    rows = [{"instruction": "Say hi.", "output": "hi"}, {"instruction": "Say hi.", "output": ""}]
    assert _categories_by_line(write_jsonl(rows)) == {("empty_assistant_content", 2)}
