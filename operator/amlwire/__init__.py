"""amlwire: wire AKS into Azure Machine Learning with keyless workload identity, and run jobs on it."""

__version__ = "0.1.0"
