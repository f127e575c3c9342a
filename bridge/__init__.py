"""pachca-alert-bridge: Alertmanager and Grafana alerts as one live Pachca message per incident."""

__version__ = "0.1.0"
