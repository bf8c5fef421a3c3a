"""Policies (ASGF-Nav, its ablations, the AV-Nav baseline) and their building blocks."""

from asgf_nav.models.policies import (
    POLICY_REGISTRY,
    Policy,
    build_policy,
    count_parameters,
    register_policy,
)

__all__ = ["POLICY_REGISTRY", "Policy", "build_policy", "count_parameters", "register_policy"]
