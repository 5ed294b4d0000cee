"""The OpenAI request and response shapes: parsing bodies into engine terms, and back.

Parsing raises BadRequest (HTTP 400) naming the field, its value and what is allowed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kpt.serve._sampling import SamplingParams
from kpt.serve.fleet._requests import Slo

# OpenAI's defaults where they differ from SamplingParams' (temperature 1, 16 tokens).
DEFAULT_MAX_TOKENS = 16


class BadRequest(ValueError):
    """The request body is malformed; answered with HTTP 400 and this message."""


@dataclass(frozen=True)
class Options:
    model: str | None
    params: SamplingParams
    stream: bool
    return_token_ids: bool
    include_usage: bool
    priority: int
    slo: Slo | None


def parse_prompts(value: Any) -> list[str | list[int]]:
    """`prompt`: a string, a list of token ids, or a list of either (one choice each)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(_is_token(t) for t in value):
        return [list(value)]
    if isinstance(value, list) and value:
        prompts: list[str | list[int]] = []
        for item in value:
            if isinstance(item, str):
                prompts.append(item)
            elif isinstance(item, list) and item and all(_is_token(t) for t in item):
                prompts.append(list(item))
            else:
                raise BadRequest(
                    f"prompt entry {str(item)[:60]!r} is neither text nor a list of token ids"
                )
        return prompts
    raise BadRequest(
        "prompt must be text, a non-empty list of token ids, or a list of those; "
        f"got {str(value)[:60]!r}"
    )


def parse_options(body: dict[str, Any]) -> Options:
    if body.get("n", 1) != 1 or body.get("best_of", 1) not in (1, None):
        raise BadRequest(
            "n and best_of other than 1 are not supported; send one request per sample"
        )
    if body.get("logprobs") not in (None, False, 0) or body.get("echo"):
        raise BadRequest("logprobs and echo are not supported")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", DEFAULT_MAX_TOKENS))
    fields = {
        "max_tokens": max_tokens,
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "top_k": body.get("top_k", 0),
        "seed": body.get("seed"),
        "stop_token_ids": body.get("stop_token_ids") or (),
        "ignore_eos": bool(body.get("ignore_eos", False)),
        "min_tokens": body.get("min_tokens", 0),
        "stop": body.get("stop") or (),
    }
    if isinstance(fields["stop"], str):
        fields["stop"] = (fields["stop"],)
    if not isinstance(fields["stop"], list | tuple):
        raise BadRequest(f"stop must be a string or a list of strings, got {fields['stop']!r}")
    for name in ("temperature", "top_p"):
        if isinstance(fields[name], int) and not isinstance(fields[name], bool):
            fields[name] = float(fields[name])
    if not isinstance(fields["stop_token_ids"], list | tuple):
        raise BadRequest(
            f"stop_token_ids must be a list of token ids, got {fields['stop_token_ids']!r}"
        )
    try:
        params = SamplingParams(**fields)
    except (TypeError, ValueError) as exc:
        raise BadRequest(str(exc)) from None
    priority = body.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise BadRequest(f"priority must be an int (lower runs first), got {priority!r}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest(f"model must be a string, got {model!r}")
    stream_options = body.get("stream_options") or {}
    return Options(
        model=model,
        params=params,
        stream=bool(body.get("stream", False)),
        return_token_ids=bool(body.get("return_token_ids", False)),
        include_usage=bool(
            isinstance(stream_options, dict) and stream_options.get("include_usage")
        ),
        priority=priority,
        slo=_parse_slo(body.get("slo")),
    )


def _parse_slo(value: Any) -> Slo | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= {"ttft_ms", "tpot_ms"}:
        raise BadRequest(f"slo must be an object with ttft_ms and/or tpot_ms, got {value!r}")
    for key, target in value.items():
        if not isinstance(target, int | float) or target <= 0:
            raise BadRequest(f"slo.{key} must be a positive number of ms, got {target!r}")
    return Slo(value.get("ttft_ms"), value.get("tpot_ms"))


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- responses -------------------------------------------------------------------------------


def completion_choice(index: int, request: Any, with_ids: bool, chat: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "finish_reason": request.finish_reason}
    if chat:
        choice["message"] = {"role": "assistant", "content": request.text}
    else:
        choice["text"] = request.text
        choice["logprobs"] = None
    if with_ids:
        choice["token_ids"] = list(request.token_ids)
    return choice


def usage(requests: list[Any]) -> dict[str, int]:
    prompt = sum(len(r.prompt_ids or ()) for r in requests)
    completion = sum(len(r.token_ids) for r in requests)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def envelope(kind: str, request_id: str, model: str) -> dict[str, Any]:
    return {"id": f"cmpl-{request_id}", "object": kind, "created": int(time.time()), "model": model}


def error_body(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}
