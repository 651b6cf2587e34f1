/*
 * ldap_filter: escapes RFC 4515 assertion values, checks a filter template
 * with a small per-character state machine and expands it for a login, and
 * splits and allow-lists the mailbox-host value of a directory entry. It
 * owns no memory, does no I/O and never links libldap; every error text is
 * a constant that never carries directory or client bytes.
 */
#include "ldap_filter.h"

#include <arpa/inet.h>
#include <assert.h>
#include <limits.h>
#include <string.h>

/* Nesting of '&' '|' '!' in a template: real ones use two or three. */
#define FILTER_DEPTH_MAX 16
/* RFC 1035 section 2.3.4. */
#define LABEL_MAX 63
/* "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" and its NUL. */
#define IPV6_TEXT_MAX 46

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

static unsigned char fold(unsigned char c)
{
	return (unsigned char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
}

/* ---- output ---- */

/* Where text goes; `fail` once anything did not fit (room for a NUL kept). */
struct outbuf {
	char *buf;
	size_t size;
	size_t used;
	bool fail;
};

static void put_bytes(struct outbuf *o, const char *s, size_t n)
{
	if (o->fail || o->size - o->used <= n) {
		o->fail = true;
		return;
	}
	memcpy(o->buf + o->used, s, n);
	o->used += n;
}

static void put_hex(struct outbuf *o, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char e[3] = {'\\', hex[c >> 4], hex[c & 15]};

	put_bytes(o, e, sizeof e);
}

/* NUL-terminate and return the length, or clear the buffer and return -1. */
static long finish(struct outbuf *o)
{
	if (o->fail || o->used >= o->size || o->used > LONG_MAX) {
		if (o->size > 0)
			o->buf[0] = '\0';
		return -1;
	}
	o->buf[o->used] = '\0';
	return (long)o->used;
}

/* ---- escaping (RFC 4515 section 3) ---- */

/*
 * Length of the well-formed UTF-8 sequence at s[0..n) (RFC 3629 section 4),
 * or 0 when s[0] does not start one.
 */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0; /* overlong */
	else if (s[0] == 0xed)
		hi = 0x9f; /* UTF-16 surrogates */
	else if (s[0] == 0xf0)
		lo = 0x90; /* overlong */
	else if (s[0] == 0xf4)
		hi = 0x8f; /* past U+10FFFF */
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

static void put_escaped(struct outbuf *o, const char *in, size_t inlen)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i = 0;

	while (i < inlen) {
		unsigned char c = s[i];
		size_t n;

		if (c == '*' || c == '(' || c == ')' || c == '\\' || c == '\0' ||
		    is_control(c)) {
			put_hex(o, c);
			i++;
		} else if (c < 0x80) {
			put_bytes(o, in + i, 1);
			i++;
		} else if ((n = utf8_len(s + i, inlen - i)) != 0) {
			put_bytes(o, in + i, n);
			i += n;
		} else {
			put_hex(o, c);
			i++;
		}
	}
}

long ldap_escape_value(const char *in, size_t inlen, char *out, size_t size)
{
	struct outbuf o = {.buf = out, .size = out != NULL ? size : 0};

	assert(in != NULL || inlen == 0);
	put_escaped(&o, in, inlen);
	return finish(&o);
}

/* ---- the template ---- */

enum tmpl_state {
	T_OPEN,  /* expecting the '(' of the whole filter */
	T_COMP,  /* after '(': '&' '|' '!' or an attribute */
	T_ATTR,  /* in an item's attribute description */
	T_VALUE, /* in an item's assertion value, up to ')' */
	T_LIST,  /* inside '&' '|' '!': another '(' or the closing ')' */
	T_END,   /* the whole filter is closed */
};

struct tmpl_check {
	const unsigned char *t;
	size_t i;           /* the byte being read */
	enum tmpl_state state;
	size_t attrlen;     /* bytes of the current attribute description */
	char op[FILTER_DEPTH_MAX];        /* '&' '|' '!' per open set */
	unsigned children[FILTER_DEPTH_MAX];
	size_t depth;
	bool user;          /* %u or %n seen */
};

