"""A ``sasl_oauth_token_provider`` for Amazon MSK with IAM access control.

The routing file::

    [kafka]
    bootstrap_servers = "b-1.mycluster.abc123.c2.kafka.eu-west-1.amazonaws.com:9098"
    security_protocol = "SASL_SSL"
    sasl_mechanism = "OAUTHBEARER"
    sasl_oauth_token_provider = "examples.msk_iam:provider"

Install the signer with ``pip install restate-kafka-bridge[msk]``
(``aws-msk-iam-sasl-signer-python``). It signs with the credentials boto3 finds (environment,
profile, an EKS pod identity or instance role); the region comes from ``AWS_REGION`` (or
``AWS_DEFAULT_REGION``). Each token is a presigned request valid for 15 minutes; the bridge
refreshes it at about 12.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from aws_msk_iam_sasl_signer import MSKAuthTokenProvider


def provider() -> Callable[[], tuple[str, int]]:
    """Called once when the bridge starts: returns the function called for each token."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise RuntimeError("set AWS_REGION to the MSK cluster's region")

    def token() -> tuple[str, int]:
        # (token, expiry in epoch milliseconds): the bridge reads both forms of expiry
        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
        return token, expiry_ms

    return token
