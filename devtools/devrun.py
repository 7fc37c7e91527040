"""``make run``: the services and the Graph API stand-in on the local stack, plus a demo crisis.

Starts ingest (:8080), archiver (:8081), retention (:8082), the review console (:8083), the relay (ops :8086)
feeding the company's "existing inbox" (devtools/inbox.py, :8087) and the local Graph API stand-in (:8099) as
processes with deploy/local/demo.env, replays the bundled sample webhooks
(tests/data/whatsapp), a conversation whose message is then deleted for everyone and the crisis of
devtools/demo_crisis.py, and prints where to look and how to sign in (the demo tokens, and the people of the local
identity provider, Keycloak, which ``make run`` starts with the stack). Ctrl-C or SIGTERM stops every process it
started (tests/e2e/test_devrun.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from devtools.demo_crisis import CAMILLE, LEA, SEARCH_KEYWORD, crisis_webhooks
from devtools.demo_media import with_demo_media
from devtools.samples import PAYLOADS_DIR, REPO_ROOT, load_demo_env
from services.core.published import LOCAL_DEMO_FLAG
from services.tools.loadgen import webhook_body
from services.tools.replay import load_bodies, post_signed, replay

DEMO_PHONE_NUMBER_ID = "106540352242922"
DEMO_CONTACT = "16505559876"
KEYCLOAK_REALM_FILE = REPO_ROOT / "deploy" / "local" / "keycloak" / "wa-archive-realm.json"


@dataclass(frozen=True, kw_only=True)
class DemoPerson:
    """A person of the local identity provider's demo realm, as the banner shows them."""

    username: str
    name: str
    role: str
    password: str
    totp_secret: str | None


def demo_people(env: Mapping[str, str], realm_file: Path = KEYCLOAK_REALM_FILE) -> list[DemoPerson]:
    """The people of the demo realm: their names and groups from the realm file, the archive role their groups'
    realm roles map to (WA_CONSOLE_OIDC__ROLE_MAP), their password and TOTP secret from demo.env."""
    realm = json.loads(realm_file.read_text(encoding="utf-8"))
    roles_of_group = {f"/{g['name']}": g.get("realmRoles", []) for g in realm.get("groups", [])}
    role_map: dict[str, str] = json.loads(env["WA_CONSOLE_OIDC__ROLE_MAP"])
    passwords: dict[str, str] = json.loads(env["WA_KEYCLOAK_DEMO_PASSWORDS"])
    totp_secrets: dict[str, str] = json.loads(env["WA_KEYCLOAK_DEMO_TOTP_SECRETS"])
    people = []
    for user in realm["users"]:
        if "serviceAccountClientId" in user:
            continue
        granted = {role_map[r] for g in user.get("groups", []) for r in roles_of_group.get(g, []) if r in role_map}
        people.append(
            DemoPerson(
                username=user["username"],
                name=f"{user.get('firstName', '')} {user.get('lastName', '')}".strip(),
                role="dpo" if "dpo" in granted else "reader" if "reader" in granted else "none",
                password=passwords[user["username"]],
                totp_secret=totp_secrets.get(user["username"]),
            )
        )
    return people


def identity_provider_banner(env: Mapping[str, str]) -> str:
    """The banner's lines on the local identity provider: where it is and who can sign in."""
    issuer = f"{env['WA_KEYCLOAK_URL']}/realms/{env['WA_KEYCLOAK_REALM']}"
    lines = [
        f"  identity provider {issuer}  (Keycloak; its admin console {env['WA_KEYCLOAK_URL']}/admin/ as "
        f"{env['WA_KEYCLOAK_ADMIN_USER']} / {env['WA_KEYCLOAK_ADMIN_PASSWORD']})",
        "  people            (demo only; the DPOs' second factor: a TOTP app with the secret shown, for the step-up)",
    ]
    for person in demo_people(env):
        second = f"  TOTP {person.totp_secret}" if person.totp_secret else ""
        lines.append(f"    {person.username:<13} {person.name:<16} {person.role:<6} {person.password}{second}")
    return "\n".join(lines) + "\n"


def demo_env() -> dict[str, str]:
    """deploy/local/demo.env, and the flag that lets the services start with its published secrets: set here, not
    in the file, so that a Secret seeded from the file is still refused (services/core/published.py)."""
    return {**load_demo_env(), LOCAL_DEMO_FLAG: "1"}


