/*
 * ldap_filter: the pure text work of Postern's LDAP directory. It escapes
 * assertion values (RFC 4515 section 3), checks the configured search filter
 * template and expands it for a login name, and reads and vets the
 * mailbox-host value a directory entry names. No I/O, no allocation, no
 * libldap: only strings in, strings out, so all of it is unit-tested and
 * fuzzed. It never decides who may log in; it only makes the text safe.
 */
#ifndef POSTERN_LDAP_FILTER_H
#define POSTERN_LDAP_FILTER_H

#include <stdbool.h>
#include <stddef.h>

/* The longest mailbox-host value ldap_host_split accepts (bytes). */
#define LDAP_HOST_VALUE_MAX 255

/*
 * Escape one assertion value (RFC 4515 section 3) as \HH, lower-case hex:
 * '*' '(' ')' '\\' and NUL (\2a \28 \29 \5c \00) because they would end or
 * widen the filter, every control byte (< 0x20, 0x7f) so no line break or
 * escape sequence reaches a log or a server, and every byte >= 0x80 that is
 * not part of a well-formed UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF). Well-formed UTF-8 passes unchanged:
 * RFC 4515 allows it (UTFMB) and servers compare it as written; a stray
 * Latin-1 byte is escaped because the grammar does not allow it raw, and
 * the server still sees the same octet. in has inlen bytes (may hold NUL).
 * Writes a NUL-terminated string; returns its length, or -1 when out is too
 * small (out is then "" when size > 0: a cut-off filter is never used).
 */
long ldap_escape_value(const char *in, size_t inlen, char *out, size_t size);

/*
 * Expand a filter template for a login name: %u the whole login, %n its
 * local part (before the last '@'; the whole login when there is none), %d
 * its domain (after the last '@'; "" when there is none), %r the client's
 * IP address (client: as inet_ntop writes it), %% one '%'. The
 * last '@' because a quoted local part may hold one ("a@b"@example.org).
 * Every substituted value goes through ldap_escape_value and is never
 * scanned again, so a '%' in the login stays a '%'. An empty login, local
 * part or domain gives an empty value ("(uid=)"): refusing empty logins is
 * the session layer's job, as is refusing NUL (a C string cannot carry one).
 *
 * Returns -1 for every template ldap_filter_check refuses, not only for an
 * unknown placeholder: a template that somehow skipped the loader still
 * cannot put login bytes outside an assertion value. Otherwise writes a
 * NUL-terminated filter and returns its length, or -1 when out is too small
 * (out is then "" when size > 0).
 */
long ldap_expand_filter(const char *tmpl, const char *login,
                        const char *client, char *out, size_t size);

/* Whether a template (one ldap_filter_check accepts) uses %r: then a
 * verdict holds for one client address only. */
bool ldap_filter_uses_client(const char *tmpl);

/*
 * Check a filter template at configuration time. NULL when it is fine, else
 * a constant message naming the first problem. The template must be one
 * RFC 4515 filter: "(" then '&' or '|' with one or more filters, '!' with
 * exactly one, or an item "attr op value" with op one of = ~= >= <= :=
 * (extensible), then ")"; no spaces between filters; nesting at most 16.
 * Checked, and why:
 *   - "must be one filter enclosed in parentheses", "unbalanced
 *     parentheses", "unescaped '(' in an assertion value (write \28)":
 *     libldap would refuse or misread such a filter on every lookup;
 *   - "unknown placeholder: only %u, %n, %d, %r and %% are allowed" (also a
 *     lone '%' at the end): a typo like %U would otherwise search for the
 *     literal text;
 *   - "placeholder outside an assertion value": escaping makes a login safe
 *     only as a value; as an attribute description ("(%u)") the user would
 *     choose what is compared;
 *   - "bad escape: '\' must be followed by two hex digits": the old RFC 1960
 *     habit "\(" is not RFC 4515;
 *   - "no %u or %n placeholder: every user would match the same entry":
 *     %d alone names a domain, not a user;
 *   - attribute descriptions of letters, digits, '-', ';', '.', ':' only;
 *     no control characters; at least one filter inside '&' and '|' (the
 *     RFC 4526 absolute true/false "(&)" "(|)" is refused: a lookup that
 *     matches everything or nothing is a mistake here).
 * Not checked: that the attributes exist in the schema, or that a
 * placeholder is outside a '!' (the server and the operator know better).
 */
