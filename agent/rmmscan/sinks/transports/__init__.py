"""Transports (transport.py): one module per kind of receiver — syslog (RFC 5424 over UDP, TCP
or TLS), hec (Splunk's HTTP Event Collector), logs_ingestion (Azure Monitor's Logs Ingestion
API, the way into Microsoft Sentinel). Each sends batches of outbox entries and answers.

Uses the sinks' contracts and the standard library (and each receiver's own client library);
must not import state, engine or cli.
"""
