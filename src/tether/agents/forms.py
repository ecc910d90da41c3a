"""An MCP server's form (an elicitation's ``requestedSchema``) as questions a person answers on the
phone, and their answers as the form's values: Codex and Claude Code pass such forms on alike."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tether.agents.base import AgentContext, Question

log = logging.getLogger(__name__)

# An MCP form's field types tether can put as a question, and how an answer becomes a value.
FORM_TYPES = {"string": str, "number": float, "integer": int, "boolean": None}


def form_questions(schema: Any, message: str = "") -> list[Question] | None:
    """An MCP elicitation form (a flat object of string, number, integer, boolean and enum fields)
    as questions, one per field, the server's ``message`` leading the first; None when it has
    another shape."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return None
    questions: list[Question] = []
    for name, field_schema in schema["properties"].items():
        if not isinstance(field_schema, dict) or field_schema.get("type") not in FORM_TYPES:
            return None
        choices = _choices(field_schema)
        questions.append({
            "id": str(name), "header": str(field_schema.get("title") or name),
            "question": str(field_schema.get("description") or ""),
            "options": [{"label": label, "description": ""} for label in choices],
            "is_other": not choices, "is_secret": False,
        })
    if message and questions:
        first = questions[0]["question"]
        questions[0]["question"] = f"{message}\n{first}" if first else message
    return questions


def _choices(field_schema: dict[str, Any]) -> list[str]:
    if field_schema.get("type") == "boolean":
        return ["yes", "no"]
    if isinstance(field_schema.get("enum"), list):
        return [str(v) for v in field_schema["enum"]]
    if isinstance(field_schema.get("oneOf"), list):
        return [str(o.get("const")) for o in field_schema["oneOf"] if isinstance(o, dict) and "const" in o]
    return []


def form_content(schema: dict[str, Any], answers: dict[str, list[str]]) -> dict[str, Any] | None:
    """The answers as the form's values (typed); None when one does not fit (a number that is not)."""
    content: dict[str, Any] = {}
    for name, field_schema in schema["properties"].items():
        given = answers.get(str(name))
        if not given:
            continue
        text = given[0]
        kind = field_schema.get("type")
        try:
            if kind == "boolean":
                content[name] = text.strip().lower() in ("yes", "true", "y", "1")
            elif kind in ("number", "integer"):
                content[name] = FORM_TYPES[kind](text.strip())  # type: ignore[misc]
            else:
                content[name] = text
        except ValueError:
            return None
    return content


async def fill_form(ctx: AgentContext, questions: list[Question], schema: dict[str, Any]) -> dict[str, Any] | None:
    """Put a form's questions to the person; the elicitation's answer: accept with the typed
    values, decline when one does not fit, cancel when it could not be put. None when the turn
    ended (or the agent withdrew it) meanwhile: nothing to answer."""
    try:
        answers = await ctx.ask(questions, item=None)
    except asyncio.CancelledError:
        return None
    except Exception:
        log.exception("session %s: putting an MCP server's form failed", ctx.session_id)
        return {"action": "cancel"}
    content = form_content(schema, answers)
    return {"action": "accept", "content": content} if content is not None else {"action": "decline"}
