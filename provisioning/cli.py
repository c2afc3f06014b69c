"""``clinicam provision …``: site PKI on the admin's machine, keys and install on a station.

Errors are ``ProvisioningError`` (exit 1, a message naming the file and the remedy);
bad usage exits 2. Private keys are written 0600 and never printed.
"""

from __future__ import annotations

import argparse
import getpass
import grp
import os
import pwd
import shutil
import sys
from pathlib import Path
from typing import Any

from clinicam.common.errors import ProvisioningError
from clinicam.protocol.ids import DEVICE_ID_RULE
from clinicam.provisioning import brokerconf, identity, netallow, pki, report
from clinicam.provisioning.site import Site

EXIT_USAGE = 2
DESCRIPTION = """\
On the site's admin machine: site-init, two-tier, import-renewals, import-revocations, sign,
renew, operator, revoke, publish-crl, reissue, crl, acl, bundle, show --site.
A root key protected by a passphrase (site-init --ca-passphrase-file) is read from the
file named by CLINICAM_CA_PASSPHRASE_FILE, or asked for on a terminal when signing needs it.
On a station: device-key, install, apply-network (root, run by the unit), show.
Private keys are written with mode 0600 and never printed."""


def register(subparsers: Any) -> None:
    """Add the ``provision`` group to the ``clinicam`` command."""
    parser = subparsers.add_parser(
        "provision",
        help="site PKI, device keys, certificates, broker config",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="provision_command", metavar="SUBCOMMAND")
    _site_init(sub)
    _two_tier(sub)
    _rotate_ca(sub)
    _import_renewals(sub)
    _device_key(sub)
    _sign(sub, "sign", "sign a station's CSR for a new device id", _cmd_sign)
    _sign(sub, "renew", "re-sign a CSR for an existing id before or just after expiry", _cmd_renew)
    _operator(sub)
    _revoke(sub)
    _publish_crl(sub)
    _import_revocations(sub)
    _reissue(sub)
    _crl(sub)
    _acl(sub)
    _bundle(sub)
    _install(sub)
    _apply_network(sub)
    _show(sub)


# -- parsers ----------------------------------------------------------------------------


def _site_init(sub: Any) -> None:
    p = sub.add_parser("site-init", help="create a site: CA, broker, relay and recipient keys")
    p.add_argument("site_dir", metavar="SITE", type=Path, help="new, empty site directory")
    p.add_argument("--site", required=True, help="site name (shown in the CA's name)")
    p.add_argument(
        "--broker-host",
        action="append",
        required=True,
        metavar="HOST",
        help="broker DNS name or IP address; repeat for several (the first is the one stations use)",
    )
    p.add_argument("--broker-port", type=int, default=brokerconf.DEFAULT_PORT)
    p.add_argument("--relays", type=int, default=1, help="relay workers (relay-1 … relay-N)")
    p.add_argument(
        "--kem",
        choices=["x25519", "mlkem768-x25519"],
        default="mlkem768-x25519",
        help="recipient key type (default: the post-quantum hybrid)",
    )
    p.add_argument(
        "--broker-conf-dir",
        default=brokerconf.DEFAULT_CONF_DIR,
        help="where the broker/ folder will be installed on the broker host",
    )
    p.add_argument("--tiers", type=int, choices=[1, 2], default=2,
                   help="2 (default): an offline root and an online issuing CA for station certificates, which "
                        "renew themselves (registrar); 1: one site CA, renewals by hand (small sites)")
    p.add_argument("--ca-passphrase-file", type=Path, metavar="FILE",
                   help="protect the root key with the passphrase in FILE (first line)")
    p.add_argument("--ask-ca-passphrase", action="store_true",
                   help="protect the root key with a passphrase typed at the terminal")
    p.set_defaults(func=_cmd_site_init)


def _import_renewals(sub: Any) -> None:
    p = sub.add_parser("import-renewals", help="record the registrar's renewals in the register (before revoke)")
    p.add_argument("site_dir", metavar="SITE", type=Path)
    p.add_argument("journal", metavar="JOURNAL", type=Path, help="the registrar's journal.jsonl from the relay host")
    p.set_defaults(func=_cmd_import_renewals)


