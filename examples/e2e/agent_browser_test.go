package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/disco-lb/disco/sinks/webhook"
)

// chromium returns the path of a Chromium to drive; without one the test
// skips, unless DISCO_REQUIRE_CHROMIUM=1 (CI).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("DISCO_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("no Chromium (DISCO_REQUIRE_CHROMIUM=1): apt-get install -y chromium")
	}
	t.Skip("no Chromium: apt-get install -y chromium")
	return ""
}

// pageRow is what the browser rendered of one row of the status table.
type pageRow struct {
	Class string `json:"class"`
	Text  string `json:"text"`
}

// The status page in a real browser (headless Chromium) during a rollout:
// it renders the target, its live endpoints with their conditions (a
// draining pod as terminating), the sink's lag, and readiness; the JSON
// twin agrees. DISCO_SCREENSHOT=path keeps a screenshot (the README's).
func TestAgentStatusPageInABrowser(t *testing.T) {
	browser := chromium(t)
	c := newCluster(t, 1)
	bin := buildDisco(t)
	dir := t.TempDir()
	secret := must(webhook.NewSecret())
	recv := newReceiver(t, secret.Text())
	httpAddr := freePort(t)
	config := fmt.Sprintf(`http: {listen: %q}
sources:
  k8s: {type: kubernetes, kubeconfig: %q}
sinks:
  hooks: {type: webhook, url: %q, secrets: ["${SECRET}"]}
pipelines:
  - {source: k8s, targets: [greeter.demo:grpc], sinks: [hooks]}
`, httpAddr, c.cp.Kubeconfig(), recv.srv.URL)
	path := filepath.Join(dir, "disco.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	names := c.startReady("greeter", 0, 3, "zone-a")
	agent := runAgent(t, bin, path, httpAddr, "SECRET="+secret.Text())
	agent.waitReady()

	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Flag("headless", true), chromedp.WindowSize(1400, 700))...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx) // no timeout: it would stop the browser
	defer cancel()
	load := func() (ready string, rows []pageRow) {
		t.Helper()
		err := chromedp.Do(ctx, chromedp.Navigate("http://"+httpAddr+"/"), chromedp.WaitVisible(chromedp.CSS("#targets")))
		if err == nil {
			ready, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#ready")))
		}
		if err == nil {
			rows, err = chromedp.Run(ctx, chromedp.Evaluate[[]pageRow](`[...document.querySelectorAll('#targets tr')].slice(1).map(r => ({class: r.className, text: r.innerText}))`))
		}
		if err != nil {
			t.Fatalf("the browser: %v", err)
		}
		return ready, rows
	}

	ready, rows := load()
	if ready != "ready" || len(rows) != 4 || !strings.Contains(rows[0].Text, "demo/greeter:grpc") || !strings.Contains(rows[0].Text, "3 endpoints") {
		t.Fatalf("before the rollout: %q %+v", ready, rows)
	}
	for i, n := range names {
		if row := rows[i+1]; !strings.Contains(row.Text, c.fleet.Pod(n).Addr(50051)) || !strings.Contains(row.Text, "zone-a") || !strings.Contains(row.Text, "ready, serving") {
			t.Fatalf("endpoint row %d: %+v", i, row)
		}
	}
	waitFor(t, 20*time.Second, "the webhook sink shown up to date", func() bool {
		_, rows := load()
		return strings.Contains(rows[0].Text, "webhook:hooks:demo/greeter:grpc: up to date")
	})

	// A rollout: a new pod, then the first old one drains (terminating for
	// 3 s): the page shows it terminating, then gone.
	c.startReady("greeter-new", 0, 1, "zone-a")
	drained := make(chan struct{})
	go func() { defer close(drained); c.drain(names[0], 3*time.Second) }()
	old := c.fleet.Pod(names[0]).Addr(50051)
	var seen string
	waitFor(t, 20*time.Second, "the draining pod shown terminating", func() bool {
		_, rows := load()
		for _, r := range rows {
			if strings.Contains(r.Text, old) && strings.Contains(r.Text, "terminating") && strings.Contains(r.Class, "notready") {
				seen = r.Text
				return true
			}
		}
		return false
	})
	t.Logf("during the rollout the page showed: %q", strings.Join(strings.Fields(seen), " "))
	if shot := os.Getenv("DISCO_SCREENSHOT"); shot != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(shot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	<-drained
	waitFor(t, 20*time.Second, "the drained pod gone from the page", func() bool {
		_, rows := load()
		text := ""
		for _, r := range rows {
			text += r.Text + "\n"
		}
		return !strings.Contains(text, old) && strings.Contains(rows[0].Text, "3 endpoints")
	})
	// The JSON twin says the same.
	if code, body := agent.get("/api/targets"); code != 200 || strings.Contains(body, old) || !strings.Contains(body, c.fleet.Pod("greeter-new-0").Addr(50051)[:strings.LastIndex(c.fleet.Pod("greeter-new-0").Addr(50051), ":")]) {
		t.Fatalf("/api/targets: %d\n%s", code, body)
	}
}
