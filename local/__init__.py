"""The local stack: the whole system on one machine against a moto server, no AWS account, no GPU."""
