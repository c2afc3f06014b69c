"""The registrar (issue 17): renews station certificates over MQTT with the site's
online issuing CA. It runs on the relay host, with its own identity (``registrar``)
and ACL: it reads ``P/+/renew`` and writes ``P/+/cert``, nothing else."""
