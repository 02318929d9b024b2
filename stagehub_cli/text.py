"""Text the server sent, made safe to print: no terminal control sequences, no rich markup.

Pipelines, names and errors come from other users; rich would read `[/]` or `[link=…]` in them as markup (or
crash on it), and a terminal would obey escape sequences. Everything the CLI prints from an answer goes
through `shown` (for rich) or `plain` (for plain echo).
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.markup import escape

# C0 and C1 controls (ESC among them) and DEL; zero-width and bidirectional formatting characters that can
# make text read differently from what it is.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
_LINE_BREAKS = re.compile("[\t\n]")


def plain(value: object, *, multiline: bool = False) -> str:
    """`value` as text without control characters; line breaks and tabs become spaces unless `multiline`."""
    text = _CONTROLS.sub("", str(value))
    return text if multiline else _LINE_BREAKS.sub(" ", text)


def shown(value: object, *, multiline: bool = False) -> str:
    """`value` for rich: `plain`, with anything rich would read as markup escaped."""
    return escape(plain(value, multiline=multiline))


# What json.dumps leaves raw (it escapes only C0): DEL, C1 and the formatting characters above.
_JSON_RAW_CONTROLS = re.compile("[\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


def json_text(data: Any) -> str:
    """`--json` output: the same data, with every control character as a JSON escape rather than raw."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return _JSON_RAW_CONTROLS.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
