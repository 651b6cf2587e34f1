#!/bin/sh
# Installs the Debian packages Postern's build, tests and demo need, and only
# when one is missing, so a second `make check` costs nothing here.
set -e
PKGS="build-essential pkg-config libssl-dev libev-dev libconfig-dev \
libcrypt-dev libcmocka-dev openssl curl python3 python3-pytest \
dovecot-imapd dovecot-pop3d dovecot-submissiond postfix whois \
slapd ldap-utils libldap-dev clang libclang-rt-14-dev haproxy"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Installing Dovecot, Postfix or slapd must not start the system's own
# instance: the tests and the demo run private instances on loopback ports.
# Postfix asks for a mail configuration: preseed "No configuration" (no
# main.cf, nothing started).  slapd would make a system database (and ask
# for its admin password): preseed "omit configuration" (no
# /etc/ldap/slapd.d, so its init script cannot start it).
case " $missing " in
*" postfix "*)
	echo "postfix postfix/main_mailer_type select No configuration" |
		$SUDO debconf-set-selections ;;
esac
case " $missing " in
*" slapd "*)
	echo "slapd slapd/no_configuration boolean true" |
		$SUDO debconf-set-selections ;;
esac
# HAProxy's package starts a system haproxy (its default config has no
# frontend, but it is a daemon nobody asked for, and a later config could
# bind ports): the tests run private ones in the foreground.  While the
# packages install, a policy-rc.d refuses to start it (invoke-rc.d and
# deb-systemd-invoke ask it; exit 101 = action forbidden), unless one is
# already in place (e.g. a container's "start nothing" one), which is then
# left alone.  Other services are allowed, as before.
POLICY=/usr/sbin/policy-rc.d
made_policy=""
case " $missing " in
*" haproxy "*)
	if [ ! -e "$POLICY" ]; then
		printf '%s\n' '#!/bin/sh' \
			'# temporary, from postern .ci/deps.sh' \
			'for a in "$@"; do case "$a" in' \
			'haproxy|haproxy.service) exit 101 ;; esac; done' \
			'exit 0' | $SUDO tee "$POLICY" >/dev/null
		$SUDO chmod 755 "$POLICY"
		made_policy=1
		trap '$SUDO rm -f "$POLICY"' EXIT INT TERM
	fi ;;
esac
status=0
$SUDO apt-get install -y -qq -o Dpkg::Options::=--force-confdef \
	-o Dpkg::Options::=--force-confold $missing || status=$?
if [ -n "$made_policy" ]; then
	$SUDO rm -f "$POLICY"
	trap - EXIT INT TERM
fi
[ "$status" -eq 0 ] || exit "$status"
# Keep it off at boot too, where systemd runs (the package enables the
# unit); --now also stops one that got started in spite of the above.
case " $missing " in
*" haproxy "*)
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
		$SUDO systemctl disable --now haproxy.service >/dev/null 2>&1 || :
	fi ;;
esac