def _cmd_import_renewals(args: argparse.Namespace) -> int:
    added = _open(args.site_dir).import_renewals(args.journal)
    for rec in added:
        print(f"recorded {rec.id} serial {rec.serial}, valid until {rec.not_after[:10]}")
    print(f"{len(added)} renewal(s) recorded; 'revoke ID' now covers them")
    return 0


def _two_tier(sub: Any) -> None:
    p = sub.add_parser("two-tier", help="migrate a single-tier site: add the issuing CA for station certificates")
    p.add_argument("site_dir", metavar="SITE", type=Path)
    p.set_defaults(func=_cmd_two_tier)


def _rotate_ca(sub: Any) -> None:
    p = sub.add_parser("rotate-ca", help="move a two-tier site to a new root and issuing CA (stations renew "
                       "over MQTT); --finish retires the old root")
    p.add_argument("site_dir", metavar="SITE", type=Path)
    p.add_argument("--finish", action="store_true", help="every station renewed: retire the old root")
    p.add_argument("--force", action="store_true", help="with --finish: even if stations are still behind")
    p.set_defaults(func=_cmd_rotate_ca)


def _device_key(sub: Any) -> None:
    p = sub.add_parser("device-key", help="on the station: make device.key and device.csr")
    p.add_argument("dir", metavar="DIR", type=Path, help=f"identity directory, e.g. {identity.DEFAULT_DIR}")
    p.add_argument("--device", required=True, metavar="ID", help=f"device id, {DEVICE_ID_RULE}")
    p.set_defaults(func=_cmd_device_key)


def _sign(sub: Any, name: str, help_text: str, func: Any) -> None:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("site_dir", metavar="SITE", type=Path)
    p.add_argument("csr", metavar="CSR", type=Path, help="device.csr from the station")
    p.add_argument("--out", required=True, type=Path, metavar="CERT", help="certificate to write")
    p.add_argument("--days", type=int, default=pki.DEFAULT_DAYS)
    p.set_defaults(func=func)


def _operator(sub: Any) -> None:
    p = sub.add_parser("operator", help="issue an operator identity for 'clinicam relay cmd' (commands only)")
    p.add_argument("site_dir", metavar="SITE", type=Path)
    p.add_argument("--name", required=True, metavar="NAME", help="the certificate is named operator-NAME")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="where to write its key and certificate")
    p.add_argument("--days", type=int, default=pki.DEFAULT_DAYS)
    p.set_defaults(func=_cmd_operator)


def _revoke(sub: Any) -> None:
    p = sub.add_parser("revoke", help="revoke an id or one serial; rewrite the CRLs and the root's CRL bulletin")
    p.add_argument("site_dir", metavar="SITE", type=Path)
    p.add_argument("target", metavar="ID|SERIAL")
    p.add_argument("--publish", action="store_true",
                   help="then publish the bulletin at once (as 'publish-crl' does)")
    _broker_args(p)
    p.set_defaults(func=_cmd_revoke)


def _broker_args(p: Any) -> None:
    p.add_argument("--broker-host", metavar="HOST", help="default: the site's first broker host")
    p.add_argument("--broker-port", type=int, metavar="PORT", help="default: the site's broker port")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the broker agent (default 60)")


def _publish_crl(sub: Any) -> None:
    p = sub.add_parser("publish-crl", help="send the root's CRL bulletin to the broker and relays; cut the "
                                           "revoked identities' sessions")
    p.add_argument("site_dir", metavar="SITE", type=Path)
    _broker_args(p)
    p.set_defaults(func=_cmd_publish_crl)


def _import_revocations(sub: Any) -> None:
    p = sub.add_parser("import-revocations", help="record revocations made on the relay host (relay revoke) "
                                                  "in the register and the ACL")
    p.add_argument("site_dir", metavar="SITE", type=Path)
    p.add_argument("file", metavar="FILE", type=Path, nargs="?",
                   help="the relay host's crl.pem or a CRL bulletin; default: the registrar's bulletin, "
                        "read from the broker as the admin identity")
    _broker_args(p)
    p.set_defaults(func=_cmd_import_revocations)


def _reissue(sub: Any) -> None:
    p = sub.add_parser("reissue", help="new key and certificate for a site service (broker, relay, agent, admin, "
                                       "registrar)")
    p.add_argument("site_dir", metavar="SITE", type=Path)
    p.add_argument("service", metavar="broker|broker-agent|admin|relay-N|registrar")
    p.add_argument("--days", type=int, default=pki.DEFAULT_DAYS)
    p.set_defaults(func=_cmd_reissue)


