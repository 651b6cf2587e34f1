/*
 * proxyproto: the HAProxy PROXY protocol (haproxy's doc/proxy-protocol.txt),
 * version 1 (one text line) and version 2 (binary): parse the header a
 * trusted load balancer puts in front of a connection, and build a v2 header
 * to put in front of ours. Pure: bytes in, addresses out; no sockets, no
 * allocation, no logging. Who may send a header is the caller's business.
 */
#ifndef POSTERN_PROXYPROTO_H
#define POSTERN_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define PP_V1_MAX 107 /* v1: whole line incl. CRLF, per the spec */
/* v2: our bound on the length field (addresses + TLVs) */
#define PP_V2_PAYLOAD_MAX 1024
#define PP_HEADER_MAX (16 + PP_V2_PAYLOAD_MAX)

struct pp_info {
	/*
	 * true: v2 LOCAL command, v2 AF_UNSPEC/UNIX/unsupported family, or
	 * v1 UNKNOWN: keep the connection's own addresses.
	 */
	bool local;
	/*
	 * when !local: AF_INET or AF_INET6 (both the same), ports set
	 * (network order as in sockaddr)
	 */
	struct sockaddr_storage src, dst;
	/* sizeof(sockaddr_in) or sizeof(sockaddr_in6) when !local, else 0 */
	socklen_t addrlen;
};

/*
 * Parse the start of buf (len bytes read so far from a connection).
 * Returns the header's length (>0) with *out filled when a complete valid
 * header is there; 0 when what is there is a valid prefix and more bytes
 * are needed (never when len >= PP_HEADER_MAX); -1 when it is malformed,
 * with *why a constant English reason ("not a PROXY header", "bad v1
 * address", "v2 length over limit", ...). why may be NULL; *why is NULL
 * unless -1 is returned, and *out is all zero unless >0 is.
 * It never reads past buf[len-1]. Bytes after the header are not looked at.
 * Once a buffer gives -1, any longer buffer starting with it gives -1 too.
 */
int pp_parse(const unsigned char *buf, size_t len, struct pp_info *out,
             const char **why);

/*
 * Build a v2 header: PROXY command with src/dst (AF_INET or AF_INET6; if
 * their families differ, map the IPv4 one to ::ffff:a.b.c.d and send TCP6),
 * or the LOCAL command when src is NULL. STREAM transport. No TLVs.
 * Returns its length, or 0 when size is too small or a family is
 * unsupported.
 */
size_t pp_build_v2(unsigned char *out, size_t size, const struct sockaddr *src,
                   const struct sockaddr *dst);

#endif
