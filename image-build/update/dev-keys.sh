#!/bin/sh
# dev-keys.sh DIR -- a throwaway update signing PKI for development and the boot test:
#   DIR/ca.pem, ca.key          the update CA (its certificate is the image's keyring)
#   DIR/signing.pem, signing.key  the signing certificate (EKU codeSigning) and key
#   DIR/rogue.pem, rogue.key    a signer from another CA (for the refusal tests)
# A release uses the vendor's own update CA and keeps the keys offline (an HSM via
# RAUC's PKCS#11 support); it is never the site's device CA. Existing files are kept.
set -eu
DIR=${1:?usage: dev-keys.sh DIR}
mkdir -p "$DIR"; chmod 0700 "$DIR"
cd "$DIR"
[ -f signing.pem ] && [ -f rogue.pem ] && exit 0
ext=$(mktemp); trap 'rm -f "$ext"' EXIT
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' > "$ext"
ca() {  # ca NAME SUBJECT
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "$2" -keyout "$1.key" -out "$1.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
signer() {  # signer NAME CA SUBJECT
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$3" \
        -keyout "$1.key" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 3650 \
        -extfile "$ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr"
}
ca ca "/CN=clinicam update CA (development)"
signer signing ca "/CN=clinicam update signing (development)"
ca rogue-ca "/CN=not the clinicam update CA"
signer rogue rogue-ca "/CN=rogue signer"
chmod 0600 ./*.key
