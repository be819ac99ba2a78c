#!/usr/bin/env bash
# Certificates for a duet cluster (docs/SECURITY.md):
#   scripts/make_certs.sh DIR [NAME [SAN ...]]
# Creates the cluster's CA in DIR (ca.pem, ca-key.pem) unless it is already
# there, then a certificate for one host's roles: DIR/NAME.pem and
# DIR/NAME-key.pem (NAME defaults to "node"), valid for the SANs given
# (default: DNS:localhost IP:127.0.0.1; e.g. DNS:gpu3.example.com
# IP:10.0.0.3), usable by servers and clients (every role is both).
# Give every role --tls-ca DIR/ca.pem --tls-cert DIR/NAME.pem
# --tls-key DIR/NAME-key.pem, and clients --tls-ca DIR/ca.pem. Keep
# ca-key.pem off the serving machines: whoever holds it can mint members.
set -euo pipefail
DIR=${1:?usage: make_certs.sh DIR [NAME [SAN ...]]}
NAME=${2:-node}
shift $(( $# >= 2 ? 2 : $# ))
SANS=("$@")
((${#SANS[@]})) || SANS=(DNS:localhost IP:127.0.0.1)
command -v openssl >/dev/null || { echo "make_certs.sh: needs openssl (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$DIR"
umask 077
if [[ ! -f "$DIR/ca.pem" ]]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$DIR/ca-key.pem" -out "$DIR/ca.pem" -days 825 \
    -subj "/CN=duet cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
SAN_LIST=$(IFS=,; echo "${SANS[*]}")
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout "$DIR/$NAME-key.pem" -out "$DIR/$NAME.csr" -subj "/CN=duet $NAME" 2>/dev/null
openssl x509 -req -in "$DIR/$NAME.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca-key.pem" \
  -CAcreateserial -out "$DIR/$NAME.pem" -days 825 \
  -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$SAN_LIST") 2>/dev/null
rm -f "$DIR/$NAME.csr"
chmod 644 "$DIR/ca.pem" "$DIR/$NAME.pem"
echo "make_certs.sh: $DIR/$NAME.pem ($SAN_LIST), CA $DIR/ca.pem"
