#!/bin/sh
# make demo: a private Dovecot on 127.0.0.1:10143 with a user "demo" (password
# "demo") and a message in its INBOX, a self-signed certificate, and Postern
# in the foreground with etc/postern.conf in front of it. Ctrl-C stops both.
set -e
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
d="$here/demo"
mkdir -p "$d/dovecot" "$d/home/demo/Maildir/new" "$d/home/demo/Maildir/cur" \
	"$d/home/demo/Maildir/tmp"

if [ ! -f "$d/server.pem" ]; then
	openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
		-keyout "$d/server.key" -out "$d/server.pem" 2>/dev/null
fi
# Postern's users file: name:crypt-hash[:backend]
printf 'demo:%s:mbox-a\n' "$(openssl passwd -6 demo)" > "$d/users"
# The backend's own users: Postern logs in there with the user's password.
printf 'demo:{PLAIN}demo:8:8::%s/home/demo\n' "$d" > "$d/dovecot/passwd"
# One welcome message, once: a second `make demo` must not add another.
[ -n "$(ls -A "$d/home/demo/Maildir/new" "$d/home/demo/Maildir/cur")" ] ||
cat > "$d/home/demo/Maildir/new/1.demo" <<MSG
From: Postern <postmaster@localhost>
To: demo@localhost
Subject: Welcome to Postern
Date: $(date -R)
Message-ID: <welcome@postern.demo>

You are reading this through Postern, from the Dovecot behind it.
MSG
chown -R 8:8 "$d/home"
cat > "$d/dovecot/dovecot.conf" <<CONF
instance_name = postern-demo
base_dir = $d/dovecot/run
state_dir = $d/dovecot/state
log_path = $d/dovecot/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
mail_location = maildir:~/Maildir
login_trusted_networks = 127.0.0.0/8
passdb {
  driver = passwd-file
  args = $d/dovecot/passwd
}
userdb {
  driver = passwd-file
  args = $d/dovecot/passwd
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = 10143
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  chroot =
  inet_listener pop3 {
    address = 127.0.0.1
    port = 10110
  }
  inet_listener pop3s {
    port = 0
  }
}
service anvil {
  chroot =
}
CONF
if [ -f "$d/dovecot/run/master.pid" ]; then
	kill "$(cat "$d/dovecot/run/master.pid")" 2>/dev/null || true
	sleep 1
fi
dovecot -c "$d/dovecot/dovecot.conf"
trap 'kill $(cat "$d/dovecot/run/master.pid") 2>/dev/null' EXIT INT TERM

"$top/postern" -t -c "$here/postern.conf"
cat <<TXT

Postern is starting in front of the demo Dovecot (127.0.0.1:10143).
  user "demo", password "demo".
  IMAP: implicit TLS on 9993, STARTTLS on 9143.  POP3: implicit TLS on 9995, STLS on 9110.

Try, from another terminal:
  curl --cacert $d/server.pem 'imaps://localhost:9993/INBOX;UID=1' -u demo:demo
  curl --ssl-reqd --cacert $d/server.pem 'imap://localhost:9143/INBOX' -X 'FETCH 1 ENVELOPE' -u demo:demo
  curl --cacert $d/server.pem 'pop3s://localhost:9995/1' -u demo:demo
  openssl s_client -quiet -connect 127.0.0.1:9993     (then: a LOGIN demo demo)

Ctrl-C stops Postern and the demo Dovecot.

TXT
"$top/postern" -f -c "$here/postern.conf"
