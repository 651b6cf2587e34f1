/*
 * proxyproto: parses a PROXY protocol header (v1 line or v2 block) from the
 * bytes read so far, checking as much as has arrived so a bad header is
 * refused early, and builds v2 headers. It must never read past the bytes
 * it is given, never accept what the spec says to reject, and never look
 * at the bytes after the header: they belong to the mail protocol.
 * Section numbers below are those of haproxy's doc/proxy-protocol.txt.
 */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

enum { BAD = -1, MORE = 0, OK = 1 };

/* ---- shared helpers ---- */

static int fail(const char **why, const char *reason)
{
	if (why)
		*why = reason;
	return BAD;
}

static unsigned be16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/* The port, already in network order, into an address whose family is set. */
static void set_port(struct sockaddr_storage *ss, const unsigned char net[2])
{
	if (ss->ss_family == AF_INET)
		memcpy(&((struct sockaddr_in *)ss)->sin_port, net, 2);
	else
		memcpy(&((struct sockaddr_in6 *)ss)->sin6_port, net, 2);
}

/* Where the raw address of a family goes, the family set on the way. */
static void *addr_slot(struct sockaddr_storage *ss, int family)
{
	ss->ss_family = (sa_family_t)family;
	if (family == AF_INET)
		return &((struct sockaddr_in *)ss)->sin_addr;
	return &((struct sockaddr_in6 *)ss)->sin6_addr;
}

static socklen_t addr_len(int family)
{
	return family == AF_INET ? sizeof(struct sockaddr_in)
	                         : sizeof(struct sockaddr_in6);
}

/* ---- version 1: one text line (section 2.1) ---- */

#define V1_PREFIX "PROXY "
#define V1_PREFIX_LEN 6
#define V1_UNKNOWN "UNKNOWN"
#define V1_UNKNOWN_LEN 7
#define V1_FIELDS 5         /* protocol, src, dst, sport, dport */
#define V1_ADDR4_MAX 15     /* "255.255.255.255" */
#define V1_ADDR6_MAX 45     /* INET6_ADDRSTRLEN - 1, mapped form included */
#define V1_PORT_DIGITS 5
/* The CR must come before this index for the line to fit in PP_V1_MAX. */
#define V1_CR_LIMIT (PP_V1_MAX - 1)

