"""The fine-tuning data formats: detect a file's format and split an example into prompt/answer.

Detection votes over the first rows, so one odd row does not decide the format of a whole file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

OPENAI_CHAT = "openai_chat"
SHAREGPT = "sharegpt"
ALPACA = "alpaca"
TRL_PROMPT_COMPLETION = "trl_prompt_completion"
TRL_PREFERENCE = "trl_preference"
TEXT = "text"
INPUT_OUTPUT = "input_output"
QUESTION_ANSWER = "question_answer"
UNKNOWN = "unknown"

# Most specific first: instruction+input+output is Alpaca, not input/output; chosen/rejected
# with a ShareGPT `conversations` prompt is a preference pair.
_SIGNATURES: tuple[tuple[str, frozenset[str]], ...] = (
    (TRL_PREFERENCE, frozenset({"chosen", "rejected"})),
    (OPENAI_CHAT, frozenset({"messages"})),
    (SHAREGPT, frozenset({"conversations"})),
    (ALPACA, frozenset({"instruction", "output"})),
    (TRL_PROMPT_COMPLETION, frozenset({"prompt", "completion"})),
    (QUESTION_ANSWER, frozenset({"question", "answer"})),
    (INPUT_OUTPUT, frozenset({"input", "output"})),
    (TEXT, frozenset({"text"})),
)

ASSISTANT_ROLES = frozenset({"assistant"})
SHAREGPT_USER_SIDE = frozenset({"human", "observation"})
SHAREGPT_MODEL_SIDE = frozenset({"gpt", "function_call"})


def row_format(value: Any) -> str:
    """The format one row looks like, or UNKNOWN."""
    if not isinstance(value, dict):
        return UNKNOWN
    keys = value.keys()
    for name, required in _SIGNATURES:
        if required <= keys:
            return name
    return UNKNOWN


def detect_format(sample: Iterable[Any]) -> str:
    """The most common format among `sample` rows (UNKNOWN only if none is recognised)."""
    votes = Counter(row_format(value) for value in sample)
    votes.pop(UNKNOWN, None)
    if not votes:
        return UNKNOWN
    return votes.most_common(1)[0][0]


def content_text(content: Any) -> str:
    """The text of a message content: a string, or a list of parts with 'text' (or 'value')."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    pieces: list[str] = []
    for part in content:
        if isinstance(part, str):
            pieces.append(part)
        elif isinstance(part, dict):
            text = part.get("text", part.get("value"))
            if isinstance(text, str):
                pieces.append(text)
    return "\n".join(pieces)


def _messages_split(
    messages: Any, role_key: str, text_key: str, answer: frozenset[str]
) -> tuple[str, str]:
    prompt: list[str] = []
    reply: list[str] = []
    if not isinstance(messages, list):
        return "", ""
    for message in messages:
        if not isinstance(message, dict):
            continue
        text = content_text(message.get(text_key))
        (reply if message.get(role_key) in answer else prompt).append(text)
    return "\n".join(prompt), "\n".join(reply)


def _side(value: Any) -> str:
    """A prompt/completion side: a string, a message, or a list of messages (TRL conversational)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return content_text(value.get("content", value.get("value")))
    if isinstance(value, list):
        return "\n".join(_side(item) for item in value)
    return ""


def split_example(fmt: str, value: Any) -> tuple[str, str]:
    """(prompt text, answer text) of one row; empty strings where the row lacks them."""
    if not isinstance(value, dict):
        return "", ""
    get = value.get
    if fmt == OPENAI_CHAT:
        return _messages_split(get("messages"), "role", "content", ASSISTANT_ROLES)
    if fmt == SHAREGPT:
        prompt, answer = _messages_split(get("conversations"), "from", "value", SHAREGPT_MODEL_SIDE)
        return prompt, answer
    if fmt == ALPACA:
        parts = [_side(get("system")), _history_text(get("history")), _side(get("instruction"))]
        parts.append(_side(get("input")))
        return "\n".join(p for p in parts if p), _side(get("output"))
    if fmt == TRL_PREFERENCE:
        prompt = (
            _side(get("prompt"))
            or _messages_split(get("conversations"), "from", "value", SHAREGPT_MODEL_SIDE)[0]
        )
        return prompt, _side(get("chosen"))
    if fmt == TRL_PROMPT_COMPLETION:
        return _side(get("prompt")), _side(get("completion"))
    if fmt == QUESTION_ANSWER:
        return _side(get("question")), _side(get("answer"))
    if fmt == INPUT_OUTPUT:
        return _side(get("input")), _side(get("output"))
    if fmt == TEXT:
        return "", _side(get("text"))
    return "", ""


def _history_text(history: Any) -> str:
    if not isinstance(history, list):
        return ""
    return "\n".join(
        "\n".join(_side(item) for item in pair) for pair in history if isinstance(pair, list)
    )
