"""Adapters: the Azure SDKs and the Kubernetes API behind the ports that reconcile/ uses."""
