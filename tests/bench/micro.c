/*
 * Micro-benchmarks of the pure load-balancing pieces (make bench): one hash
 * pick from an 8-member pool (user name formatting included), and parsing a
 * PROXY v2 and a v1 header. Prints nanoseconds per call; asserts nothing.
 */
#include <stdio.h>
#include <time.h>
#include "bstate.h"
#include "router.h"
#include "proxyproto.h"
#include <arpa/inet.h>
#include <string.h>
int main(void) {
	struct backend be[8];
	unsigned m[8], w[8], rr = 0;
	for (int i = 0; i < 8; i++) { memset(&be[i], 0, sizeof be[i]); snprintf(be[i].name, 64, "mbox-%d", i); be[i].addr[PROTO_IMAP].len = 16; be[i].rt = bstate_get(be[i].name); m[i] = i; w[i] = 1; }
	struct pool p = {.name = "p", .nmembers = 8, .members = m, .weights = w, .rr = &rr};
	struct config c = {.backends = be, .nbackends = 8, .pools = &p, .npools = 1};
	struct listener_conf l = {.backend = -1, .pool = 0};
	const char *why; char u[32]; struct timespec a, b; unsigned long x = 0;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < 1000000; i++) { snprintf(u, sizeof u, "user%d@example.org", i); x += (unsigned long)router_pick(&c, &l, NULL, u, NULL, &why); }
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("hash pick, 8 members: %.0f ns\n", ((b.tv_sec-a.tv_sec)*1e9 + (b.tv_nsec-a.tv_nsec))/1e6);
	unsigned char h[64]; struct pp_info pi; const char *wy; size_t hl;
	struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(5555)}, d4 = s4; inet_pton(AF_INET, "192.0.2.7", &s4.sin_addr); inet_pton(AF_INET, "10.0.0.1", &d4.sin_addr);
	hl = pp_build_v2(h, sizeof h, (void*)&s4, (void*)&d4);
	const char *v1 = "PROXY TCP4 192.0.2.7 10.0.0.1 5555 993\r\n";
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < 1000000; i++) x += pp_parse(h, hl, &pi, &wy);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("PROXY v2 parse: %.0f ns\n", ((b.tv_sec-a.tv_sec)*1e9 + (b.tv_nsec-a.tv_nsec))/1e6);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < 1000000; i++) x += pp_parse((const unsigned char*)v1, strlen(v1), &pi, &wy);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("PROXY v1 parse: %.0f ns (%lu)\n", ((b.tv_sec-a.tv_sec)*1e9 + (b.tv_nsec-a.tv_nsec))/1e6, x & 1);
	return 0;
}
