package podnet_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/disco-lb/disco/sources/kubernetes/kubetest/podnet"
)

// BenchmarkAddPod: one pod (namespace, veth pair, address, routes) ready to
// listen; deleting it is outside the timing.
func BenchmarkAddPod(b *testing.B) {
	n := podnet.NewForTest(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		p, err := n.AddPod(ctx, fmt.Sprint("bench-", i))
		if err != nil {
			b.Fatal(err)
		}
		i++
		b.StopTimer()
		if err := p.Delete(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
