#!/usr/bin/env bash
# Build the end-to-end tests' container image offline (no registry is reachable from CI).
#
#   tests/testdata/docker/build-image.sh [TAG]      (default TAG: netmonitor-test:latest)
#
# The root filesystem is assembled from the host: busybox-static (sh, nc, wget, ...), the host's
# curl with the shared libraries `ldd` lists, and the host's CA bundle at the Debian path
# /etc/ssl/certs/ca-certificates.crt (the "system store" that curl and OpenSSL read by default).
# It is imported with `docker import`; about 20 MB.
#
# Idempotent: the image carries a label with a hash of this recipe and of the binaries it copies;
# an image with the same hash is kept as it is.
set -euo pipefail

tag=${1:-netmonitor-test:latest}

for tool in busybox curl ldd docker sha256sum tar; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "error: $tool is required to build the test image" >&2
    exit 1
  }
done
busybox_bin=$(command -v busybox)
curl_bin=$(command -v curl)
if ! "$busybox_bin" --list >/dev/null 2>&1 || ldd "$busybox_bin" >/dev/null 2>&1; then
  echo "error: $busybox_bin is not a static busybox (apt-get install busybox-static)" >&2
  exit 1
fi
ca_bundle=""
for candidate in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
  if [ -s "$candidate" ]; then
    ca_bundle=$candidate
    break
  fi
done

libs=$(ldd "$curl_bin" | awk '/=>/ && $3 ~ /^\// {print $3} /^[[:space:]]*\/[^ ]+ \(/ {print $1}' | sort -u)
recipe_hash=$(
  {
    cat "${BASH_SOURCE[0]}"
    sha256sum "$busybox_bin" "$curl_bin"
    for lib in $libs; do sha256sum "$(readlink -f "$lib")"; done
    [ -n "$ca_bundle" ] && sha256sum "$ca_bundle"
  } | sha256sum | cut -c1-16
)

existing=$(docker image inspect --format '{{ index .Config.Labels "netmonitor.recipe" }}' "$tag" 2>/dev/null || true)
if [ "$existing" = "$recipe_hash" ]; then
  echo "test image: $tag is up to date (recipe $recipe_hash)"
  exit 0
fi

rootfs=$(mktemp -d /tmp/netmonitor-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc/ssl/certs,usr/local/share/ca-certificates,root,tmp,proc,sys,dev,var/tmp}
chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"

cp "$busybox_bin" "$rootfs/bin/busybox"
for applet in $("$busybox_bin" --list); do
  [ "$applet" = busybox ] && continue
  ln -sf busybox "$rootfs/bin/$applet"
done
ln -sf ../../bin/busybox "$rootfs/usr/bin/env"

cp "$curl_bin" "$rootfs/usr/bin/curl"
for lib in $libs; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done

if [ -n "$ca_bundle" ]; then
  cp -L "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"

tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -cf - . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]' \
    --change "LABEL netmonitor.recipe=$recipe_hash" \
    - "$tag" >/dev/null
size=$(docker image inspect --format '{{ .Size }}' "$tag")
echo "test image: built $tag ($((size / 1024 / 1024)) MB, recipe $recipe_hash)"
