//go:build tools

// Package k8sbins pins the Kubernetes commands that `make k8s-bins` builds
// (kube-apiserver and kubectl). It lives outside go.work on purpose: its
// requirements would otherwise pull every disco module onto Kubernetes'
// pinned versions. Build it with GOWORK=off.
package k8sbins

import (
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
)