def deleted_message_demo() -> list[bytes]:
    """A customer writes, then deletes the message for everyone (Coexistence `revoke`)."""
    now = int(time.time())

    def webhook(message: dict[str, object]) -> bytes:
        value: dict[str, object] = {
            "contacts": [{"profile": {"name": "Demo Customer"}, "wa_id": DEMO_CONTACT}],
            "messages": [message],
        }
        return webhook_body("102290129340398", DEMO_PHONE_NUMBER_ID, value, display_phone_number="15550783881")

    original = f"wamid.DEMO-ORIGINAL-{now}"
    return [
        webhook(
            {
                "from": DEMO_CONTACT,
                "id": original,
                "timestamp": str(now - 30),
                "type": "text",
                "text": {"body": "I confirm the order of 40 units, ship to the warehouse on Friday."},
            }
        ),
        webhook(
            {
                "from": DEMO_CONTACT,
                "id": f"wamid.DEMO-REVOKE-{now}",
                "timestamp": str(now),
                "type": "revoke",
                "revoke": {"original_message_id": original},
            }
        ),
    ]


def service_commands(graph_token: str) -> dict[str, list[str]]:
    """The processes of the local system: the Graph API stand-in (port 8099, serving the sample media) and the
    three services, each ``python -m`` with the environment it is started with."""
    return {
        "graph-api": [
            sys.executable,
            "-m",
            "devtools.graph_api",
            "--port",
            "8099",
            f"--token={graph_token}",  # one argument: a token may begin with "-"
            "--seed",
            str(PAYLOADS_DIR),
        ],
        "ingest": [sys.executable, "-m", "services.ingest"],
        "gateway": [sys.executable, "-m", "services.gateway"],
        "archiver": [sys.executable, "-m", "services.archiver"],
        "retention": [sys.executable, "-m", "services.retention"],
        "console": [sys.executable, "-m", "services.console"],
    }


def relay_commands(app_secret: str) -> dict[str, list[str]]:
    """The relay and the company's "existing inbox" it feeds (devtools/inbox.py, port 8087, verifying Meta's
    signature with ``app_secret``): ``make run`` only, the e2e tests of the pipeline leave them out."""
    return {
        "inbox": [sys.executable, "-m", "devtools.inbox", "--port", "8087", f"--secret={app_secret}"],
        "relay": [sys.executable, "-m", "services.relay"],
    }


