// Package kubernetes is disco's Kubernetes source: it discovers the
// endpoints of services from their discovery.k8s.io/v1 EndpointSlices and
// publishes them to core, so any disco sink (a gRPC resolver, a connection
// pool) follows pods as they come and go.
//
//	cfg, ns, err := kubernetes.LoadConfig("") // in-cluster, $KUBECONFIG or ~/.kube/config
//	src, err := kubernetes.New(cfg, kubernetes.WithNamespace(ns), kubernetes.WithLogger(log),
//		kubernetes.WithRegisterer(prometheus.DefaultRegisterer))
//	target, err := src.Target("greeter.demo:grpc")
//	hub := core.NewHub(src) // one per source; resolvers, pools and webhooks subscribe to it
//
// What it guarantees (each tested against a real API server):
//
//   - All slices of a service are merged; an endpoint listed in two slices
//     stays until both drop it; an update removes what left a slice; a relist
//     (after a broken watch or 410 Gone) reconciles exactly, so no ghost
//     survives and no delete is missed.
//   - A port by name resolves per slice; a slice without that port
//     contributes nothing (never an "ip:portname" address).
//   - Unset ready and serving mean true, unset terminating false; every
//     endpoint is published with its conditions, and core.Routable applies
//     kube-proxy's rule (serving-and-terminating endpoints only while none is
//     ready).
//   - IPv4 and IPv6 slices of one pod join into one endpoint (by targetRef
//     UID); FQDN slices are published with the name as the address.
//   - Zone, node, hostname, hints.forZones and the pod name are carried.
//   - When the API server cannot be reached, or the watch breaks, the last
//     good state stays, marked stale with the reason; an RBAC denial is a
//     core.ErrForbidden naming what to grant; a missing Service is a
//     core.ErrNotFound (if the source may get services).
//
// Targets of one service share one watch (a client-go reflector with a store
// that keeps only what is published), started with the first target and
// stopped with the last. The watch asks for protobuf, never resyncs
// periodically, and backs off with jitter (client-go's 0.8s to 30s).
package kubernetes
