"""Policies (ASGF-Nav, its ablations, the AV-Nav baseline) and their building blocks.

The names below are loaded on first use: importing a torch-free module of the package (``models.doa.config``)
does not import the policies, and torch with them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asgf_nav.models.policies import POLICY_REGISTRY, Policy, build_policy, count_parameters, register_policy

__all__ = ["POLICY_REGISTRY", "Policy", "build_policy", "count_parameters", "register_policy"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("asgf_nav.models.policies"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:  # the lazy names too: tab completion and help() list them
    return sorted(set(globals()) | set(__all__))
