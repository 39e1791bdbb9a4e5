package kubetest_test

import (
	"context"
	"testing"
	"time"

	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

// BenchmarkControlPlaneStart: etcd + kube-apiserver from nothing to /readyz
// (certificates, token file, both processes), then Stop.
func BenchmarkControlPlaneStart(b *testing.B) {
	ctx := context.Background()
	var total time.Duration
	for b.Loop() {
		begin := time.Now()
		cp, err := kubetest.Start(ctx)
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(begin)
		b.StopTimer()
		cp.Stop()
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/start")
}
