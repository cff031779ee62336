"""`python -m cz_pipeline.sandbox [--demo] [--host H] [--close-port P] [--zoho-port P] [--desk-port P]
[--salesforce-port P] [--smtp-port P] [--mbox FILE]`

Serves the vendor fakes on loopback until interrupted. `--demo` uses the fixed ports the demo
tenants file points at and mutates a few records in the background (`--mutate-every` seconds),
so a routine sync left running in the UI always has something to pick up. An SMTP sink takes
the notifications (`--mbox` keeps them in a file).
"""

from __future__ import annotations

import argparse
import random
import signal
import threading

from .close import CloseSandbox
from .salesforce import SalesforceSandbox
from .server import RunningSandbox
from .teamwork_desk import TeamworkDeskSandbox

DEMO_PORTS = {"close": 8701, "zoho": 8702, "desk": 8703, "salesforce": 8704}
DEMO_SMTP_PORT = 8725  # demo/env.sh points CZ_SMTP_URL here


def demo_ticket_emails(close: CloseSandbox, rng: random.Random, n: int = 12) -> list[str]:
    """Helpdesk customers drawn from the contacts of synced (Customer/Trial) leads, so most
    tickets match; the Teamwork fake adds a few unknown addresses of its own."""
    synced = {lead["id"] for lead in close.dump("lead") if lead["status_label"] in ("Customer", "Trial")}
    emails = sorted({e["email"] for c in close.dump("contact") if c["lead_id"] in synced
                     for e in c.get("emails", []) if e.get("email")})
    return rng.sample(emails, min(n, len(emails)))


def mutate_forever(close: CloseSandbox, every: float, stop: threading.Event) -> None:
    rng = random.Random(7)
    while not stop.wait(every):
        leads = close.dump("lead")
        if leads:
            lead = rng.choice(leads)
            close.mutate({"op": "update", "object": "lead", "id": lead["id"],
                          "data": {"description": f"touched by the demo at {close.now().isoformat()}"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--close-port", type=int, default=None)
    parser.add_argument("--zoho-port", type=int, default=None)
    parser.add_argument("--desk-port", type=int, default=None)
    parser.add_argument("--salesforce-port", type=int, default=None)
    parser.add_argument("--mutate-every", type=float, default=60.0)
    parser.add_argument("--smtp-port", type=int, default=None)
    parser.add_argument("--mbox", default=None, help="append every mail the SMTP sink receives to this mbox file")
    args = parser.parse_args()
    ports = {k: (getattr(args, f"{k}_port") or (v if args.demo else 0)) for k, v in DEMO_PORTS.items()}

    close = CloseSandbox()
    servers = {"close": (RunningSandbox(close, args.host, ports["close"]), "/api/v1")}
    try:
        from .zoho_crm import ZohoSandbox

        servers["zoho"] = (RunningSandbox(ZohoSandbox(), args.host, ports["zoho"]), "/crm/v8")
    except ImportError:  # pragma: no cover - while the Zoho fake is not built
        pass
    desk = TeamworkDeskSandbox(customer_emails=demo_ticket_emails(close, random.Random(3)))
    servers["desk"] = (RunningSandbox(desk, args.host, ports["desk"]), "/desk/api/v2")
    servers["salesforce"] = (RunningSandbox(SalesforceSandbox(), args.host, ports["salesforce"]), "/services/data")
    for name, (server, prefix) in servers.items():
        print(f"sandbox {name}: {server.url}{prefix}", flush=True)
    from .mail import MailSink

    mail = MailSink(args.host, args.smtp_port or (DEMO_SMTP_PORT if args.demo else 0), args.mbox)
    print(f"sandbox smtp: {mail.url}" + (f" (mails in {args.mbox})" if args.mbox else ""), flush=True)

    stop = threading.Event()
    if args.demo and args.mutate_every > 0:
        threading.Thread(target=mutate_forever, args=(close, args.mutate_every, stop), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for server, _ in servers.values():
            server.stop()
        mail.stop()


if __name__ == "__main__":
    main()
