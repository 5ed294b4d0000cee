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

    def stream(self) -> TextStream:
        """The text of an output that grows a token at a time."""
        return TextStream(self._tokenizer)


class TextStream:
    """A growing output's text, decoded a token at a time (tokenizers' DecodeStream): about
    2 us a token, where decoding the whole output at every step costs time in its length
    (135 us a step on average over a 1,000-token output), for every running request.

    A character split across tokens appears once complete, so the text is always a prefix of
    `Tokenizer.decode` of the same tokens; the engine decodes a finished output whole.
    """

    def __init__(self, tokenizer) -> None:
        from tokenizers.decoders import DecodeStream

        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=True)
        self.text = ""

    def add(self, token_id: int) -> None:
        chunk = self._stream.step(self._tokenizer, token_id)
        if chunk:
            self.text += chunk
