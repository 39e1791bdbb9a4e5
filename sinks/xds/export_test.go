package xds

// The resource builders, for the benchmark's plain go-control-plane server
// (the same resources, set by hand).
var (
	ListenerForTest    = listener
	RouteConfigForTest = routeConfig
	ClusterForTest     = cluster
)
