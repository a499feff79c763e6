"""Research: experiments that train, validate and promote the models the service serves."""