def apply_migrations(env: Mapping[str, str]) -> None:
    """``wa-archive migrate`` as the schema's owner (WA_MIGRATOR_PG__DSN), before any service starts: the services
    connect as roles that may not migrate, and wait for the schema their code needs."""
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "migrate"],
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"wa-archive migrate failed:\n{result.stderr.decode(errors='replace')}")


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], timeout_s: float = 90) -> None:
    """SIGTERM to every process still running, then wait for each (the services drain); kill what outlives it."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_ready(url: str, name: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} did not become ready at {url} within {timeout_s:.0f}s (see .stack/logs/{name}.log)")


async def run_demo(env: dict[str, str]) -> None:
    secret = orjson.loads(env["WA_INGEST_APP_SECRETS"])[0].encode()
    url = "http://127.0.0.1:8080/webhooks/whatsapp"
    report = await replay(load_bodies([PAYLOADS_DIR], transform=with_demo_media), url=url, app_secret=secret)
    print(f"replayed {report.sent} sample webhooks: {report.acknowledged} acknowledged by ingest (Kafka acks=all)")
    async with httpx.AsyncClient(timeout=10) as client:
        for body in deleted_message_demo():
            await post_signed(client, url, body, secret)
        print("sent a customer message and its deletion for everyone")
        crisis = crisis_webhooks(int(time.time()))
        answers = [await post_signed(client, url, body, secret) for body in crisis]
    acknowledged = sum(1 for status in answers if 200 <= status < 300)
    print(
        f"sent the crisis for the review console, archived within seconds ({acknowledged}/{len(crisis)} webhooks "
        f"acknowledged): {CAMILLE.name}'s deleted order, an edited price, {LEA.name}'s deleted photo; "
        f'search "{SEARCH_KEYWORD}"'
    )
    open_demo_case(env)


# Readers read the custodians of the cases assigned to them (services/governance/scope.py): the demo's readers review
# the demo business number's case, which `make run` opens once (a second run finds it open).
DEMO_CASE_REF = "DEMO-CRISIS"


def open_demo_case(env: Mapping[str, str]) -> None:
    command = [
        sys.executable,
        "-m",
        "services.cli",
        "case",
        "open",
        "--ref",
        DEMO_CASE_REF,
        "--title",
        "The demo crisis",
        "--number",
        DEMO_PHONE_NUMBER_ID,
        "--reviewer",
        "demo-reader",
        "--reviewer",
        "reader.chloe",  # the realm's reader (deploy/local/keycloak); reader.driss has no case: break-glass
    ]
    opened = subprocess.run(command, cwd=REPO_ROOT, env=dict(env), capture_output=True, text=True, check=False)
    if opened.returncode == 0:
        print(f"opened the case {DEMO_CASE_REF} of the demo business number, reviewed by reader.chloe and demo-reader")
    elif "taken" in opened.stderr or "exists" in opened.stderr:
        print(f"the case {DEMO_CASE_REF} is open already: its reviewers read the demo business number")
    else:
        print(f"could not open the demo case (demo-reader will find nothing): {opened.stderr.strip()[-300:]}")


def main() -> None:
    # SIGTERM (a supervisor, `kill`, a test) stops everything as Ctrl-C does: without it the driver would die and
    # leave its children running, since only a terminal sends SIGINT to the whole process group.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    env = {**os.environ, **demo_env()}
    # The demo policy: the seed's sensitive messages are held for approval (not in demo.env, which the tests and
    # the benchmarks read too: their sends are judged by policies of their own, or none).
    env.setdefault("WA_GATEWAY_POLICY_DIR", str(REPO_ROOT / "deploy" / "local" / "policies"))
    logs = REPO_ROOT / ".stack" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    commands = {
        **service_commands(env["WA_ARCHIVER_GRAPH__TOKEN"]),
        **relay_commands(orjson.loads(env["WA_INGEST_APP_SECRETS"])[0]),
    }
    apply_migrations(env)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            handle = (logs / f"{name}.log").open("ab")
            processes[name] = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        wait_ready("http://127.0.0.1:8080/readyz", "ingest")
        wait_ready("http://127.0.0.1:9086/readyz", "gateway")  # its ops port: every path of 8084 is the Graph API's
        wait_ready("http://127.0.0.1:8081/readyz", "archiver")
        wait_ready("http://127.0.0.1:8082/readyz", "retention")
        wait_ready("http://127.0.0.1:9083/readyz", "console")  # its ops port: probes and metrics
        wait_ready("http://127.0.0.1:8086/readyz", "relay")
        asyncio.run(run_demo(env))
        print(
            "\nwa-archive is running (logs in .stack/logs/):\n"
            "  webhook URL      http://127.0.0.1:8080/webhooks/whatsapp  (secrets: deploy/local/demo.env)\n"
            "  send gateway     http://127.0.0.1:8084  (your Graph API base URL: POST /v21.0/"
            f"{DEMO_PHONE_NUMBER_ID}/messages is archived,\n"
            "                   then sent to the Graph API stand-in; bearer demo-graph-token-local-only)\n"
            "                   sensitive sends (offre spéciale, promotion, a refund, '49,90 €', an IBAN) are held\n"
            "                   for approval, answered held_for_quality_assessment (policy: deploy/local/policies/)\n"
            "  review console   http://127.0.0.1:8083/  sign in as demo-reader / demo-reader-token-local-only\n"
            '                   (or demo-dpo / demo-dpo-token-local-only for the DPO pages); search "commande"\n'
            "                   demo-dpo-2 / demo-dpo-2-token-local-only approves what demo-dpo requests (four eyes)\n"
            "  admin API        http://127.0.0.1:8082/v1/  (documentation: http://127.0.0.1:9082/docs)\n"
            "  existing inbox   http://127.0.0.1:8087/webhooks/whatsapp  fed by the relay (metrics :8086/metrics);\n"
            "                   it verifies Meta's signature and logs counts: .stack/logs/inbox.log\n"
            "  Prometheus       http://127.0.0.1:9090/graph?g0.expr=wa_archive%3Astaleness_seconds\n"
            + identity_provider_banner(env)
            + "\nThe deleted message, with the deletion beside it (a reason is required and audited):\n"
            f"  set -a; . deploy/local/demo.env; set +a; export {LOCAL_DEMO_FLAG}=1\n"
            f"  .venv/bin/wa-archive messages --phone-number-id {DEMO_PHONE_NUMBER_ID} --contact {DEMO_CONTACT} "
            '--reason "demo: disputed order"\n'
            "  .venv/bin/wa-archive replay tests/data/whatsapp --app-secret demo-app-secret-local-only\n"
            "\nCtrl-C stops the services (make stack-down stops the servers)."
        )
        while all(p.poll() is None for p in processes.values()):
            time.sleep(0.5)
        dead = [name for name, p in processes.items() if p.poll() is not None]
        raise SystemExit(f"{', '.join(dead)} exited; see .stack/logs/")
    except KeyboardInterrupt:
        print("\nstopping…")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # already stopping: a second SIGTERM must not cut it short
        stop_processes(processes.values())


if __name__ == "__main__":
    main()
