"""Templates such as ``"{key}"``, ``"{topic}-{partition}-{offset}"`` or ``"{value.order.id}"``.

The fields: ``{key}``, ``{key.hex}``, ``{key.base64}``, ``{topic}``, ``{partition}``,
``{offset}``, ``{timestamp}``, ``{header.NAME}``, ``{value}``, ``{value.a.b}`` (a JSON path;
digits index arrays). ``{{`` and ``}}`` stand for literal braces. ``{key}`` and
``{header.NAME}`` are the bytes read as UTF-8; for binary keys use ``{key.hex}`` (lower-case
hex) or ``{key.base64}`` (standard alphabet, with ``=`` padding), anywhere a field is allowed,
``match`` included. JSON integers of any size stay exact. The value is parsed as JSON once, and
only when a template or a match needs it.

Parsed once at start-up; rendering a record is a join over precompiled parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .record import FieldPath, RecordView


class TemplateError(ValueError):
    """A template that cannot be parsed; the message says where."""


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    parts: tuple[str | FieldPath, ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        parts: list[str | FieldPath] = []
        literal: list[str] = []
        i, n = 0, len(source)
        while i < n:
            ch = source[i]
            if ch == "{" and source.startswith("{{", i):
                literal.append("{")
                i += 2
            elif ch == "}" and source.startswith("}}", i):
                literal.append("}")
                i += 2
            elif ch == "{":
                end = source.find("}", i)
                if end < 0:
                    raise TemplateError(f"unclosed '{{' at position {i} in {source!r}")
                try:
                    path = FieldPath.parse(source[i + 1 : end].strip())
                except ValueError as exc:
                    raise TemplateError(f"{exc} in template {source!r}") from None
                if literal:
                    parts.append("".join(literal))
                    literal = []
                parts.append(path)
                i = end + 1
            elif ch == "}":
                raise TemplateError(f"single '}}' at position {i} in {source!r}; write '}}}}'")
            else:
                literal.append(ch)
                i += 1
        if literal:
            parts.append("".join(literal))
        return cls(source, tuple(parts))

    @property
    def fields(self) -> tuple[FieldPath, ...]:
        return tuple(p for p in self.parts if isinstance(p, FieldPath))

    @property
    def single_field(self) -> FieldPath | None:
        """The field when the template is exactly one placeholder, such as ``"{value.payload}"``."""
        if len(self.parts) == 1 and isinstance(self.parts[0], FieldPath):
            return self.parts[0]
        return None

    @property
    def constant(self) -> bool:
        return not self.fields

    def render(self, view: RecordView) -> str:
        """Raises :class:`bridge.core.record.FieldError` when a field is missing."""
        parts = self.parts
        if len(parts) == 1:
            only = parts[0]
            return only if isinstance(only, str) else view.text(only)
        return "".join(p if isinstance(p, str) else view.text(p) for p in parts)