def _acl(sub: Any) -> None:
    p = sub.add_parser("acl", help="regenerate broker/acl from the register (after upgrading an existing site)")
    p.add_argument("site_dir", metavar="SITE", type=Path)
    p.set_defaults(func=_cmd_acl)


def _crl(sub: Any) -> None:
    p = sub.add_parser("crl", help="re-issue the site CRL (broker/crl.pem and crl.pem)")
    p.add_argument("site_dir", metavar="SITE", type=Path)
    p.set_defaults(func=_cmd_crl)


def _bundle(sub: Any) -> None:
    p = sub.add_parser("bundle", help="gather the public files a station installs")
    p.add_argument("site_dir", metavar="SITE", type=Path)
    p.add_argument("--device", required=True, metavar="ID")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.set_defaults(func=_cmd_bundle)


def _install(sub: Any) -> None:
    p = sub.add_parser("install", help="on the station: check and install its signed identity")
    p.add_argument("--bundle", type=Path, metavar="DIR", help="folder made by 'bundle'")
    p.add_argument("--ca", type=Path, help="site ca.pem (without --bundle)")
    p.add_argument("--cert", type=Path, help="this station's certificate (without --bundle); "
                   "alone: a renewed certificate over the installed identity")
    p.add_argument("--recipient", type=Path, help="recipient.pub (without --bundle)")
    p.add_argument("--crl", type=Path, help="site crl.pem (optional, without --bundle)")
    p.add_argument("--broker-host", help="broker address (without --bundle)")
    p.add_argument("--broker-port", type=int, default=brokerconf.DEFAULT_PORT)
    p.add_argument("--identity-dir", type=Path, default=identity.DEFAULT_DIR)
    p.add_argument("--owner", metavar="USER[:GROUP]", help="chown the installed files")
    p.add_argument(
        "--allow-address",
        action="append",
        metavar="ADDR",
        help="an address (or prefix) the station may reach; repeat for several "
        "(default: the broker host's addresses, resolved now)",
    )
    p.add_argument(
        "--update-server",
        metavar="https://HOST[:PORT]",
        help="the site's update server: its addresses (resolved now) and port are let through the "
        "firewall for update-fetch (root) and nothing else (a renewal keeps the recorded one)",
    )
    p.set_defaults(func=_cmd_install)


def _apply_network(sub: Any) -> None:
    p = sub.add_parser(
        "apply-network", help="on the station (root, before each start): allow the recorded broker addresses"
    )
    p.add_argument("--identity-dir", type=Path, default=identity.DEFAULT_DIR)
    p.add_argument("--unit", default=netallow.STATION_UNIT)
    p.set_defaults(func=_cmd_apply_network)


def _show(sub: Any) -> None:
    p = sub.add_parser("show", help="identity, fingerprints and expiry (station or site)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--identity-dir", type=Path, default=identity.DEFAULT_DIR)
    where.add_argument("--site", type=Path, metavar="SITE")
    p.set_defaults(func=_cmd_show)


# -- commands ---------------------------------------------------------------------------


def _read_passphrase(path: Path) -> bytes:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ProvisioningError(f"passphrase file {path} cannot be read ({exc.strerror}): check the path") from exc
    if not lines or not lines[0]:
        raise ProvisioningError(f"passphrase file {path} is empty: put the passphrase on its first line")
    return lines[0]


def _ask_passphrase() -> bytes:
    """The root key's passphrase: from CLINICAM_CA_PASSPHRASE_FILE, else the terminal."""
    named = os.environ.get("CLINICAM_CA_PASSPHRASE_FILE")
    if named:
        return _read_passphrase(Path(named))
    if not sys.stdin.isatty():
        raise ProvisioningError(
            "the site's root key is protected by a passphrase: set CLINICAM_CA_PASSPHRASE_FILE "
            "or run this on a terminal"
        )
    return getpass.getpass("root key passphrase: ").encode()


def _new_passphrase(args: argparse.Namespace) -> bytes | None:
    if args.ca_passphrase_file is not None:
        return _read_passphrase(args.ca_passphrase_file)
    if not args.ask_ca_passphrase:
        return None
    first = getpass.getpass("new root key passphrase: ").encode()
    if len(first) < 8 or first != getpass.getpass("again: ").encode():
        raise ProvisioningError("the passphrases differ or are shorter than 8 characters: run site-init again")
    return first