const char *ldap_filter_check(const char *tmpl);

/*
 * A mailbox-host value from the directory: "name", "name:port", "1.2.3.4",
 * "1.2.3.4:143", "[2001:db8::1]", "[2001:db8::1]:143". Splits it into host
 * (without brackets, NUL-terminated in hostsize bytes) and port (0 when
 * absent). Returns 0, or -1 when malformed (host is then "" and port 0):
 *   - empty, or longer than LDAP_HOST_VALUE_MAX bytes;
 *   - a port that is not 1..65535 in decimal digits without a leading zero,
 *     or an empty port ("name:");
 *   - a host name with a byte other than letters, digits, '-', '.', '_'
 *     (so no space, control byte or '%'), an empty label ("a..b", ".a",
 *     "a."), a label over 63 bytes or one starting with '-';
 *   - a host name that is not a canonical dotted quad (four decimal parts
 *     0..255, no leading zeros) although its last label is all digits (no
 *     top-level domain is) or every label is a number to inet_aton(3)
 *     (decimal, octal, "0x" hex): libc would read "1.2.3", "0x7f000001",
 *     "1.0x2", "017.0.0.1" or "2130706433" as addresses that no allow-list
 *     pattern shows;
 *   - an IPv6 address without brackets (several ':'), an unclosed or empty
 *     bracket, anything but ":port" after ']', or bracket contents that
 *     inet_pton(3) does not take as IPv6 (no zone ids, no IPv4 in brackets);
 *   - a host that does not fit in hostsize.
 */
int ldap_host_split(const char *value, char *host, size_t hostsize,
                    unsigned *port);

/*
 * Whether the mailbox-host value may be used: true when value is
 * well-formed (ldap_host_split) and one of the npatterns allow-list
 * patterns matches it; npatterns 0 allows nothing. A pattern is a host
 * pattern, optionally ":" and a port pattern, written like the values
 * ("*.mail.example.org", "10.1.*:143", "mbox[0-9].example.org:*",
 * "[2001:db8::*]:993"). Host and port are matched separately, each with
 * the shell wildcards of fnmatch(3) under FNM_CASEFOLD: '*', '?', bracket
 * expressions with ranges and '!' or '^' negation ([[:class:]] is not
 * supported), '\' quoting the next byte.
 *
 * Decisions, as an operator would expect them:
 *   - A pattern without a port allows the host on any port or none: the
 *     list names trusted backends, and "*.mail.example.org" should not need
 *     a twin per port. Write a port to pin it: "mbox1.example.org:143"
 *     allows only an explicit ":143".
 *   - A value without a port has an empty port text, which only a port
 *     pattern of '*' matches: "host:143" refuses plain "host" even when the
 *     default port is 143 (this module does not know the default);
 *     "host:*" is the same as "host".
 *   - Because host and port are matched apart, no wildcard in the host
 *     pattern can ever swallow the port: "10.1.*:143" never allows
 *     "10.1.2.3:25". Inside an IPv6 host '*' does cross ':' ("[2001:db8:*]"
 *     allows every address that starts so, as written).
 *   - IPv6 patterns are written in brackets, like the values; a pattern
 *     starting with '[' is one when the text up to its last ']' holds a
 *     ':' and nothing but ":port" follows. Addresses are compared as text
 *     (case folded): "2001:db8:0::1" does not match "2001:db8::1".
 *   - ':' is only the port separator: a pattern with a second ':' outside
 *     IPv6 brackets, an empty host or an empty port pattern matches nothing.
 */
bool ldap_host_allowed(const char *value, const char *const *patterns,
                       size_t npatterns);

#endif
