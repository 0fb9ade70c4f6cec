"""Structural checks of one row against its file's format, and of field types across rows.

Each finding has a category so a report can group them; errors break training, warnings may not.
"""

from __future__ import annotations

from typing import Any

from tunewatch.plugins.validate import formats as f
from tunewatch.plugins.validate.report import Level

Finding = tuple[str, Level, str]  # (category, level, message)

OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
OPENAI_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"}
    | {"refusal", "loss_weight"}  # loss_weight: LLaMA-Factory's per-message weight
)
SHAREGPT_ROLES = frozenset({"human", "gpt", "system", "observation", "function_call"})
SHAREGPT_TURN_KEYS = frozenset({"from", "value", "loss_weight", "weight"})


def _err(category: str, message: str) -> Finding:
    return (category, "error", message)


def _warn(category: str, message: str) -> Finding:
    return (category, "warning", message)


def check_row(fmt: str, value: Any) -> list[Finding]:
    """Every structural problem of one row, read as format `fmt`."""
    if not isinstance(value, dict):
        return [_err("data_type", f"row is a JSON {json_type(value)}, not an object")]
    if fmt == f.OPENAI_CHAT:
        return _check_openai(value)
    if fmt == f.SHAREGPT:
        return _check_sharegpt(value)
    if fmt == f.UNKNOWN:
        return [_err("unrecognized_format", f"no known format has keys {sorted(value)[:8]}")]
    return _check_fields(fmt, value)


def _check_openai(row: dict[str, Any]) -> list[Finding]:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return [_err("missing_messages_list", "'messages' is missing, empty or not a list")]
    found: list[Finding] = []
    has_assistant = False
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            found.append(_err("data_type", f"message {index} is not an object"))
            continue
        has_assistant |= message.get("role") == "assistant"
        found.extend(_check_openai_message(index, message))
    if row.get("tools") is not None and not isinstance(row["tools"], list):
        found.append(_err("data_type", "'tools' is not a list"))
    if not has_assistant:
        found.append(_err("example_missing_assistant_message", "no assistant message"))
    return found


def _check_openai_message(index: int, message: dict[str, Any]) -> list[Finding]:
    found: list[Finding] = []
    role = message.get("role")
    if "role" not in message:
        found.append(_err("message_missing_key", f"message {index} has no 'role'"))
    elif role not in OPENAI_ROLES:
        found.append(_err("unrecognized_role", f"message {index} has role {role!r}"))
    for key in sorted(message.keys() - OPENAI_MESSAGE_KEYS):
        found.append(_warn("message_unrecognized_key", f"message {index} has key {key!r}"))
    content = message.get("content")
    calls_tool = bool(message.get("tool_calls") or message.get("function_call"))
    if content is None and not calls_tool:
        found.append(_err("missing_content", f"message {index} ({role}) has no content"))
    elif content is not None and not isinstance(content, str | list):
        found.append(_err("data_type", f"message {index} content is a {json_type(content)}"))
    elif role == "assistant" and not calls_tool and not f.content_text(content).strip():
        found.append(_err("empty_assistant_content", f"message {index} (assistant) is empty"))
    if role == "tool" and "tool_call_id" not in message:
        found.append(_warn("message_missing_key", f"message {index} (tool) has no tool_call_id"))
    weight = message.get("weight")
    if weight is not None and weight not in (0, 1):
        found.append(_err("invalid_weight", f"message {index} weight {weight!r} is not 0 or 1"))
    return found


def _check_sharegpt(row: dict[str, Any]) -> list[Finding]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        return [_err("missing_messages_list", "'conversations' is missing, empty or not a list")]
    found: list[Finding] = []
    speakers: list[str] = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            found.append(_err("data_type", f"turn {index} is not an object"))
            continue
        for key in ("from", "value"):
            if key not in turn:
                found.append(_err("message_missing_key", f"turn {index} has no {key!r}"))
        for key in sorted(turn.keys() - SHAREGPT_TURN_KEYS):
            found.append(_warn("message_unrecognized_key", f"turn {index} has key {key!r}"))
        speaker = turn.get("from")
        if "from" in turn and speaker not in SHAREGPT_ROLES:
            found.append(_err("unrecognized_role", f"turn {index} is from {speaker!r}"))
        if speaker == "gpt" and not f.content_text(turn.get("value")).strip():
            found.append(_err("empty_assistant_content", f"turn {index} (gpt) is empty"))
        speakers.append(speaker if isinstance(speaker, str) else "")
    found.extend(_check_alternation(speakers, preference="chosen" in row))
    return found


def _check_alternation(speakers: list[str], *, preference: bool) -> list[Finding]:
    """human/observation and gpt/function_call must alternate, after an optional system turn."""
    if speakers and speakers[0] == "system":
        speakers = speakers[1:]
    for index, speaker in enumerate(speakers):
        expected = f.SHAREGPT_USER_SIDE if index % 2 == 0 else f.SHAREGPT_MODEL_SIDE
        if speaker in SHAREGPT_ROLES and speaker not in expected:
            side = "human/observation" if index % 2 == 0 else "gpt/function_call"
            return [_err("invalid_turn_order", f"turn {index} is {speaker!r}, expected {side}")]
    # A preference row ends on the user side: its answers are in chosen/rejected.
    if not preference and not any(s in f.SHAREGPT_MODEL_SIDE for s in speakers):
        return [_err("example_missing_assistant_message", "no gpt turn")]
    return []


_REQUIRED: dict[str, tuple[str, ...]] = {
    f.ALPACA: ("instruction", "output"),
    f.TRL_PROMPT_COMPLETION: ("prompt", "completion"),
    f.TRL_PREFERENCE: ("chosen", "rejected"),
    f.QUESTION_ANSWER: ("question", "answer"),
    f.INPUT_OUTPUT: ("input", "output"),
    f.TEXT: ("text",),
}
_ANSWER_FIELD = {
    f.ALPACA: "output",
    f.TRL_PROMPT_COMPLETION: "completion",
    f.TRL_PREFERENCE: "chosen",
    f.QUESTION_ANSWER: "answer",
    f.INPUT_OUTPUT: "output",
    f.TEXT: "text",
}


def _check_fields(fmt: str, row: dict[str, Any]) -> list[Finding]:
    found: list[Finding] = []
    for key in _REQUIRED[fmt]:
        if key not in row or row[key] is None:
            found.append(_err("missing_field", f"required field {key!r} is missing"))
        elif not isinstance(row[key], str | list | dict):
            found.append(_err("data_type", f"{key!r} is a {json_type(row[key])}"))
    if fmt == f.ALPACA and not isinstance(row.get("history", []), list):
        found.append(_err("data_type", "'history' is not a list"))
    answer_key = _ANSWER_FIELD[fmt]
    answer = row.get(answer_key)
    if isinstance(answer, str) and not answer.strip():
        found.append(_err("empty_assistant_content", f"{answer_key!r} is empty"))
    return found


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class FieldTypes:
    """Remembers each top-level field's JSON type: a change breaks `datasets`/Arrow loading."""

    def __init__(self) -> None:
        self._first: dict[str, tuple[str, int]] = {}

    def check(self, line: int, row: Any) -> list[Finding]:
        if not isinstance(row, dict):
            return []
        found: list[Finding] = []
        for key, value in row.items():
            kind = json_type(value)
            if kind == "null":  # Arrow fills nulls into any column type.
                continue
            seen = self._first.setdefault(key, (kind, line))
            if seen[0] != kind:
                message = f"field {key!r} is a {kind} here but a {seen[0]} on line {seen[1]}"
                found.append(_err("field_type_changed", message))
        return found
