"""clinchat.appliance.probe: compare what a host reports with what is expected.

Runs on the controller (nothing is sent to the host, nothing on it changes).
Non-compliant is reported as changed, so a --check run reads "changed" as
drift for AUDIT probes exactly as for PATCH tasks.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase
from ansible_collections.clinchat.appliance.plugins.plugin_utils.comparisons import (
    COMPARISONS,
    ComparisonError,
    compare,
)

ARGUMENT_SPEC = {
    "observed": {"type": "raw", "required": True},
    "expected": {"type": "raw", "required": True},
    "comparison": {"type": "str", "default": "eq", "choices": list(COMPARISONS)},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        observed, expected, comparison = args["observed"], args["expected"], args["comparison"]
        evidence = {"observed": observed, "expected": expected, "comparison": comparison}
        try:
            compliant = compare(observed, expected, comparison)
        except ComparisonError as exc:
            result.update(failed=True, msg=f"cannot compare: {exc}", evidence=evidence)
            return result
        result.update(
            changed=not compliant,
            compliant=compliant,
            evidence=evidence,
            msg=("compliant" if compliant else "DRIFT")
            + f": observed {observed!r} {comparison} expected {expected!r}",
        )
        return result