static bool is_attr_byte(unsigned char c)
{
	/* RFC 4512 descr / numericoid, options after ';', extensible ':' */
	return is_alpha(c) || is_digit(c) || c == '-' || c == ';' || c == '.' ||
	       c == ':';
}

/* An item or a set has just been closed by its ')'. */
static void filter_closed(struct tmpl_check *k)
{
	if (k->depth == 0) {
		k->state = T_END;
		return;
	}
	k->children[k->depth - 1]++;
	k->state = T_LIST;
}

static const char *on_open(struct tmpl_check *k, unsigned char c)
{
	if (c != '(')
		return "must be one filter enclosed in parentheses";
	k->state = T_COMP;
	return NULL;
}

static const char *on_comp(struct tmpl_check *k, unsigned char c)
{
	if (c == '&' || c == '|' || c == '!') {
		if (k->depth == FILTER_DEPTH_MAX)
			return "filter nested too deeply";
		k->op[k->depth] = (char)c;
		k->children[k->depth] = 0;
		k->depth++;
		k->state = T_LIST;
		return NULL;
	}
	if (c == '(' || c == ')')
		return "'(' must be followed by '&', '|', '!' or an attribute";
	k->state = T_ATTR;
	k->attrlen = 0;
	k->i--; /* read c again as the attribute's first byte */
	return NULL;
}

/* The filter type after the attribute: = ~= >= <= and extensible :=. */
static const char *on_attr(struct tmpl_check *k, unsigned char c)
{
	unsigned char next = k->t[k->i + 1];

	if (c == '%')
		return "placeholder outside an assertion value";
	if (c == '=' || ((c == '~' || c == '>' || c == '<' || c == ':') &&
	                 next == '=')) {
		if (k->attrlen == 0)
			return "attribute description expected";
		if (c != '=')
			k->i++;
		k->state = T_VALUE;
		return NULL;
	}
	if (c == '(' || c == ')')
		return "filter item without '='";
	if (!is_attr_byte(c))
		return "bad character in attribute description";
	k->attrlen++;
	return NULL;
}

static const char *on_value(struct tmpl_check *k, unsigned char c)
{
	const unsigned char *t = k->t + k->i;

	switch (c) {
	case '\\':
		if (!is_hex(t[1]) || !is_hex(t[2]))
			return "bad escape: '\\' must be followed by two hex digits";
		k->i += 2;
		return NULL;
	case '%':
		if (t[1] != 'u' && t[1] != 'n' && t[1] != 'd' && t[1] != 'r' &&
		    t[1] != '%')
			return "unknown placeholder: only %u, %n, %d, %r and %% are "
			       "allowed";
		if (t[1] == 'u' || t[1] == 'n')
			k->user = true;
		k->i++;
		return NULL;
	case '(':
		return "unescaped '(' in an assertion value (write \\28)";
	case ')':
		filter_closed(k);
		return NULL;
	default:
		return NULL;
	}
}

static const char *on_list(struct tmpl_check *k, unsigned char c)
{
	size_t top = k->depth - 1;

	if (c == '(') {
		if (k->op[top] == '!' && k->children[top] == 1)
			return "'!' takes exactly one filter";
		k->state = T_COMP;
		return NULL;
	}
	if (c == ')') {
		if (k->children[top] == 0)
			return "'&', '|' and '!' need a filter inside";
		k->depth--;
		filter_closed(k);
		return NULL;
	}
	return "unexpected character between filters";
}

static const char *on_end(unsigned char c)
{
	if (c == ')')
		return "unbalanced parentheses";
	return "must be one filter enclosed in parentheses";
}

static const char *tmpl_step(struct tmpl_check *k, unsigned char c)
{
	if (is_control(c))
		return "control character in filter";
	switch (k->state) {
	case T_OPEN:
		return on_open(k, c);
	case T_COMP:
		return on_comp(k, c);
	case T_ATTR:
		return on_attr(k, c);
	case T_VALUE:
		return on_value(k, c);
	case T_LIST:
		return on_list(k, c);
	case T_END:
		return on_end(c);
	}
	return "internal error";
}

