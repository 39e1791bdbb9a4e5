// Package kubetest runs a real Kubernetes control plane for tests and the
// demo: etcd and kube-apiserver, built by `make k8s-bins` from pinned Go
// modules, on random loopback ports with TLS, token authentication and RBAC,
// in a temporary directory of their own.
//
//	cp := kubetest.New(t)                  // stopped and removed when t ends
//	cs, _ := cp.AdminClient()              // system:masters
//	cfg, _ := cp.ServiceAccountConfig(ctx, "demo", "client") // no permissions...
//	_ = cp.Grant(ctx, "demo", "client", "endpointslice-reader", false, rules...) // ...until granted
//	_ = cp.RestartAPIServer(ctx, false)    // SIGKILL and start again, same port
//	_, _ = cp.CompactEtcd(ctx)             // make old resourceVersions 410 Gone
//
// A kubeconfig file for the admin is written too (Kubeconfig), so kubectl and
// code paths that load kubeconfig files are exercised. Processes die with the
// test binary (Pdeathsig), and Start removes what a killed earlier run left.
//
// Package podnet, beside it, makes "pods": network namespaces with their own
// 10.244.x.y addresses, reachable from the test process.
package kubetest
