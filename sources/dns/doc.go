// Package dns is disco's DNS source: it discovers the endpoints of a name
// from SRV records, or from A and AAAA records, and follows them as they
// change, re-querying when the answer's TTL runs out (within a floor and a
// ceiling), so a change is seen within its TTL plus a few milliseconds.
// grpc-go's own dns resolver re-resolves only after a connection fails, at
// most every 30 s; behind disco's gRPC resolver or pool this source follows
// DNS as it is.
//
//	src, err := dns.New(dns.WithServer("10.96.0.10:53"))
//	hub := core.NewHub(src)
//	b := grpcresolver.New("dns+srv", hub) // dns+srv:///_grpc._tcp.greeter.example.com
//
// Targets (core.HostSyntax): a name starting with '_' (_service._proto.name)
// is an SRV query, anything else an A and AAAA query that needs a port
// number (greeter.example.com:50051). WithMode forces one or the other.
//
// What it publishes:
//
//   - SRV: one endpoint per target host, with every IPv4 and IPv6 address
//     the host has (like a dual-stack pod), the record's port, its weight
//     as the endpoint's Weight, and the labels "dns.priority" and
//     "dns.weight"; ID host:port. A target of "." (no service) is left
//     out, as is a host without addresses; addresses the server put in
//     the additional section are used when the host has none of its own.
//   - A and AAAA: a name with at most one address of each family is one
//     host (a dual-stack pod, a single server): one endpoint with both
//     addresses, ID name:port. A name with several addresses of a family
//     (a headless Service, a round-robin name) is one endpoint per address,
//     ID address:port: DNS does not say which IPv4 and IPv6 addresses
//     belong together.
//   - NXDOMAIN, or a name without records of the type: a synced, empty set
//     (the name has no endpoints), asked again after the SOA's negative
//     TTL (RFC 2308).
//   - SERVFAIL, REFUSED, a timeout, an unreachable server: unavailable; the
//     last good set stays, marked stale, and the query is retried with a
//     jittered backoff.
//   - A truncated UDP answer is asked again over TCP.
package dns
