package kubernetes_test

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/disco-lb/disco/core"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
)

// The node name defaults to $NODE_NAME (the real API server case is in
// TestSourceAgainstRealAPIServer).
func TestNodeZoneFromEnvironment(t *testing.T) {
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-7",
		Labels: map[string]string{corev1.LabelTopologyZone: "zone-c"}}})
	src, err := kubernetes.NewForClient(client)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NODE_NAME", "")
	if _, err := src.NodeZone(context.Background(), ""); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("without a node name: %v", err)
	}
	t.Setenv("NODE_NAME", "node-7")
	if z, err := src.NodeZone(context.Background(), ""); err != nil || z != "zone-c" {
		t.Fatalf("NodeZone = %q, %v", z, err)
	}
}
