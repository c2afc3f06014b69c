"""Site PKI and station identity for clinicam (DESIGN §7).

``pki`` (keys, certificates, CSRs, CRLs), ``site`` (site-init, sign, renew, revoke,
bundle), ``identity`` (device key on the station, install, ``load_identity``),
``brokerconf`` (Mosquitto config and the ACL, rendered from the protocol's topics),
``operators``, ``netallow``, ``tlsctx`` (the one client TLS context), ``report``
(``show``), ``persist/`` (the encrypted persistent partition), ``cli`` (``clinicam
provision``). The recipient-key format is the protocol's (``clinicam.protocol.recipient``);
the test-bed Mosquitto launcher is a tool (``clinicam.tools.brokerproc``).
"""
