"""Routing rules: which series of a study feed which pipeline, and where results go.

Modules: :mod:`.schema` (routing.yaml schema, line-numbered errors), :mod:`.conditions`
(conditions and matchers), :mod:`.ruleset` (compiled rules, matching), :mod:`.load`
(routing.yaml to a rule set). The ``rules test`` command is :mod:`dicom_node.cli.rules_test`.
"""

from dicom_node.route.rules.load import default_rules_path, load_rules, loads_rules
from dicom_node.route.rules.ruleset import RuleSet, StudyRoute
from dicom_node.route.rules.schema import RulesConfigError

__all__ = ["RulesConfigError", "RuleSet", "StudyRoute", "default_rules_path", "load_rules",
           "loads_rules"]
