"""Validation errors that name the object and the field, so a user can find the mistake."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ValidationError(Exception):
    """An object was rejected. `ref` is `Kind namespace/name`; every field error is kept."""

    def __init__(self, ref: str, errors: list[FieldError]) -> None:
        self.ref = ref
        self.errors = errors
        super().__init__(f"{ref}: " + "; ".join(str(e) for e in errors))


@dataclass
class Errors:
    """Collects every field error of one object instead of stopping at the first."""

    items: list[FieldError] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append(FieldError(path, message))

    def raise_for(self, ref: str) -> None:
        if self.items:
            raise ValidationError(ref, list(self.items))
