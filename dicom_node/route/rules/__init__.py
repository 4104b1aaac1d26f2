"""Routing rules: which series of a study feed which pipeline, and where results go."""

from dicom_node.route.rules.ruleset import (
    RulesConfigError,
    RuleSet,
    StudyRoute,
    default_rules_path,
    load_rules,
    loads_rules,
    rules_test_main,
)

__all__ = ["RulesConfigError", "RuleSet", "StudyRoute", "default_rules_path", "load_rules",
           "loads_rules", "rules_test_main"]
