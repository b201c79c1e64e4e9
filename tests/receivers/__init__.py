"""Real receivers the forwarding tests and benchmarks run on loopback ports: rsyslog
(rsyslog.py), HTTPS servers that keep the Logs Ingestion and HEC contracts (https.py), and the
test certificate authority they present (pki.py)."""
