/*
 * netmask: lists of trusted networks ("10.0.0.0/8", "2001:db8::/32"), parsed
 * once from the configuration and matched against a peer's address, e.g. to
 * decide who may send a PROXY protocol header. Pure: no allocation, no DNS.
 */
#ifndef POSTERN_NETMASK_H
#define POSTERN_NETMASK_H

#include <stdbool.h>
#include <sys/socket.h>

struct netmask {
	int family;              /* AF_INET or AF_INET6 */
	unsigned char addr[16];  /* network order; 4 bytes used for AF_INET */
	unsigned bits;           /* prefix length: 0..32 or 0..128 */
};

/*
 * "10.0.0.0/8", "192.0.2.7" (= /32), "2001:db8::/32", "::1" (= /128).
 * Host bits beyond the prefix must be zero ("10.0.0.1/8" is an error);
 * the prefix is 1 to 3 digits without a leading zero ("/08" is an error,
 * "/0" is not), within 0..32 / 0..128. Nothing else is allowed: no
 * spaces, no host names, no dotted masks. 0, or -1 with *out zeroed.
 */
int netmask_parse(const char *s, struct netmask *out);

/*
 * Whether sa (AF_INET or AF_INET6) is inside any of the n entries. An
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) matches IPv4 entries too; a
 * plain AF_INET address matches IPv4 entries only (never "::/0").
 * Any other family matches nothing.
 */
bool netmask_match(const struct netmask *list, unsigned n,
                   const struct sockaddr *sa);

#endif
