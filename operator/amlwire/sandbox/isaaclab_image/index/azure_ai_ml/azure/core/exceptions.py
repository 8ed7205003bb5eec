class ClientAuthenticationError(Exception):
    pass