static bool v1_addr_char(unsigned char c, int family)
{
	if ((c >= '0' && c <= '9') || c == '.')
		return true;
	return family == AF_INET6 &&
	       (c == ':' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
}

static bool v1_is_tcp(const unsigned char *f, size_t n)
{
	return n == 4 && memcmp(f, "TCP", 3) == 0 &&
	       (f[3] == '4' || f[3] == '6');
}

/* "TCP4" or "TCP6"; while incomplete, a prefix of either. */
static int v1_proto(const unsigned char *f, size_t n, bool done, int *family,
                    const char **why)
{
	if (!done && (v1_is_tcp(f, n) || (n <= 3 && memcmp(f, "TCP", n) == 0)))
		return OK;
	if (!done || !v1_is_tcp(f, n))
		return fail(why, "bad v1 protocol");
	*family = f[3] == '4' ? AF_INET : AF_INET6;
	return OK;
}

/*
 * An address of the announced family, as inet_pton reads it (glibc refuses
 * leading zeros in IPv4, as the spec asks). While incomplete, only the
 * characters and the length are checked.
 */
static int v1_addr(const unsigned char *f, size_t n, bool done, int family,
                   struct sockaddr_storage *ss, const char **why)
{
	char text[V1_ADDR6_MAX + 1];
	size_t max = family == AF_INET ? V1_ADDR4_MAX : V1_ADDR6_MAX, i;

	if (n > max)
		return fail(why, "bad v1 address");
	for (i = 0; i < n; i++)
		if (!v1_addr_char(f[i], family))
			return fail(why, "bad v1 address");
	if (!done)
		return OK;
	memcpy(text, f, n);
	text[n] = '\0';
	if (inet_pton(family, text, addr_slot(ss, family)) != 1)
		return fail(why, "bad v1 address");
	return OK;
}

/* Decimal 0..65535, digits only, no leading zero but "0" itself. */
static int v1_port(const unsigned char *f, size_t n, bool done,
                   struct sockaddr_storage *ss, const char **why)
{
	unsigned long v = 0;
	unsigned char net[2];
	size_t i;

	if (n > V1_PORT_DIGITS || (n > 1 && f[0] == '0'))
		return fail(why, "bad v1 port");
	for (i = 0; i < n; i++) {
		if (f[i] < '0' || f[i] > '9')
			return fail(why, "bad v1 port");
		v = v * 10 + (unsigned long)(f[i] - '0');
	}
	if (v > 65535 || (done && n == 0))
		return fail(why, "bad v1 port");
	if (done) {
		net[0] = (unsigned char)(v >> 8);
		net[1] = (unsigned char)v;
		set_port(ss, net);
	}
	return OK;
}

static int v1_field(unsigned idx, const unsigned char *f, size_t n, bool done,
                    int *family, struct pp_info *out, const char **why)
{
	switch (idx) {
	case 0:
		return v1_proto(f, n, done, family, why);
	case 1:
		return v1_addr(f, n, done, *family, &out->src, why);
	case 2:
		return v1_addr(f, n, done, *family, &out->dst, why);
	case 3:
		return v1_port(f, n, done, &out->src, why);
	default:
		return v1_port(f, n, done, &out->dst, why);
	}
}

/*
 * "TCP4 src dst sport dport", fields split by exactly one space. A field
 * is done when a space follows it, or when it is the last one and the
 * line has ended (complete). Empty fields (double spaces) and a sixth
 * field (anything after the destination port) are refused.
 */
static int v1_tcp(const unsigned char *s, size_t n, bool complete,
                  struct pp_info *out, const char **why)
{
	size_t start = 0, end;
	unsigned idx = 0;
	int family = AF_UNSPEC;

	for (;; idx++) {
		if (idx == V1_FIELDS)
			return fail(why, "bytes after the v1 destination port");
		for (end = start; end < n && s[end] != ' '; end++)
			continue;
		if (v1_field(idx, s + start, end - start, end < n || complete,
		             &family, out, why) < 0)
			return BAD;
		if (end == n)
			break;
		start = end + 1;
	}
	if (!complete)
		return MORE;
	if (idx != V1_FIELDS - 1)
		return fail(why, "v1 line too short");
	out->addrlen = addr_len(family);
	return OK;
}

/*
 * What follows "PROXY ", up to the CR when complete. For UNKNOWN the
 * receiver must ignore anything before the CRLF, so anything goes.
 */
static int v1_rest(const unsigned char *s, size_t n, bool complete,
                   struct pp_info *out, const char **why)
{
	if (n >= V1_UNKNOWN_LEN && memcmp(s, V1_UNKNOWN, V1_UNKNOWN_LEN) == 0) {
		out->local = true;
		return complete ? OK : MORE;
	}
	if (!complete && n < V1_UNKNOWN_LEN && memcmp(s, V1_UNKNOWN, n) == 0)
		return MORE;
	return v1_tcp(s, n, complete, out, why);
}

static size_t v1_eol(const unsigned char *buf, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (buf[i] == '\r' || buf[i] == '\n')
			break;
	return i;
}

/*
 * The line ends at the first CR, which must be followed by LF: a bare CR
 * or LF is refused (section 2.1), as is a line whose CRLF would end past
 * PP_V1_MAX. The fields are checked before the CRLF arrives.
 */
static int v1_parse(const unsigned char *buf, size_t len, struct pp_info *out,
                    const char **why)
{
	size_t scan = len < V1_CR_LIMIT ? len : V1_CR_LIMIT;
	size_t cr = v1_eol(buf, scan);
	const unsigned char *s = buf + V1_PREFIX_LEN;

	if (cr == scan) {
		if (len >= V1_CR_LIMIT)
			return fail(why, "v1 line too long");
		if (v1_rest(s, len - V1_PREFIX_LEN, false, out, why) < 0)
			return BAD;
		return MORE;
	}
	if (buf[cr] == '\n')
		return fail(why, "v1 line not ended by CRLF");
	if (v1_rest(s, cr - V1_PREFIX_LEN, true, out, why) < 0)
		return BAD;
	if (cr + 1 == len)
		return MORE;
	if (buf[cr + 1] != '\n')
		return fail(why, "v1 line not ended by CRLF");
	return (int)(cr + 2);
}

/* ---- version 2: binary block (section 2.2) ---- */

#define V2_SIG_LEN 12
#define V2_HDR_LEN 16
#define V2_VERSION 0x20
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_FAM_UNSPEC 0x00
#define V2_FAM_TCP4 0x11
#define V2_FAM_TCP6 0x21
#define V2_FAM_MAX 0x3   /* AF_UNIX */
#define V2_PROTO_MAX 0x2 /* DGRAM */
#define V2_ADDR4_LEN 12 /* 2 * 4 + 2 * 2 */
#define V2_ADDR6_LEN 36 /* 2 * 16 + 2 * 2 */
#define V2_TLV_HDR 3    /* type, length high, length low */

static const unsigned char v2_sig[V2_SIG_LEN] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};