def _open(path: Path) -> Site:
    """The site, asking for the root key's passphrase only if signing needs it."""
    return Site(path, ask_passphrase=_ask_passphrase)


def _cmd_site_init(args: argparse.Namespace) -> int:
    site = Site.create(
        args.site_dir,
        args.site,
        args.broker_host,
        port=args.broker_port,
        relays=args.relays,
        kem=args.kem,
        conf_dir=args.broker_conf_dir,
        tiers=args.tiers,
        passphrase=_new_passphrase(args),
    )
    print(f"site {site.name!r} created in {site.path}")
    print(f"  CA sha256 {pki.fingerprint(site.ca)}")
    print(
        f"  keep {site.path / 'ca'} offline; install {site.broker_dir} on the broker host "
        f"(into {args.broker_conf_dir}) and {site.relay_dir} on the relay host"
    )
    if site.issuing is not None:
        print(f"  two tiers: {site.registrar_dir} (the issuing CA) goes to the relay host too; "
              f"relays set [identity] chain = {site.chain_pem.name}")
    return 0


def _cmd_two_tier(args: argparse.Namespace) -> int:
    site = _open(args.site_dir)
    issuing = site.two_tier()
    print(f"two tiers: issuing CA {pki.common_name(issuing.subject, 'chain.pem')!r}, "
          f"valid until {issuing.not_valid_after_utc:%Y-%m-%d}")
    print(f"  root re-issued for one CA level below it (same key and name): {site.ca_pem}")
    print(f"  1. copy {site.broker_dir} (ca.pem now holds root and issuing CA, crl.pem both CRLs) "
          "to the broker and restart it")
    print(f"  2. on the relay host: copy {site.chain_pem} and {site.crl_pem}, set [identity] chain; "
          f"copy {site.registrar_dir} there (mode 0700)")
    print("  3. station certificates signed so far stay valid; new ones and renewals come from the issuing CA")
    return 0


def _cmd_rotate_ca(args: argparse.Namespace) -> int:
    from clinicam.provisioning import rotation

    site = _open(args.site_dir)
    if args.finish:
        step = rotation.finish(site, force=args.force)
        print(f"CA rotation finished: root {pki.common_name(step.roots[0].subject, 'ca.pem')!r} alone; "
              f"trust update {step.number} in {step.trust_file}")
        print(f"  1. copy {site.broker_dir}/broker.pem, broker.key, agent.pem, agent.key to the broker and "
              "reload it (kill -HUP); restart the broker agent")
        print(f"  2. on the relay host: copy {site.relay_dir}, {site.registrar_dir}, {site.ca_pem}, "
              f"{site.chain_pem}, {site.crl_pem}; restart the relays and the registrar")
        print(f"  3. then copy {step.trust_file} over the registrar's [issuing] trust: the broker and the "
              "stations drop the old root; operators need new identities ('provision operator')")
        return 0
    step = rotation.begin(site)
    print(f"CA rotation started: new root {pki.common_name(step.roots[0].subject, 'ca.pem')!r}, issuing CA "
          f"{pki.common_name(step.issuing.subject, 'chain.pem')!r}; trust update {step.number} in {step.trust_file}")
    print(f"  1. on the relay host: copy {site.registrar_dir} (the new issuing CA), {site.ca_pem}, "
          f"{site.chain_pem}, {site.crl_pem}; restart the relays and the registrar")
    print(f"  2. copy {step.trust_file} to the file the registrar's [issuing] trust names: the broker agent "
          "and every station install it, and stations renew under the new issuing CA at once")
    print("  3. when every station shows the new root (clinicam relay status), import the registrar's journal "
          "('provision import-renewals') and run 'rotate-ca SITE --finish'")
    return 0


def _cmd_device_key(args: argparse.Namespace) -> int:
    csr = identity.create_device_key(args.dir, args.device)
    print(f"key {args.dir / identity.KEY} (stays here); send {csr} to the site for signing")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    site = _open(args.site_dir)
    cert = site.sign(_read(args.csr), where=str(args.csr), days=args.days)
    _wrote(args.out, cert, "signed", site)
    print(_acl_advice(site, "now lets this station publish"))
    return 0


