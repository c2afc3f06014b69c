"""Site PKI and station identity for clinicam (DESIGN §7).

``pki`` (keys, certificates, CSRs, CRLs), ``site`` (site-init, sign, renew, revoke,
bundle), ``identity`` (device key on the station, install, ``load_identity``),
``brokerconf`` (Mosquitto config and ACL), ``brokerproc`` (run Mosquitto from it),
``tlsctx`` (the one client TLS context), ``report`` (``show``), ``recipient`` (the
relay's HPKE recipient key), ``cli`` (``clinicam provision``).
"""