/*
 * The address family a PROXY command's family/transport byte gives us:
 * AF_INET or AF_INET6 for TCP (0x11, 0x21), -1 when a nibble has a value
 * the spec does not define (family above 3, transport above 2: these
 * "must be rejected as invalid by receivers"), else AF_UNSPEC. The spec
 * lets a receiver that does not support a valid combination (UDP 0x12,
 * 0x22, UNIX 0x31, 0x32) "fall back to the UNSPEC mode", and lets it
 * accept UNSPEC (0x00, and either nibble 0) using the real endpoints and
 * ignoring the address information: we do that, so the length of those
 * address blocks is not checked and no TLV is looked for after them.
 */
static int v2_family(unsigned char fam)
{
	if (fam == V2_FAM_TCP4)
		return AF_INET;
	if (fam == V2_FAM_TCP6)
		return AF_INET6;
	if ((fam >> 4) > V2_FAM_MAX || (fam & 0x0F) > V2_PROTO_MAX)
		return -1;
	return AF_UNSPEC;
}

static size_t v2_addr_len(int family)
{
	if (family == AF_INET)
		return V2_ADDR4_LEN;
	return family == AF_INET6 ? V2_ADDR6_LEN : 0;
}

/*
 * The fixed 16 bytes, each checked as soon as it has arrived. For LOCAL
 * the family byte is not looked at: the receiver must "discard the
 * protocol block including the family which is ignored".
 */
static int v2_head(const unsigned char *buf, size_t len, const char **why)
{
	size_t n = len < V2_SIG_LEN ? len : V2_SIG_LEN;
	unsigned cmd;

	if (memcmp(buf, v2_sig, n) != 0)
		return fail(why, "not a PROXY header");
	if (len <= V2_SIG_LEN)
		return MORE;
	if ((buf[12] & 0xF0) != V2_VERSION)
		return fail(why, "v2 version is not 2");
	cmd = buf[12] & 0x0F;
	if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY)
		return fail(why, "v2 unknown command");
	if (len < 14)
		return MORE;
	if (cmd == V2_CMD_PROXY && v2_family(buf[13]) < 0)
		return fail(why, "v2 unknown family or transport");
	if (len < V2_HDR_LEN)
		return MORE;
	if (be16(buf + 14) > PP_V2_PAYLOAD_MAX)
		return fail(why, "v2 length over limit");
	if (cmd == V2_CMD_PROXY &&
	    be16(buf + 14) < v2_addr_len(v2_family(buf[13])))
		return fail(why, "v2 address block too short");
	return OK;
}

/* TLVs (section 2.2): each header and value must fit in what is left. */
static int v2_tlvs(const unsigned char *p, size_t n, const char **why)
{
	size_t vlen;

	while (n > 0) {
		if (n < V2_TLV_HDR)
			return fail(why, "v2 TLV header truncated");
		vlen = be16(p + 1);
		if (vlen > n - V2_TLV_HDR)
			return fail(why, "v2 TLV value truncated");
		p += V2_TLV_HDR + vlen;
		n -= V2_TLV_HDR + vlen;
	}
	return OK;
}

/* Source address, destination address, source port, destination port. */
static void v2_addrs(const unsigned char *p, int family, struct pp_info *out)
{
	size_t alen = family == AF_INET ? 4 : 16;

	memcpy(addr_slot(&out->src, family), p, alen);
	memcpy(addr_slot(&out->dst, family), p + alen, alen);
	set_port(&out->src, p + 2 * alen);
	set_port(&out->dst, p + 2 * alen + 2);
	out->addrlen = addr_len(family);
}

