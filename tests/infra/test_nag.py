"""cdk-nag's AwsSolutions pack: no unacknowledged finding, every acknowledgment answers a real finding, and no
CDK error or warning annotation.

cdk-nag 3 runs as a CDK validation plugin (`Validations.of(app).add_plugins(AwsSolutionsChecks(app))`): it adds
no annotations, its findings land in the cloud assembly's `validation-report.json`, which is what `cdk synth`
reads to fail. Acknowledgments are `Validations.of(construct).acknowledge(...)` (infra/nag.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aws_cdk import assertions

from infra import nag
from tests.infra.conftest import (
    NAG_CANARY_BUCKET,
    NAG_CANARY_STACK,
    VARIANT_CONTEXT,
    Synthesized,
    synthesize,
)


def _outside_canary(findings: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(rule, path) for rule, path in findings if not path.startswith(f"{NAG_CANARY_STACK}/")]


def test_nag_runs_on_the_app_build_app_makes(synthesized: Synthesized) -> None:
    """The canary stack's deliberate finding is reported: the pack is registered and the report is read right."""
    assert ("AwsSolutions-S1", f"{NAG_CANARY_STACK}/{NAG_CANARY_BUCKET}/Resource") in synthesized.validation_findings


@pytest.mark.parametrize("which", ["synthesized", "variant"])
def test_no_unacknowledged_findings(which: str, request: pytest.FixtureRequest) -> None:
    app: Synthesized = request.getfixturevalue(which)
    assert _outside_canary(app.validation_findings) == []


@pytest.mark.parametrize("which", ["synthesized", "variant"])
def test_no_cdk_errors_or_warnings(which: str, request: pytest.FixtureRequest) -> None:
    app: Synthesized = request.getfixturevalue(which)
    annotations = assertions.Annotations.from_stack(app.stack)
    assert annotations.find_error("*", assertions.Match.any_value()) == []
    assert annotations.find_warning("*", assertions.Match.any_value()) == []


def test_every_acknowledgment_answers_a_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Synthesized with every acknowledgment recorded instead of made (the variant, which has them all): each
    one must match a finding on its construct or below, and every finding must have one."""
    placed: list[tuple[str, str]] = []

    def record(scope: object, rule: str, reason: str, finding: str | None = None) -> None:
        assert reason.strip(), f"{rule} acknowledged without a reason"
        placed.append((scope.node.path, f"{nag.PACK}-{rule}" + (f"[{finding}]" if finding else "")))  # type: ignore[attr-defined]

    monkeypatch.setattr(nag, "acknowledge", record)
    findings = synthesize(VARIANT_CONTEXT, tmp_path).validation_findings

    def covers(ack: tuple[str, str], found: tuple[str, str]) -> bool:
        (scope, rule), (found_rule, path) = ack, found
        return rule == found_rule and (path == scope or path.startswith(f"{scope}/"))

    assert findings, "nothing found with no acknowledgment at all: the pack did not run"
    assert sorted({ack for ack in placed if not any(covers(ack, f) for f in findings)}) == []
    assert [f for f in findings if not any(covers(ack, f) for ack in placed)] == []
