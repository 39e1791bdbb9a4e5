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
// What it guarantees (each tested against a real API server, and the merge
// rules also against a reference model of kube-proxy by a differential fuzz
// test):
//
//   - All slices of a service are merged by kube-proxy's rules: an endpoint
//     is its first address, an address belongs to one endpoint (a
//     non-terminating entry wins over a terminating one; an IP reused by a
//     new pod is the new pod's), the addresses one pod UID wins join into
//     one endpoint (dual stack), a slice without the target's port (or
//     without ports) contributes nothing; a relist (after a failure or 410
//     Gone) reconciles exactly, so no ghost survives and no delete is
//     missed.
//   - Unset ready and serving mean true, unset terminating false; every
//     endpoint is published with its conditions, and core.Routable applies
//     kube-proxy's rule (serving-and-terminating endpoints only while none is
//     ready).
//   - Zone, node, hostname, hints.forZones and the pod name are carried;
//     odd but valid data (a repeated address, an empty zone hint) is
//     normalised, and only an unusable endpoint is left out, named, counted,
//     with the state stale while it lasts.
//   - The Service itself is watched: missing or deleted means no endpoints
//     and core.ErrNotFound, whatever slices remain; created later, it is
//     noticed at once; a lookup error is unavailable, never an empty answer.
//   - When the API server cannot be reached, or the watch breaks, the last
//     good state stays, marked stale with the reason, and the source relists
//     within about half a second of the server answering again; an RBAC
//     denial is a core.ErrForbidden naming what to grant.
//
// Targets of one service share one watch of its slices and of the Service,
// started with the first target and stopped with the last. It asks for
// protobuf, never resyncs, and backs off with jitter (0.8s to 30s).
package kubernetes
