"""Pure rules of link previews: which incident a link posted in chat is about.

Recognised: the bridge's own incident links (`<BRIDGE_PUBLIC_URL>/incidents/<ref>`), an alert's
source link (its `generatorURL`: Prometheus graph, Grafana rule), and Alertmanager links that
filter on an alertname (`.../#/alerts?filter={alertname="DiskFull"}`).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from bridge.model import Incident

_ALERTNAME = re.compile(r'alertname\s*=~?\s*"?([^",}]+)"?')


def linked_ref(url: str, public_url: str | None) -> str | None:
    """The ref in a link to the bridge's own page of an incident (read by its ref alone)."""
    if public_url and url.startswith(f"{public_url}/incidents/"):
        return url.removeprefix(f"{public_url}/incidents/").split("?")[0].strip("/")
    return None


def incident_for(url: str, incidents: list[Incident], public_url: str | None) -> Incident | None:
    """The incident `url` points at, newest first when several would do."""
    newest = sorted(incidents, key=lambda i: i.opened_at, reverse=True)
    ref = linked_ref(url, public_url)
    if ref is not None:
        return next((i for i in newest if i.ref == ref), None)
    for incident in newest:
        if any(a.generator_url and a.generator_url == url for a in incident.alerts.values()):
            return incident
    if "alertname" in unquote(url):
        match = _ALERTNAME.search(unquote(url))
        if match:
            name = match.group(1).strip()
            return next(
                (
                    i
                    for i in newest
                    if i.common_labels.get("alertname") == name
                    or i.group_labels.get("alertname") == name
                ),
                None,
            )
    return None
