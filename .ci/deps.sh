#!/bin/sh
# Installs the Debian packages Postern's build, tests and demo need, and only
# when one is missing, so a second `make check` costs nothing here.
set -e
PKGS="build-essential pkg-config libssl-dev libev-dev libconfig-dev \
libcrypt-dev libcmocka-dev openssl curl python3 python3-pytest \
dovecot-imapd dovecot-pop3d dovecot-submissiond postfix whois \
slapd ldap-utils libldap-dev clang libclang-rt-14-dev"
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
$SUDO apt-get install -y -qq -o Dpkg::Options::=--force-confdef \
	-o Dpkg::Options::=--force-confold $missing
