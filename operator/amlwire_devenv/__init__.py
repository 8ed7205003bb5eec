"""Local development environment: a real kube-apiserver (+etcd) and the Azure sandbox, for tests and the demo.

Nothing in the operator imports this package.
"""
