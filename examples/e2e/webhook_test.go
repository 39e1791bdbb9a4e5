package e2e_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/webhook"
)

// captured is one request as a receiver got it.
type captured struct {
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// Two independent implementations of Standard Webhooks, the reference Go
// library and the npm standardwebhooks package run by node, accept what
// disco's webhook sink signs, with each of the two secrets of a rotation,
// and reject it with another secret or a changed body.
func TestWebhookSignaturesPassTheReferenceVerifiers(t *testing.T) {
	var mu sync.Mutex
	var got []captured
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		c := captured{Headers: map[string]string{}, Body: string(body)}
		for _, h := range []string{webhook.HeaderID, webhook.HeaderTimestamp, webhook.HeaderSignature} {
			c.Headers[h] = req.Header.Get(h)
		}
		mu.Lock()
		got = append(got, c)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	key := func(c byte) string { return "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{c}, 32)) }
	newKey, oldKey, otherKey := key('n'), key('o'), key('x')

	tg := core.Target{Name: "greeter"}
	set, err := core.NewSet(&core.Endpoint{Addresses: []string{"10.0.0.1", "fd00::1"}, Port: 50051, Labels: map[string]string{"ünïcode": "✓"}})
	if err != nil {
		t.Fatal(err)
	}
	src := coretest.NewStatic(map[core.Target]core.Set{tg: set})
	hub := coretest.Hub(t, src)
	t.Cleanup(func() { hub.Close() })
	s, err := webhook.New(srv.URL, webhook.WithSecrets(newKey, oldKey))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	sub, err := s.Deliver(hub, tg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	waitRequests := func(want int) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d deliveries captured, want %d", n, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitRequests(1)
	set2, _ := set.With(&core.Endpoint{Addresses: []string{"10.0.0.2"}, Port: 50051})
	src.Set(tg, set2)
	waitRequests(2)
	mu.Lock()
	reqs := append([]captured(nil), got...)
	mu.Unlock()

	type check struct {
		Secret  string            `json:"secret"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
		Valid   bool              `json:"valid"`
	}
	var checks []check
	for _, c := range reqs {
		checks = append(checks,
			check{newKey, c.Headers, c.Body, true},
			check{oldKey, c.Headers, c.Body, true},
			check{otherKey, c.Headers, c.Body, false},
			check{newKey, c.Headers, strings.Replace(c.Body, "10.0.0.1", "10.6.6.6", 1), false})
	}

	t.Run("reference Go library", func(t *testing.T) {
		for i, c := range checks {
			wh, err := standardwebhooks.NewWebhook(c.Secret)
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			for k, v := range c.Headers {
				h.Set(k, v)
			}
			err = wh.Verify([]byte(c.Body), h)
			if (err == nil) != c.Valid {
				t.Fatalf("check %d (valid %v): Verify = %v", i, c.Valid, err)
			}
		}
	})

	t.Run("npm standardwebhooks under node", func(t *testing.T) {
		modules := npmStandardWebhooks(t)
		input, _ := json.Marshal(checks)
		script := `
const { Webhook } = require("standardwebhooks");
const checks = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = checks.map((c) => {
  try { new Webhook(c.secret).verify(c.body, c.headers); return true; } catch (e) { return false; }
});
console.log(JSON.stringify(out));`
		cmd := exec.Command("node", "-e", script)
		cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
		cmd.Stdin = bytes.NewReader(input)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("node: %v\n%s", err, out)
		}
		var results []bool
		if err := json.Unmarshal(bytes.TrimSpace(out), &results); err != nil || len(results) != len(checks) {
			t.Fatalf("node printed %q", out)
		}
		for i, ok := range results {
			if ok != checks[i].Valid {
				t.Fatalf("check %d: node says %v, want %v", i, ok, checks[i].Valid)
			}
		}
	})
}

// npmStandardWebhooks installs the npm standardwebhooks package (pinned)
// into the disco cache once and returns its node_modules directory.
func npmStandardWebhooks(t *testing.T) string {
	return npmInstall(t, "npm-standardwebhooks-1.1.1", "standardwebhooks@1.1.1")
}

// npmInstall installs pinned npm packages into the disco cache directory
// name once, and returns its node_modules directory. Without node or npm
// the test skips, unless DISCO_REQUIRE_NODE=1 (CI).
func npmInstall(t *testing.T, name string, pkgs ...string) string {
	t.Helper()
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("DISCO_REQUIRE_NODE") == "1" {
				t.Fatalf("%s is missing (DISCO_REQUIRE_NODE=1): apt-get install -y nodejs npm", bin)
			}
			t.Skipf("%s is missing: apt-get install -y nodejs npm", bin)
		}
	}
	cache := os.Getenv("DISCO_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache", "disco")
	}
	dir := filepath.Join(cache, name)
	modules := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(dir, ".installed")); err == nil {
		return modules
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"install", "--prefix", dir, "--no-audit", "--no-fund", "--silent"}, pkgs...)
	if out, err := exec.Command("npm", args...).CombinedOutput(); err != nil {
		t.Fatalf("npm install %v: %v\n%s", pkgs, err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, ".installed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return modules
}
