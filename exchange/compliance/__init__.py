"""MRV and compliance settlement: activity data, verification, obligations, surrender of
allowances and capped offsets, operator-tuned offset caps, deadline processing, statements.

See docs/COMPLIANCE.md and docs/adr/0005-compliance.md.
"""

from .module import ComplianceModule

__all__ = ["ComplianceModule"]
