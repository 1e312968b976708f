#!/bin/bash
# Build provd_<version>_amd64.deb with dpkg-deb (Debian's own packaging tool): the binary,
# the systemd unit, man pages and shell completions generated from the command line's own
# definitions, the templates and example site configs under /usr/share/provd, and a
# commented starter config in /etc/provd (a conffile). See contrib/deb/README.md.
#
#   contrib/deb/build.sh [--binary PATH] [--out DIR]
#
# Without --binary it builds the release binary (cargo build --release --locked).
# Prints the path of the .deb it made.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=""
OUT="$ROOT/target/deb"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v dpkg-deb >/dev/null || { echo "dpkg-deb not found (package dpkg)" >&2; exit 1; }
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --locked >&2)
  BIN="$ROOT/target/release/provd"
fi
[ -x "$BIN" ] || { echo "not an executable: $BIN" >&2; exit 1; }
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
P="$STAGE/pkg"
install -d "$P/DEBIAN" "$P/usr/bin" "$P/lib/systemd/system" "$P/etc/provd" \
  "$P/usr/share/provd/examples" "$P/usr/share/doc/provd" "$P/usr/share/man/man1" \
  "$P/usr/share/bash-completion/completions" "$P/usr/share/zsh/vendor-completions" \
  "$P/usr/share/fish/vendor_completions.d"
install -m 0755 "$BIN" "$P/usr/bin/provd"
strip --strip-unneeded "$P/usr/bin/provd" 2>/dev/null || true

# The unit as contrib/systemd ships it, with the packaged paths.
sed -e 's#/usr/local/bin/provd#/usr/bin/provd#g' \
    -e 's#file:///usr/local/share/doc/provd/README.md#man:provd(1) file:///usr/share/doc/provd/README.md#' \
    "$ROOT/contrib/systemd/provd.service" > "$P/lib/systemd/system/provd.service"
chmod 0644 "$P/lib/systemd/system/provd.service"

cp -r "$ROOT/templates" "$P/usr/share/provd/templates"
cp -r "$ROOT/site-configs" "$P/usr/share/provd/examples/site-configs"
install -m 0644 "$HERE/provd.toml" "$P/etc/provd/provd.toml"
install -m 0644 "$ROOT/README.md" "$P/usr/share/doc/provd/README.md"

# Generated from the clap definitions by the binary being packaged.
"$P/usr/bin/provd" manpages --out "$STAGE/man" >/dev/null
for m in "$STAGE"/man/*.1; do gzip -9n -c "$m" > "$P/usr/share/man/man1/$(basename "$m").gz"; done
"$P/usr/bin/provd" completions bash > "$P/usr/share/bash-completion/completions/provd"
"$P/usr/bin/provd" completions zsh > "$P/usr/share/zsh/vendor-completions/_provd"
"$P/usr/bin/provd" completions fish > "$P/usr/share/fish/vendor_completions.d/provd.fish"

for f in postinst prerm postrm; do install -m 0755 "$HERE/$f" "$P/DEBIAN/$f"; done
echo /etc/provd/provd.toml > "$P/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$P" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@SIZE@/$SIZE/" "$HERE/control.in" > "$P/DEBIAN/control"
find "$P" -type d -exec chmod 0755 {} +
find "$P/usr/share" "$P/etc" -type f -exec chmod 0644 {} +

mkdir -p "$OUT"
DEB="$OUT/provd_${VERSION}_amd64.deb"
dpkg-deb --root-owner-group --build "$P" "$DEB" >&2
echo "$DEB"
