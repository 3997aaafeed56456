# The documentation of the probe action plugin (plugins/action/probe.py): it runs on the controller.

DOCUMENTATION = r"""
module: probe
short_description: compare a value a host reports with the expected one (an AUDIT control)
description:
  - Compares O(observed) with O(expected) by O(comparison). Runs on the controller
    and never changes the host.
  - Returns C(changed=true) exactly when the host is not compliant, so in check
    mode C(changed) means drift, as for the PATCH tasks; the control_report
    callback puts C(evidence) in the audit report.
  - Numbers given as strings (command output) compare as numbers.
version_added: "0.1.0"
options:
  observed:
    description: What the host reports (a registered value, a fact, command output).
    type: raw
    required: true
  expected:
    description: What the control requires.
    type: raw
    required: true
  comparison:
    description:
      - C(eq), C(ne), C(lt), C(le), C(gt), C(ge) (numbers); C(in), C(not_in) (observed is
        one of expected); C(contains), C(not_contains) (observed holds expected);
        C(regex), C(not_regex) (a search in observed); C(subset) (every item of observed
        is in expected), C(superset) (observed has every item of expected).
    type: str
    default: eq
    choices: [eq, ne, lt, le, gt, ge, in, not_in, contains, not_contains, regex, not_regex,
              subset, superset]
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: ClinChat Appliance
"""

EXAMPLES = r"""
- name: "CLINCHAT-APP-2 | AUDIT | Idle logoff is at most 15 minutes"
  clinchat.appliance.probe:
    observed: "{{ __app_runtime.session_idle_timeout_s }}"
    expected: 900
    comparison: le
  tags: [clinchat_app_2, hipaa_164.312.a.2.iii]
"""

RETURN = r"""
compliant:
  description: Whether the comparison holds.
  type: bool
  returned: success
evidence:
  description: The observed and expected values and the comparison, for the report.
  type: dict
  returned: always
"""
