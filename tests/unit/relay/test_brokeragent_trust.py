"""The broker agent's side of CA rotation (issue 17): a trust update signed by a root the
broker trusts rewrites Mosquitto's cafile (roots, issuing CAs) and merges the new CAs'
CRLs, with one reload; a forged or replayed one changes nothing. The broker host's files
are a copy of the site's ``broker/``, as installed. Fixed clock, real files, no network."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clinicam.protocol import chain as trust
from clinicam.protocol import trustann as ta
from clinicam.provisioning import pki, rotation
from clinicam.provisioning.site import Site
from clinicam.relay.brokeragent import AgentConfig, AgentCore, IdentitySection, MosquittoSection

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _agent(host: Path, tmp_path: Path, reloads: list[int]) -> AgentCore:
    config = AgentConfig(identity=IdentitySection(cert=str(host / "agent.pem"), key=str(host / "agent.key"),
                                                  ca=str(host / "ca.pem")),
                         mosquitto=MosquittoSection(crlfile=str(host / "crl.pem"), acl_file=str(host / "acl"),
                                                    pid_file=str(tmp_path / "pid"), cafile=str(host / "ca.pem")))
    return AgentCore(config, lambda: reloads.append(1))


def test_the_agent_installs_each_trust_update_once_and_refuses_forged_or_older_ones(tmp_path: Path):
    site = Site.create(tmp_path / "site", "Unit Clinic", ["broker.example"], relays=1, kem="x25519", now=NOW,
                       tiers=2)
    r1, i1 = site.ca, site.issuing
    assert i1 is not None
    host = tmp_path / "broker-host"
    shutil.copytree(site.broker_dir, host)
    reloads: list[int] = []
    core = _agent(host, tmp_path, reloads)

    # A root the broker does not trust cannot add itself.
    rogue_key = pki.new_key()
    rogue = pki.make_ca(rogue_key, "Rogue", now=NOW, path_length=1)
    forged = ta.build_trust(number=1, at=NOW, roots=[rogue, r1],
                            issuing=pki.make_issuing_ca(rogue_key, rogue, pki.new_key(), "Rogue", 1, now=NOW),
                            crls=[], cross=[], signer=rogue, signer_key=rogue_key)
    before = (host / "ca.pem").read_bytes()
    with pytest.raises(ta.TrustUpdateError):
        core.install_trust(forged, NOW)
    assert (host / "ca.pem").read_bytes() == before and not reloads

    # The site's update (signed by R1): both roots, both issuing CAs, the new CRLs; one reload.
    first = rotation.begin(site, now=NOW).trust_file.read_bytes()
    site = Site(site.path)
    r2, i2 = site.ca, site.issuing
    assert i2 is not None
    assert core.install_trust(first, NOW) == 1 and reloads == [1]
    held = {c.subject for c in trust.load_certs((host / "ca.pem").read_bytes(), "cafile")}
    assert held == {r1.subject, r2.subject, i1.subject, i2.subject}
    crl_issuers = {c.issuer for c in trust.load_crls((host / "crl.pem").read_bytes(), "crlfile")}
    assert {r1.subject, i1.subject, r2.subject, i2.subject} <= crl_issuers
    assert core.install_trust(first, NOW) == 1 and reloads == [1]  # the retained copy again: nothing

    # Finish: signed by R2 (trusted now), the old root and issuing CA are gone.
    last = rotation.finish(site, now=NOW, force=True).trust_file.read_bytes()
    assert core.install_trust(last, NOW) == 2 and reloads == [1, 1]
    held = {c.subject for c in trust.load_certs((host / "ca.pem").read_bytes(), "cafile")}
    assert held == {r2.subject, i2.subject}
    with pytest.raises(ta.TrustUpdateError):  # the old update: its signer R1 is no longer trusted
        core.install_trust(first, NOW)
    assert reloads == [1, 1] and {c.subject for c in trust.load_certs((host / "ca.pem").read_bytes(), "")} == held
