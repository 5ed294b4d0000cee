"""Chat templates: a model folder's tokenizer_config.json `chat_template`, rendered with Jinja2
in a sandbox (as transformers does), turns chat messages into one prompt string."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplate:
    def __init__(self, source: str, special_tokens: dict[str, str]) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = env.from_string(source)
        self._special = special_tokens

    @classmethod
    def from_folder(cls, model_dir: str | Path) -> ChatTemplate | None:
        """The folder's chat template, or None when it has none (chat is then refused)."""
        path = Path(model_dir) / "tokenizer_config.json"
        if not path.is_file():
            return None
        config = json.loads(path.read_text())
        source = config.get("chat_template")
        if isinstance(source, list):  # several named templates: the default one
            source = next((t.get("template") for t in source if t.get("name") == "default"), None)
        if not isinstance(source, str):
            return None
        special = {
            key: value if isinstance(value, str) else (value or {}).get("content", "")
            for key in ("bos_token", "eos_token")
            if (value := config.get(key)) is not None
        }
        return cls(source, special)

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The prompt for `messages`, ending where the assistant's answer starts."""
        problems = [
            i
            for i, m in enumerate(messages)
            if not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ]
        if not messages or problems:
            raise ValueError(
                "messages must be a non-empty list of {role: str, content: str}; "
                f"entries {problems} are not"
            )
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=True, **self._special
            )
        except TemplateError as exc:
            raise ValueError(f"the model's chat template failed on these messages: {exc}") from exc
