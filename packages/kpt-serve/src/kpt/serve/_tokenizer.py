"""The model folder's tokenizer (tokenizer.json through the `tokenizers` library), if any."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class Tokenizer:
    """Encodes prompts and decodes outputs; only built when tokenizer.json exists."""

    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer as _HfTokenizer  # optional: the tokenizer extra
        except ImportError as exc:
            raise ImportError(
                f"{path} needs the `tokenizers` library: pip install 'kpt-serve[tokenizer]'"
            ) from exc
        self._tokenizer = _HfTokenizer.from_file(str(path))

    @classmethod
    def from_folder(cls, model_dir: str | Path) -> Tokenizer | None:
        path = Path(model_dir) / "tokenizer.json"
        return cls(path) if path.is_file() else None

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=True).ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(token_ids), skip_special_tokens=True)
