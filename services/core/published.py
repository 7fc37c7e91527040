"""Secrets the repository publishes, and the rule that keeps them out of a deployment.

``deploy/local/demo.env`` publishes a KEK, a pepper, Meta app secret, webhook and outbound tokens, admin tokens,
S3, PostgreSQL and Kafka credentials, a Graph API token and the local identity provider's secrets (Keycloak's client
secrets, its administrator's and the demo people's passwords and TOTP secrets), so that ``make run`` is one command.
Anyone can read them, so a service that finds one of them in its configuration refuses to start (exit 2, with what
to do) unless the environment says it is a local demo (``WA_LOCAL_DEMO=1``). Only ``make run`` (devtools/devrun.py),
the test suite (tests/conftest.py) and the benchmarks (bench/common.py) set that flag; ``demo.env`` itself does not,
so a Kubernetes Secret seeded from that file is still refused.

The values are held as SHA-256 digests, not in clear, and tests/unit/test_published.py recomputes them from
``demo.env`` so that the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

LOCAL_DEMO_FLAG: Final = "WA_LOCAL_DEMO"

# SHA-256 of each secret value of deploy/local/demo.env (a PostgreSQL DSN is compared by its password).
PUBLISHED_SHA256: Final = frozenset(
    {
        "0d1ab40b463bae703e1576cca9562421e0ad670184589fa89d2a115a3c2a4ca7",  # WA_S3_SECRET_KEY
        "713258bdfd8985b832912d6f0de673d9d4fb706cc2acd7ad259adb16108f1823",  # WA_PG_PASSWORD (in the DSNs)
        "f440d0dd447d403ec0c87ab2bf76d2b064937b7244e0a1ec6064e663031bb781",  # WA_INGEST_APP_SECRETS
        "617c6b73f31c74ddba0b33119321a717888d5f263dbb83bbcd31e8710c8eb2e2",  # WA_INGEST_VERIFY_TOKEN
        "02852d54f2c37b2d3eeb008fd9b82d2d050a0ea4c4d7fd1388e60056a1ee07b4",  # WA_INGEST_OUTBOUND_TOKENS
        "651440861125ee1fc6465d4c0c0dc6d233a7b49b292d1f3024ae3b798fd22ecc",  # KEK local-2026
        "69601a1361fa10542980e6e6889afa8bbd6a012340e16459ca12fc4ada4e9108",  # pepper
        "7d12412c8f1072867a3608487e502ebcdc6ef3562101553659f2f10d26c0e406",  # WA_ARCHIVER_GRAPH__TOKEN
        "53dca5550e241d2e0369d53c8682027c8ce31d4cd24a1ea50607d6e536ec40b3",  # admin token demo-reader
        "c9d4b555e5c24f7cd9771accdba7c13f8d8ba46e1169720f4259e4de50ac9171",  # admin token demo-dpo
        "3e80772ba739f2596462017d5297433f1d53899be54d374d155cdde1d4e4ae64",  # admin token demo-dpo-2 (four eyes)
        "047ea87d7d491f04e4d90721f463951e801e11a2be45db16d6e6ef521f52aa6c",  # WA_ARCHIVER_S3__SECRET_KEY
        "6be6b51ca3c3a584a79ba7f88bae2d50c24eb2045d6502ce2934ad3702ef469c",  # WA_ARCHIVER_PG__DSN's password
        "845334103fd2bbf1a8ba1962693d8f5ed0c4fcfe283a3ee6b1e0fd8acb555472",  # WA_RETENTION_S3__SECRET_KEY
        "bb07ccdbd9458dec75fe57fdc37909c1fbe7412d7949b4b3fc7f60e818959465",  # WA_RETENTION_PG__DSN's password
        "08a984544e0b25ec2d35fb69723dbdf0a9659b73b76b02ab08ff3c9187aa9d37",  # WA_CONSOLE_S3__SECRET_KEY
        "a80e36c2fb4e27a949ca0853b5c020b2febe89b6234ccac149bfd11825dd21b8",  # WA_CONSOLE_PG__DSN's password
        "058b7e585ab39201757d5ac660f7f606dc138b91bf3537b5ac19db279d8459e8",  # WA_INGEST_KAFKA__SASL_PASSWORD
        "b59fb9464cefb04fa8b168bd75678cccef2db3ae99799ddae7e63d08dc36d3c7",  # WA_ARCHIVER_KAFKA__SASL_PASSWORD
        "ee112be296311862b065de4abb73ae1970a81e0647da32f2e5fc620220451aad",  # WA_RELAY_KAFKA__SASL_PASSWORD
        "40925b7b742c35c2105be9d039ac3fb9a069be14142493c1b7dfb4acd7b8370a",  # WA_GATEWAY_KAFKA__SASL_PASSWORD
        "d691d684a4ec5c596468916c176000c8dc493abf96811708806d5527197f2378",  # WA_RETENTION_KAFKA__SASL_PASSWORD
        "1b2224ef74639c99d4d7117c551f7586d4137c486dcaaa0f8650f7742c5f81d4",  # WA_PGBACKUP_S3_SECRET_KEY
        "e9ca3499afcf065a66fdcd2269c9e6729463554051ce5f1dafc911f982d6cc59",  # WA_PGBACKUP_PG__DSN's password
        "77f0ec458c0aa4d277d657368c40d3513d5c6a14b7366a85e1146838f10fc78d",  # WA_RETENTION_EXPORT_SIGNING__KEY
        "a57ad421ddd47e422b9228d1475286455d97620da75dd491e407c654d658d100",  # WA_RETENTION_SIGNING__PRIVATE_KEY
        "2f06941fede16f301f7874641145034fca89ae03f7d6481d33bd91b0491958be",  # WA_CONSOLE_OIDC__CLIENT_SECRET
        "29b150e98f1410d0323af7da1d3287ec42ed47c0e7e93a7d7731cfae2085133f",  # WA_KEYCLOAK_API_CLIENT_SECRET
        "9c77d37f06a173a624bacf34eae019fa3d21911dfc891dc8478fa5bac56fb283",  # WA_KEYCLOAK_ADMIN_PASSWORD
        "028be07f5353f307fa54d8322119ad47dec21f96a4ea6acd772aba9747e243da",  # WA_KEYCLOAK_DEMO_PASSWORDS dpo.alice
        "50d4652ddca0e7647b3e951c88716603f4fde956e1d8ff03dd711bb71d290599",  # WA_KEYCLOAK_DEMO_PASSWORDS dpo.bruno
        "f1546b31db87a9cb1b0c6bfca959696ff5e4cf11be9344eb21ac305c313f978d",  # WA_KEYCLOAK_DEMO_PASSWORDS reader.chloe
        "1974c5da2f397d4aa8e6c00a28a137fe16ec2beb98bb5596d876a6a85a723065",  # WA_KEYCLOAK_DEMO_PASSWORDS reader.driss
        "50abd6747ec1b558fa17f1dae1915c86bb8ac932ff0d92220f87d2c8828fd17f",  # WA_KEYCLOAK_DEMO_TOTP_SECRETS dpo.alice
        "64986c658f594b422d5e0eb988238363380224565f8630e69b2256f0cbf6636c",  # WA_KEYCLOAK_DEMO_TOTP_SECRETS dpo.bruno
    }
)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def is_published(value: str) -> bool:
    """True when ``value`` (or, for a URL such as a DSN, its password) is a secret the repository publishes."""
    candidates = [value.strip()]
    if "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        if password:
            candidates.append(password)
    return any(digest(candidate) in PUBLISHED_SHA256 for candidate in candidates)


def local_demo(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment says this is a local demo (``WA_LOCAL_DEMO=1``), where published secrets are
    allowed."""
    return (os.environ if environ is None else environ).get(LOCAL_DEMO_FLAG) == "1"