const char *ldap_filter_check(const char *tmpl)
{
	struct tmpl_check k = {.t = (const unsigned char *)tmpl,
	                       .state = T_OPEN};
	const char *err;

	assert(tmpl != NULL);
	if (tmpl[0] == '\0')
		return "empty filter";
	for (k.i = 0; k.t[k.i] != '\0'; k.i++) {
		err = tmpl_step(&k, k.t[k.i]);
		if (err != NULL)
			return err;
	}
	if (k.state != T_END)
		return "unbalanced parentheses";
	if (!k.user)
		return "no %u or %n placeholder: every user would match the same "
		       "entry";
	return NULL;
}

bool ldap_filter_uses_client(const char *tmpl)
{
	for (const char *p = strchr(tmpl, '%'); p; p = strchr(p + 2, '%')) {
		if (p[1] == 'r')
			return true;
		if (!p[1])
			break;
	}
	return false;
}

long ldap_expand_filter(const char *tmpl, const char *login,
                        const char *client, char *out, size_t size)
{
	struct outbuf o = {.buf = out, .size = out != NULL ? size : 0};
	const char *at, *domain;
	size_t loginlen, locallen, i;

	assert(tmpl != NULL && login != NULL && client != NULL);
	if (ldap_filter_check(tmpl) != NULL) {
		o.fail = true;
		return finish(&o);
	}
	loginlen = strlen(login);
	at = strrchr(login, '@');
	locallen = at != NULL ? (size_t)(at - login) : loginlen;
	domain = at != NULL ? at + 1 : "";
	for (i = 0; tmpl[i] != '\0'; i++) {
		if (tmpl[i] != '%') {
			put_bytes(&o, tmpl + i, 1);
			continue;
		}
		i++; /* the check saw a known letter after every '%' */
		if (tmpl[i] == 'u')
			put_escaped(&o, login, loginlen);
		else if (tmpl[i] == 'n')
			put_escaped(&o, login, locallen);
		else if (tmpl[i] == 'd')
			put_escaped(&o, domain, strlen(domain));
		else if (tmpl[i] == 'r')
			put_escaped(&o, client, strlen(client));
		else
			put_bytes(&o, "%", 1);
	}
	return finish(&o);
}

/* ---- mailbox hosts ---- */

/* Four decimal parts 0..255 without leading zeros, nothing else. */
static bool ipv4_canonical(const char *s, size_t n)
{
	size_t i = 0, part;

	for (part = 0; part < 4; part++) {
		size_t start = i;
		unsigned v = 0;

		while (i < n && is_digit((unsigned char)s[i]) && i - start < 3)
			v = v * 10 + (unsigned)(s[i++] - '0');
		if (i == start || v > 255 || (s[start] == '0' && i - start > 1))
			return false;
		if (part < 3) {
			if (i >= n || s[i] != '.')
				return false;
			i++;
		}
	}
	return i == n;
}

static bool all_digits(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!is_digit((unsigned char)s[i]))
			return false;
	return true;
}

/*
 * Whether the label s[0..n) is a number to inet_aton(3): decimal, octal
 * (a leading 0) or hex ("0x" and hex digits, possibly none).
 */
static bool label_numeric(const char *s, size_t n)
{
	size_t i;
	bool hex = n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');

	if (!hex)
		return all_digits(s, n);
	for (i = 2; i < n; i++)
		if (!is_hex((unsigned char)s[i]))
			return false;
	return true;
}

/*
 * Labels of letters, digits, '-', '_'; 1..63 bytes; no leading '-'. A name
 * that is all numbers to inet_aton(3) ("1.2.3", "0x7f000001", "1.0x2"), or
 * whose last label is all digits (no top-level domain is: RFC 3696 section
 * 2), must be a canonical dotted quad, so the text the allow-list sees is
 * the address a resolver will use.
 */
