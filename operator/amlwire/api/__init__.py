"""Typed models of amlwire's custom resources: the one source of the CRDs under crds/."""

from amlwire.api.amljob import AmlJob, AmlJobSpec, AmlJobStatus
from amlwire.api.attachedcompute import AttachedCompute, AttachedComputeSpec, AttachedComputeStatus
from amlwire.api.common import GROUP, VERSION, Condition

__all__ = [
    "GROUP",
    "VERSION",
    "AmlJob",
    "AmlJobSpec",
    "AmlJobStatus",
    "AttachedCompute",
    "AttachedComputeSpec",
    "AttachedComputeStatus",
    "Condition",
]