def _acl_advice(site: Site, what: str) -> str:
    return (f"  {site.broker_dir / 'acl'} {what}: copy it to the broker's acl_file and reload the broker "
            "(systemctl reload mosquitto, or kill -HUP its pid); until then the broker refuses its messages")


def _cmd_acl(args: argparse.Namespace) -> int:
    site = _open(args.site_dir)
    path = site.write_acl()
    print(f"ACL regenerated from the register: {path} (one block per valid station, relay and operator)")
    print("  copy it to the broker's acl_file and reload the broker (systemctl reload mosquitto, or kill -HUP its pid)")
    return 0


def _cmd_renew(args: argparse.Namespace) -> int:
    site = _open(args.site_dir)
    cert = site.renew(_read(args.csr), where=str(args.csr), days=args.days)
    return _wrote(args.out, cert, "renewed", site)


def _wrote(out: Path, cert: Any, verb: str, site: Site) -> int:
    # Two tiers: a chain file, the certificate then its issuing CA (what the station presents).
    chain = pki.cert_pem(site.issuing) if site.issuing is not None and cert.issuer == site.issuing.subject else b""
    try:
        pki.write_public(out, pki.cert_pem(cert) + chain)
    except OSError as exc:
        raise ProvisioningError(
            f"--out {out}: cannot write ({exc.strerror}); the certificate is in the site's register "
            f"(ca/issued/{pki.serial_hex(cert.serial_number)}.pem)"
        ) from None
    cn = pki.common_name(cert.subject, str(out))
    print(
        f"{verb} {cn}: serial {pki.serial_hex(cert.serial_number)}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d}, written to {out}"
    )
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    from clinicam.provisioning.operators import issue_operator

    op = issue_operator(_open(args.site_dir), args.name, args.out, days=args.days)
    print(f"issued {op.cn}: serial {op.serial}, valid until {op.not_after:%Y-%m-%d}")
    print(f"  key {op.key} (mode 0600, give it to that person only), certificate {op.cert}, CA {op.ca}")
    print(
        f"  {op.acl} now lets {op.cn} send commands (P/+/cmd) and read events and statuses, nothing else: "
        "copy it to the broker's acl_file and reload the broker (systemctl reload mosquitto, or "
        "kill -HUP its pid): it re-reads the ACL for new connections"
    )
    print(f"  then: clinicam relay cmd --config relay.toml --cert {op.cert} --key {op.key} STATION ping")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    site = _open(args.site_dir)
    hit = site.revoke(args.target, issuing=False)
    for rec in hit:
        print(f"revoked {rec.id} serial {rec.serial}")
    print(f"CRL and ACL rewritten; the signed bulletin is {site.root_bulletin_path}")
    if args.publish:
        return _publish(site, args)
    print(f"  send it: clinicam provision publish-crl {site.path} (the broker agent installs it, the relays "
          "adopt it, open sessions are cut)")
    return 0


def _address(site: Site, args: argparse.Namespace) -> tuple[str, int]:
    return args.broker_host or site.hosts[0], args.broker_port or site.port


def _cmd_publish_crl(args: argparse.Namespace) -> int:
    return _publish(_open(args.site_dir), args)


def _publish(site: Site, args: argparse.Namespace) -> int:
    from clinicam.provisioning.crlpublish import publish_root_bulletin

    host, port = _address(site, args)
    done = publish_root_bulletin(site, host=host, port=port, timeout_s=args.timeout)
    print(f"root CRL {done.number} published on {host}:{port} (retained)")
    if not done.installed:
        print(f"the broker agent did not confirm CRL {done.number} within {args.timeout:g} s: is 'clinicam broker "
              "agent' running on the broker host? It installs the retained bulletin when it starts; then run "
              "publish-crl again to cut open sessions", file=sys.stderr)
        return 1
    for ident, ok in sorted(done.cut.items()):
        print(f"{'cut the session of' if ok else 'no session taken over for'} {ident}")
    return 0


