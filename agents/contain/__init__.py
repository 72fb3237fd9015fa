"""Containment: the site policy enforced on a forwarding gateway with nftables (docs/containment.md).

- ``plan``: what is contained and where watched devices may go, decided from the site policy (sans-I/O);
- ``render``: the plan as one `nft -f` script for the table ``inet camwatch`` (sans-I/O);
- ``nft``: running nft (check, load, read the table back) and the CAP_NET_ADMIN check;
- ``quarantine``: the quarantine book (escalation, cap, never-block), ``audit``: the audit log,
  ``files``: their paths and the lock;
- ``control``: every change, under the lock and audited (shared by the agent and the CLI);
- ``agent``: containment inside `camwatch run`; ``metrics``: its collector;
- ``cli``: `camwatch contain`; ``dns``: the resolver sinkhole (RPZ, unbound, dnsmasq).
"""
