package kubetest_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

// holdControlPlane is the helper process of TestKilledRunLeavesNothing
// (TestMain runs it instead of the tests when KUBETEST_HELPER=1): it starts a
// control plane, prints its directory and waits to be killed.
func holdControlPlane() {
	cp, err := kubetest.Start(context.Background())
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("DIR", cp.Dir())
	time.Sleep(5 * time.Minute)
}

// A test binary killed with SIGKILL mid-run takes its etcd and kube-apiserver
// with it, and the next Start removes its directory.
func TestKilledRunLeavesNothing(t *testing.T) {
	if _, err := kubetest.Binaries(); err != nil && !kubetest.Required() {
		t.Skip(err)
	}
	ctx := ctxFor(t, 2*time.Minute)
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), "KUBETEST_HELPER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var dir string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "DIR "); ok {
			dir = d
			break
		}
		if strings.HasPrefix(sc.Text(), "ERROR") {
			t.Fatal(sc.Text())
		}
	}
	if dir == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("helper printed no directory")
	}
	var pids []int
	for _, f := range []string{"etcd.pid", "kube-apiserver.pid"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		pids = append(pids, pid)
	}
	cmd.Process.Kill() // SIGKILL: no cleanup of its own runs
	cmd.Wait()
	waitFor(t, ctx, func() bool {
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil {
				return false
			}
		}
		return true
	})
	// The directory stays until a Start sweeps it: this test's, or one in a
	// test binary of another package running in parallel (go test does).
	cp := kubetest.New(t) // sweeps first
	_ = cp
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the killed run's directory survived the next Start: %v", err)
	}
}
