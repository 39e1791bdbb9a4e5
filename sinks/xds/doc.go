// Package xds serves disco's discovery over xDS, so that any gRPC client
// with xDS support (Go, Java, C++, Python, Node) and Envoy are balanced by
// disco without a line of disco code: a client dialing xds:///<target>,
// with a bootstrap naming this server, gets a Listener, a
// RouteConfiguration, a Cluster and a ClusterLoadAssignment named <target>,
// and the assignment follows the target's endpoints.
//
// The server is demand-driven and sits on a core.Hub: a client's
// subscription to an assignment subscribes the hub to its target, shared
// with every other consumer, and the last client leaving releases it. One
// server is so a relay for many clients: a few servers watch the API
// server, thousands of clients subscribe to them.
package xds
