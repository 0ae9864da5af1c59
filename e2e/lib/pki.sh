# A throwaway CA and certificates for the rig, made with openssl. EC P-256
# keys: quick to generate and accepted by every part of the rig.
# shellcheck shell=bash

# pki_ca DIR: creates DIR/ca.crt and DIR/ca.key.
pki_ca() {
  local dir=$1
  mkdir -p "$dir"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>>"$dir/openssl.log"
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 \
    -subj "/CN=postern-rig-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.crt" 2>>"$dir/openssl.log"
}

# pki_cert DIR NAME SUBJECT USAGE [SAN]: issues DIR/NAME.crt and DIR/NAME.key
# signed by DIR/ca.*. USAGE is serverAuth or clientAuth; SAN like
# "DNS:localhost,IP:127.0.0.1" (server certificates only).
pki_cert() {
  local dir=$1 name=$2 subject=$3 usage=$4 san=${5:-}
  local ext="$dir/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    if [ -n "$san" ]; then echo "subjectAltName=$san"; fi
  } >"$ext"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$name.key" 2>>"$dir/openssl.log"
  openssl req -new -key "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr" 2>>"$dir/openssl.log"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -sha256 -days 3650 -extfile "$ext" -out "$dir/$name.crt" 2>>"$dir/openssl.log"
  rm -f "$dir/$name.csr" "$ext"
}

# pki_keypair DIR NAME: a bare key pair (DIR/NAME.key, DIR/NAME.pub), used
# to sign and verify service-account tokens.
pki_keypair() {
  local dir=$1 name=$2
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$name.key" 2>>"$dir/openssl.log"
  openssl ec -in "$dir/$name.key" -pubout -out "$dir/$name.pub" 2>>"$dir/openssl.log"
}
