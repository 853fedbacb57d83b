"""Rules: benchmarks, the dynamic allocation factor, supply-chain coupling and responsibility
factors, allocation runs, SME sub-quota splitting. See docs/RULES.md."""

from .module import DEFAULT_PARAMS, RulesModule

__all__ = ["RulesModule", "DEFAULT_PARAMS"]