static int v2_parse(const unsigned char *buf, size_t len, struct pp_info *out,
                    const char **why)
{
	int r = v2_head(buf, len, why), family;
	size_t plen, alen;

	if (r != OK)
		return r;
	plen = be16(buf + 14);
	if (len < V2_HDR_LEN + plen)
		return MORE;
	family = v2_family(buf[13]);
	if ((buf[12] & 0x0F) == V2_CMD_LOCAL || family == AF_UNSPEC) {
		out->local = true;
		return (int)(V2_HDR_LEN + plen);
	}
	alen = v2_addr_len(family);
	if (v2_tlvs(buf + V2_HDR_LEN + alen, plen - alen, why) < 0)
		return BAD;
	v2_addrs(buf + V2_HDR_LEN, family, out);
	return (int)(V2_HDR_LEN + plen);
}

/* ---- entry points ---- */

static int parse(const unsigned char *buf, size_t len, struct pp_info *out,
                 const char **why)
{
	if (len == 0)
		return MORE;
	if (buf[0] == v2_sig[0])
		return v2_parse(buf, len, out, why);
	if (memcmp(buf, V1_PREFIX, len < V1_PREFIX_LEN ? len : V1_PREFIX_LEN))
		return fail(why, "not a PROXY header");
	if (len < V1_PREFIX_LEN)
		return MORE;
	return v1_parse(buf, len, out, why);
}

int pp_parse(const unsigned char *buf, size_t len, struct pp_info *out,
             const char **why)
{
	int r;

	assert(out != NULL);
	memset(out, 0, sizeof *out);
	if (why)
		*why = NULL;
	r = parse(buf, len, out, why);
	/* nothing half-filled for a caller that looks anyway */
	if (r <= 0)
		memset(out, 0, sizeof *out);
	return r;
}

static void v2_put_head(unsigned char *out, unsigned cmd, unsigned char fam,
                        size_t plen)
{
	memcpy(out, v2_sig, V2_SIG_LEN);
	out[12] = (unsigned char)(V2_VERSION | cmd);
	out[13] = fam;
	out[14] = (unsigned char)(plen >> 8);
	out[15] = (unsigned char)plen;
}

/* An AF_INET or AF_INET6 address as 16 bytes, IPv4 mapped to ::ffff:a.b.c.d. */
static void as_v6(const struct sockaddr *sa, unsigned char a[16],
                  unsigned char port[2])
{
	static const unsigned char mapped[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
	};
	const struct sockaddr_in *s4 = (const void *)sa;
	const struct sockaddr_in6 *s6 = (const void *)sa;

	if (sa->sa_family == AF_INET6) {
		memcpy(a, &s6->sin6_addr, 16);
		memcpy(port, &s6->sin6_port, 2);
		return;
	}
	memcpy(a, mapped, sizeof mapped);
	memcpy(a + 12, &s4->sin_addr, 4);
	memcpy(port, &s4->sin_port, 2);
}

static void v2_put4(unsigned char *p, const struct sockaddr *src,
                    const struct sockaddr *dst)
{
	const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;

	memcpy(p, &s->sin_addr, 4);
	memcpy(p + 4, &d->sin_addr, 4);
	memcpy(p + 8, &s->sin_port, 2);
	memcpy(p + 10, &d->sin_port, 2);
}

static void v2_put6(unsigned char *p, const struct sockaddr *src,
                    const struct sockaddr *dst)
{
	as_v6(src, p, p + 32);
	as_v6(dst, p + 16, p + 34);
}

static bool is_inet(const struct sockaddr *sa)
{
	return sa != NULL &&
	       (sa->sa_family == AF_INET || sa->sa_family == AF_INET6);
}

size_t pp_build_v2(unsigned char *out, size_t size, const struct sockaddr *src,
                   const struct sockaddr *dst)
{
	bool four;
	size_t plen;

	if (src == NULL) {
		if (size < V2_HDR_LEN)
			return 0;
		v2_put_head(out, V2_CMD_LOCAL, V2_FAM_UNSPEC, 0);
		return V2_HDR_LEN;
	}
	if (!is_inet(src) || !is_inet(dst))
		return 0;
	four = src->sa_family == AF_INET && dst->sa_family == AF_INET;
	plen = four ? V2_ADDR4_LEN : V2_ADDR6_LEN;
	if (size < V2_HDR_LEN + plen)
		return 0;
	v2_put_head(out, V2_CMD_PROXY, four ? V2_FAM_TCP4 : V2_FAM_TCP6, plen);
	if (four)
		v2_put4(out + V2_HDR_LEN, src, dst);
	else
		v2_put6(out + V2_HDR_LEN, src, dst);
	return V2_HDR_LEN + plen;
}
