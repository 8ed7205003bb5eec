"""azure-identity in the sandbox: the two credentials amlwire's model download picks between."""


class ManagedIdentityCredential:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class WorkloadIdentityCredential:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