def _secrets(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every SecretStr inside a settings value, with the field path that holds it (dict keys and list positions
    are not part of the path: the environment variable is the field's)."""
    if isinstance(value, SecretStr):
        yield path, value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets(getattr(value, name), (*path, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets(item, path)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secrets(item, path)


def published_settings(settings: BaseModel, env_prefix: str) -> list[str]:
    """The environment variables of ``settings`` whose value is a published secret, in field order."""
    names: list[str] = []
    for path, secret in _secrets(settings, ()):
        name = env_prefix + "__".join(path).upper()
        if is_published(secret) and name not in names:
            names.append(name)
    return names


def refusal(names: list[str]) -> str:
    """What a person reads when a service refuses to start on published secrets: which variables, and what to do."""
    listed = "\n".join(f"  {name}" for name in names)
    return (
        "refusing to start: these settings hold secrets published in the repository (deploy/local/demo.env), "
        f"which anyone can read:\n{listed}\n"
        "Generate new values and put them in the service's Secret: a token with "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`, a KEK or the pepper with "
        "`openssl rand -base64 32` (docs/OPERATIONS.md, 'Secrets').\n"
        f"For a local demo on this machine only, set {LOCAL_DEMO_FLAG}=1 (make run, the tests and the benchmarks do)."
    )
