package kubernetes

import (
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/disco-lb/disco/core"
)

// NodeZone returns the zone of the node named node from its
// topology.kubernetes.io/zone label, for zone-aware balancing. An empty node
// means $NODE_NAME (set it from the pod spec: valueFrom.fieldRef
// spec.nodeName). It needs `get` on nodes (a ClusterRole); a node without the
// label has zone "".
func (s *Source) NodeZone(ctx context.Context, node string) (string, error) {
	if node == "" {
		node = os.Getenv("NODE_NAME")
	}
	if node == "" {
		return "", fmt.Errorf("kubernetes: node zone: no node name (set NODE_NAME from spec.nodeName): %w", core.ErrInvalid)
	}
	n, err := s.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", fmt.Errorf("kubernetes: node %s: %v: %w", node, err, core.ErrNotFound)
	case apierrors.IsForbidden(err):
		return "", fmt.Errorf("kubernetes: node %s: grant get on nodes with a ClusterRole to read its zone: %v: %w", node, err, core.ErrForbidden)
	case err != nil:
		return "", fmt.Errorf("kubernetes: node %s: %v: %w", node, err, core.ErrUnavailable)
	}
	return n.Labels[corev1.LabelTopologyZone], nil
}
