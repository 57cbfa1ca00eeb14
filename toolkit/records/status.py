"""The one enum of check and step statuses, with the words and tones every renderer shows them by."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A conformance check passes, fails or does not apply; a `vpatch ci` step passes, fails or is skipped
    because a step it needs failed; a feature-contract item passes, fails or is not provided by the build.
    Members are `str`, so they compare equal to the words in the files."""

    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not-applicable"
    SKIPPED = "skipped"
    NOT_PROVIDED = "not-provided"  # a contract item the build under test does not offer at all (named why)

    @property
    def label(self) -> str:
        """The short word tables show (`n/a` for not-applicable)."""
        return {Status.NOT_APPLICABLE: "n/a", Status.NOT_PROVIDED: "not provided"}.get(self, self.value)

    @property
    def tone(self) -> str:
        """good, bad or muted: what the HTML class and the terminal colour are chosen by."""
        return {Status.PASS: "good", Status.FAIL: "bad"}.get(self, "muted")


CHECK_STATUSES = (Status.PASS, Status.FAIL, Status.NOT_APPLICABLE)
STEP_STATUSES = (Status.PASS, Status.FAIL, Status.SKIPPED)
CONTRACT_STATUSES = (Status.PASS, Status.FAIL, Status.NOT_PROVIDED)
TERMINAL_STYLE = {"good": "green", "bad": "red", "muted": "dim"}
# the words tables show instead of the status itself (not-applicable -> n/a)
LABELS = {status.value: status.label for status in Status if status.label != status.value}


def require(status: Status, allowed: tuple[Status, ...]) -> None:
    """Raise the ValueError msgspec reports with the field's path when `status` is not one of `allowed`."""
    if status not in allowed:
        raise ValueError(f"status: unknown status {status.value!r} (expected {', '.join(s.value for s in allowed)})")
