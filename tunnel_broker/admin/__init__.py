"""Running the broker as a PaaS: operator keys, the audit log, changing apps at run time."""