def _cmd_import_revocations(args: argparse.Namespace) -> int:
    from clinicam.provisioning import crlpublish

    site = _open(args.site_dir)
    if args.file is not None:
        crls = crlpublish.crls_from_file(site, args.file)
    else:
        host, port = _address(site, args)
        crls = crlpublish.fetch_registrar_bulletin(site, host=host, port=port, timeout_s=min(args.timeout, 30)).crls
    marked = site.import_revocations(crls)
    for rec in marked:
        print(f"recorded revoked {rec.id} serial {rec.serial}")
    print(f"{len(marked)} revocation(s) recorded; {site.broker_dir / 'acl'} rewritten without them")
    return 0


def _cmd_reissue(args: argparse.Namespace) -> int:
    path = _open(args.site_dir).reissue(args.service, days=args.days)
    print(f"re-issued {args.service}: {path} and its key; install them and restart the service")
    return 0


def _cmd_crl(args: argparse.Namespace) -> int:
    site = _open(args.site_dir)
    # Two tiers: the issuing CA's CRL is the relay host's to sign (one author per CRL).
    path = site.write_crl(issuers={"root"} if site.issuing is not None else None)
    print(f"CRL re-issued: {path} and broker/crl.pem" + (" (the root's; the issuing CA's is the relay host's)"
                                                         if site.issuing is not None else ""))
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    out = _open(args.site_dir).bundle(args.device, args.out)
    print(
        f"bundle for {args.device} in {out}: copy it to the station and run 'clinicam provision install --bundle {out}'"
    )
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    explicit = (args.ca, args.cert, args.recipient, args.broker_host)
    if args.bundle is not None:
        if any(x is not None for x in (*explicit, args.crl)):
            return _usage("give either --bundle or the files one by one, not both")
        files = identity.InstallFiles.from_bundle(args.bundle)
    elif args.cert is not None and explicit.count(None) == 3:
        files = identity.InstallFiles.renewal(args.cert, args.identity_dir, args.crl)  # a renewed certificate
    elif None in explicit:
        return _usage(
            "give --bundle DIR, or all of --ca, --cert, --recipient and --broker-host, "
            "or --cert alone to install a renewed certificate over the installed identity"
        )
    else:
        files = identity.InstallFiles(args.ca, args.cert, args.recipient, args.broker_host, args.broker_port, args.crl)
    addresses = netallow.normalise(args.allow_address) if args.allow_address else None
    update = netallow.UpdateServer.parse(args.update_server) if args.update_server else None
    if args.bundle is None and args.ca is None:  # a renewal keeps what was recorded
        recorded = netallow.read_all(args.identity_dir)
        if recorded is not None:
            addresses = addresses or recorded.ip_allow
            update = update or recorded.update_server
    addresses = addresses or netallow.addresses_for(files.broker_host)
    owner = _owner(args.owner)
    ident = identity.install(files, args.identity_dir, owner=owner)
    allow = netallow.write(args.identity_dir, addresses, files.broker_port, update)
    if owner is not None:
        shutil.chown(allow, owner[0], owner[1])
    print(f"installed identity {ident.device_id} in {ident.dir}")
    if args.bundle is None and args.ca is None:
        print(
            "a running station takes the renewed certificate by itself: new photos and its status "
            "within 30 s, the broker connection at its next reconnect (no restart needed)"
        )
    print(f"the station may reach {' '.join(addresses)} port {files.broker_port} (recorded in {allow})")
    if update is not None:
        print(f"update-fetch may reach the update server {update.url} ({' '.join(update.addresses)})")
    return _print(report.describe_identity(ident))


def _cmd_apply_network(args: argparse.Namespace) -> int:
    print(f"apply-network: {netallow.apply(args.identity_dir, args.unit)}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    if args.site is not None:
        return _print(report.describe_site(Site(args.site)))
    return _print(report.describe_identity(identity.load_identity(args.identity_dir)))


# -- helpers ----------------------------------------------------------------------------


def _print(rep: report.Report) -> int:
    print("\n".join(rep.lines))
    for w in rep.warnings:
        print(f"WARNING: {w}")
    return 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ProvisioningError(f"{path} cannot be read ({exc.strerror}): check the path") from exc


def _owner(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    user, _, group = spec.partition(":")
    try:
        pw = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
    except KeyError:
        raise ProvisioningError(f"--owner {spec}: no such user or group on this system") from None
    return pw.pw_uid, gid


def _usage(message: str) -> int:
    print(f"clinicam provision: {message}", file=sys.stderr)
    return EXIT_USAGE
