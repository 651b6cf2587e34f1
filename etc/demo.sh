#!/bin/sh
# make demo: a private Dovecot on 127.0.0.1 (IMAP 10143, POP3 10110,
# submission 10587) with a user "demo" (password "demo") and a message in its
# INBOX; a private Postfix on 127.0.0.1:10025 that Dovecot's submission
# relays to and that delivers into the demo user's Maildir; a self-signed
# certificate; and Postern in the foreground with etc/postern.conf in front
# of them. Ctrl-C stops all three.
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
[ -n "$(find "$d/home/demo/Maildir/new" "$d/home/demo/Maildir/cur" -type f)" ] ||
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
protocols = imap pop3 submission
listen = 127.0.0.1
hostname = demo-mbox
submission_relay_host = 127.0.0.1
submission_relay_port = 10025
submission_relay_trusted = yes
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
service submission-login {
  chroot =
  inet_listener submission {
    address = 127.0.0.1
    port = 10587
  }
}
service anvil {
  chroot =
}
CONF

# Postfix: one smtpd for Dovecot's relay; every address is the demo user.
pf="$d/postfix"
mkdir -p "$pf/conf" "$pf/queue" "$pf/data"
chmod 755 "$pf" "$pf/conf" "$pf/queue"
chown postfix "$pf/data"
chmod 700 "$pf/data"
echo '/./ OK' > "$pf/conf/domains"
echo '/./ demo/Maildir/' > "$pf/conf/mailboxes"
cat > "$pf/conf/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
maillog_file = $pf/maillog
maillog_file_prefixes = $pf
myhostname = demo-mta
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
alias_maps =
alias_database =
virtual_mailbox_domains = regexp:$pf/conf/domains
virtual_mailbox_maps = regexp:$pf/conf/mailboxes
virtual_mailbox_base = $d/home
virtual_uid_maps = static:8
virtual_gid_maps = static:8
virtual_minimum_uid = 1
smtpd_peername_lookup = no
default_transport = error:the demo delivers locally only
smtpd_relay_restrictions = permit_mynetworks, reject
CONF
cat > "$pf/conf/master.cf" <<CONF
127.0.0.1:10025 inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
virtual    unix  - n n -     - virtual
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
CONF
chmod 644 "$pf/conf/"*
postfix -c "$pf/conf" stop >/dev/null 2>&1 || true
if [ -f "$d/dovecot/run/master.pid" ]; then
	kill "$(cat "$d/dovecot/run/master.pid")" 2>/dev/null || true
	sleep 1
fi
dovecot -c "$d/dovecot/dovecot.conf"
postfix -c "$pf/conf" start >/dev/null
trap 'kill $(cat "$d/dovecot/run/master.pid") 2>/dev/null; postfix -c "$pf/conf" stop >/dev/null 2>&1' EXIT INT TERM

"$top/postern" -t -c "$here/postern.conf"
cat <<TXT

Postern is starting in front of the demo Dovecot (127.0.0.1:10143).
  user "demo", password "demo".
  IMAP: implicit TLS on 9993, STARTTLS on 9143.  POP3: implicit TLS on 9995, STLS on 9110.
  Submission: implicit TLS on 9465, STARTTLS on 9587 (through Dovecot and a
  demo Postfix into the demo user's INBOX).

Try, from another terminal:
  curl --cacert $d/server.pem 'imaps://localhost:9993/INBOX;UID=1' -u demo:demo
  curl --ssl-reqd --cacert $d/server.pem 'imap://localhost:9143/INBOX' -X 'FETCH 1 ENVELOPE' -u demo:demo
  curl --cacert $d/server.pem 'pop3s://localhost:9995/1' -u demo:demo
  printf 'Subject: hello\\r\\n\\r\\nsent through Postern\\r\\n' |
    curl --cacert $d/server.pem smtps://localhost:9465 -u demo:demo \\
      --mail-from demo@localhost --mail-rcpt demo@localhost -T -
  curl --cacert $d/server.pem 'imaps://localhost:9993/INBOX' -X 'FETCH 1:* ENVELOPE' -u demo:demo
  openssl s_client -quiet -connect 127.0.0.1:9993     (then: a LOGIN demo demo)
  ./postern -c etc/postern.conf -a 'show backends'     (the admin interface)

Ctrl-C stops Postern, the demo Dovecot and the demo Postfix.

TXT
"$top/postern" -f -c "$here/postern.conf"