static bool host_name_ok(const char *s, size_t n)
{
	size_t i, start = 0;
	bool numeric = true, last_digits = false;

	for (i = 0; i <= n; i++) {
		unsigned char c = i < n ? (unsigned char)s[i] : '.';
		size_t len = i - start;

		if (c == '.') {
			if (len == 0 || len > LABEL_MAX)
				return false;
			numeric = numeric && label_numeric(s + start, len);
			last_digits = all_digits(s + start, len);
			start = i + 1;
			continue;
		}
		if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_')
			return false;
		if (c == '-' && len == 0)
			return false;
	}
	return !(numeric || last_digits) || ipv4_canonical(s, n);
}

/* The bracket contents: hex digits, ':' and '.' that inet_pton takes. */
static bool ipv6_ok(const char *s, size_t n)
{
	char text[IPV6_TEXT_MAX];
	unsigned char bin[16];
	size_t i;

	if (n == 0 || n >= sizeof text)
		return false;
	for (i = 0; i < n; i++)
		if (!is_hex((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
			return false;
	memcpy(text, s, n);
	text[n] = '\0';
	return inet_pton(AF_INET6, text, bin) == 1;
}

/* 1..65535 in decimal, no sign, no leading zero. */
static bool port_parse(const char *s, unsigned *port)
{
	unsigned v = 0;
	size_t i;

	if (s[0] == '\0' || s[0] == '0')
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		if (!is_digit((unsigned char)s[i]) || i == 5)
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*port = v;
	return true;
}

/* Where the host is inside value, and the text after it ("" or ":port"). */
static bool host_locate(const char *value, size_t n, const char **h,
                        size_t *hlen, const char **rest)
{
	const char *close, *colon;

	if (value[0] == '[') {
		close = memchr(value, ']', n);
		if (close == NULL)
			return false;
		*h = value + 1;
		*hlen = (size_t)(close - value) - 1;
		*rest = close + 1;
		return ipv6_ok(*h, *hlen);
	}
	colon = memchr(value, ':', n);
	*h = value;
	*hlen = colon != NULL ? (size_t)(colon - value) : n;
	*rest = value + *hlen;
	return host_name_ok(*h, *hlen);
}

int ldap_host_split(const char *value, char *host, size_t hostsize,
                    unsigned *port)
{
	const char *h, *rest;
	size_t n, hlen;
	unsigned p = 0;

	assert(value != NULL && port != NULL);
	assert(host != NULL || hostsize == 0);
	*port = 0;
	if (hostsize > 0)
		host[0] = '\0';
	n = strnlen(value, LDAP_HOST_VALUE_MAX + 1);
	if (n == 0 || n > LDAP_HOST_VALUE_MAX)
		return -1;
	if (!host_locate(value, n, &h, &hlen, &rest))
		return -1;
	/* "" or ":port"; a second ':' (a bare IPv6) fails in port_parse */
	if (rest[0] != '\0' && (rest[0] != ':' || !port_parse(rest + 1, &p)))
		return -1;
	if (hlen >= hostsize)
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = p;
	return 0;
}

/* ---- allow-list patterns ---- */

/*
 * Skip one pattern byte, or a '\' and the byte it quotes, at p[*i..n);
 * returns the byte.
 */
static unsigned char pat_byte(const char *p, size_t n, size_t *i)
{
	if (p[*i] == '\\' && *i + 1 < n)
		(*i)++;
	return (unsigned char)p[(*i)++];
}

/*
 * The bracket expression at p[i] == '[': 1 when it holds c, 0 when not,
 * -1 when it has no closing ']' (then the '[' is an ordinary byte). *end is
 * set past the ']'. A ']' right after "[" or "[!" belongs to the set.
 */
static int bracket_match(const char *p, size_t n, size_t i, unsigned char c,
                         size_t *end)
{
	bool negate = false, hit = false, first = true;

	i++;
	if (i < n && (p[i] == '!' || p[i] == '^')) {
		negate = true;
		i++;
	}
	while (i < n && (p[i] != ']' || first)) {
		unsigned char lo = pat_byte(p, n, &i), hi = lo;

		if (i + 1 < n && p[i] == '-' && p[i + 1] != ']') {
			i++;
			hi = pat_byte(p, n, &i);
		}
		if (fold(c) >= fold(lo) && fold(c) <= fold(hi))
			hit = true;
		first = false;
	}
	if (i >= n)
		return -1;
	*end = i + 1;
	return hit != negate;
}

/*
 * Whether the pattern byte(s) at p[*i] match c: '?', a bracket expression,
 * a quoted byte or a byte equal but for case. Advances *i on a match.
 */
static bool one_match(const char *p, size_t n, size_t *i, unsigned char c)
{
	size_t j = *i;
	int b;

	if (p[j] == '?') {
		*i = j + 1;
		return true;
	}
	if (p[j] == '[') {
		b = bracket_match(p, n, j, c, i);
		if (b >= 0)
			return b == 1;
	}
	if (fold(pat_byte(p, n, &j)) != fold(c))
		return false;
	*i = j;
	return true;
}

/*
 * p[0..pn) against the whole of s[0..sn), fnmatch(3)-style with
 * FNM_CASEFOLD. On a mismatch after a '*', the '*' takes one byte more and
 * the rest is tried again: O(pn * sn), both at most a few hundred bytes.
 */
static bool wild_match(const char *p, size_t pn, const char *s, size_t sn)
{
	size_t pi = 0, si = 0, star_p = 0, star_s = 0;
	bool star = false;

	while (si < sn) {
		if (pi < pn && p[pi] == '*') {
			while (pi < pn && p[pi] == '*')
				pi++;
			star = true;
			star_p = pi;
			star_s = si;
			continue;
		}
		if (pi < pn && one_match(p, pn, &pi, (unsigned char)s[si])) {
			si++;
			continue;
		}
		if (!star)
			return false;
		pi = star_p;
		si = ++star_s;
	}
	while (pi < pn && p[pi] == '*')
		pi++;
	return pi == pn;
}

struct host_pattern {
	const char *host;
	size_t hostlen;
	const char *port; /* NULL: any port or none */
};

/* Split a pattern into its host part and optional port part. */
static bool pattern_split(const char *pat, struct host_pattern *hp)
{
	const char *close = pat[0] == '[' ? strrchr(pat, ']') : NULL;
	const char *rest;

	if (close != NULL && (close[1] == '\0' || close[1] == ':') &&
	    memchr(pat, ':', (size_t)(close - pat)) != NULL) {
		hp->host = pat + 1; /* IPv6: the brackets are not matched */
		hp->hostlen = (size_t)(close - pat) - 1;
		rest = close + 1;
	} else {
		hp->host = pat;
		hp->hostlen = strcspn(pat, ":");
		rest = pat + hp->hostlen;
	}
	hp->port = rest[0] == ':' ? rest + 1 : NULL;
	if (hp->hostlen == 0)
		return false;
	return hp->port == NULL || (hp->port[0] != '\0' &&
	                            strchr(hp->port, ':') == NULL);
}

bool ldap_host_allowed(const char *value, const char *const *patterns,
                       size_t npatterns)
{
	char host[LDAP_HOST_VALUE_MAX + 1];
	const char *porttext;
	unsigned port;
	size_t i, hostlen;

	assert(value != NULL && (patterns != NULL || npatterns == 0));
	if (ldap_host_split(value, host, sizeof host, &port) != 0)
		return false;
	hostlen = strlen(host);
	/* the port as written: validated canonical decimal, or "" */
	porttext = port != 0 ? strrchr(value, ':') + 1 : "";
	for (i = 0; i < npatterns; i++) {
		struct host_pattern hp;

		assert(patterns[i] != NULL);
		if (!pattern_split(patterns[i], &hp))
			continue;
		if (!wild_match(hp.host, hp.hostlen, host, hostlen))
			continue;
		if (hp.port == NULL ||
		    wild_match(hp.port, strlen(hp.port), porttext,
		               strlen(porttext)))
			return true;
	}
	return false;
}
