"""The sandbox's routes, one module per Azure service; importing this package registers them all."""

from amlwire_sandbox.routes import aks, aml, authz, control, entra, jobs, msi

__all__ = ["aks", "aml", "authz", "control", "entra", "jobs", "msi"]
