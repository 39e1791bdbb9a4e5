package e2e_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// xdsServerProcess is examples/cmd/xds-server running.
type xdsServerProcess struct {
	cmd     *exec.Cmd
	addr    string // xDS
	metrics string // Prometheus
	log     *tailBuffer
	exited  chan error
}

// buildXDSServer builds examples/cmd/xds-server once per test.
func buildXDSServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "xds-server")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/xds-server")
	cmd.Dir = filepath.Join(repoRoot(t), "examples")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build xds-server: %v\n%s", err, out)
	}
	return bin
}

// runXDSServer starts the server with args and waits until it serves; it
// is stopped with SIGTERM when the test ends, if not before.
func runXDSServer(t *testing.T, bin string, args ...string) *xdsServerProcess {
	t.Helper()
	p := &xdsServerProcess{cmd: exec.Command(bin, args...), log: &tailBuffer{max: 64 << 10}, exited: make(chan error, 1)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		// zap's production logs, one JSON object a line.
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = p.log.Write(append(line, '\n'))
			var e struct{ Msg, Address string }
			if json.Unmarshal(line, &e) != nil {
				continue
			}
			switch e.Msg {
			case "metrics":
				p.metrics = e.Address
			case "serving xDS":
				p.addr = e.Address
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() { p.exited <- p.cmd.Wait() }()
	select {
	case <-ready:
	case err := <-p.exited:
		t.Fatalf("xds-server exited: %v\n%s", err, p.log.String())
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		t.Fatalf("xds-server never served:\n%s", p.log.String())
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.stop(t)
		}
	})
	return p
}

// stop sends SIGTERM and requires a clean exit.
func (p *xdsServerProcess) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("xds-server exited with %v:\n%s", err, p.log.String())
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("xds-server still running 30 s after SIGTERM:\n%s", p.log.String())
	}
}

// bootstrapFile runs `xds-server bootstrap args...` and writes what it
// prints to a file.
func bootstrapFile(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, append([]string{"bootstrap"}, args...)...).Output()
	if err != nil {
		t.Fatalf("xds-server bootstrap %v: %v", args, err)
	}
	path := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The example server as its users run it: the binary, configured by its
// flags and a kubeconfig, serving clients in three languages through a
// rolling restart, its metrics on /metrics, stopping cleanly on SIGTERM;
// then over mTLS, where a client without a certificate gets nothing.
func TestXDSServerBinary(t *testing.T) {
	c := newCluster(t, 1)
	bin := buildXDSServer(t)
	names := c.startReady("greeter", 0, 2, "")
	srv := runXDSServer(t, bin, "-kubeconfig", c.cp.Kubeconfig(), "-listen", "127.0.0.1:0", "-metrics", "127.0.0.1:0")
	cs := startClients(t, bootstrapFile(t, bin, "-server", srv.addr, "-node", "binary-test"))
	cs.waitServing(names...)
	cs.load(4)
	c.startReady("greeter", 2, 1, "")
	c.drain(names[0], time.Second)
	names = c.fleet.Names()
	time.Sleep(500 * time.Millisecond)
	for lang, r := range cs.noneFailed(t, "xds-server binary, one pod replaced") {
		if r.Per["greeter-2"] == 0 {
			t.Errorf("%s: the new pod got no call: %v", lang, r.Per)
		}
	}
	body := srv.scrape(t)
	for _, want := range []string{"disco_xds_streams 3", `disco_xds_subscriptions{type="endpoints"} 3`, "disco_kubernetes_"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics has no %q", want)
		}
	}
	cs.load(0)
	srv.stop(t)
	if !strings.Contains(srv.log.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop logged:\n%s", srv.log.String())
	}

	// mTLS: the Go client (grpc-go reads TLS channel credentials from its
	// bootstrap; see sinks/xds's README for the other languages).
	pk := newTestPKI(t)
	tlsSrv := runXDSServer(t, bin, "-kubeconfig", c.cp.Kubeconfig(), "-listen", "127.0.0.1:0", "-metrics", "127.0.0.1:0",
		"-tls-cert", pk.serverCert, "-tls-key", pk.serverKey, "-client-ca", pk.ca)
	good := startXDSClient(t, "go", bootstrapFile(t, bin, "-server", tlsSrv.addr, "-ca", pk.ca, "-cert", pk.clientCert, "-key", pk.clientKey), xdsTarget("go"))
	good.waitServing(names...)
	noCert := startXDSClient(t, "go", bootstrapFile(t, bin, "-server", tlsSrv.addr, "-ca", pk.ca), xdsTarget("go"))
	if r := noCert.once(); r.OK || !strings.HasPrefix(r.Error, "UNAVAILABLE") {
		t.Fatalf("a client without a certificate: %+v, want UNAVAILABLE (its handshake refused)", r)
	} else {
		t.Logf("mTLS: a client without a certificate: %s", r.Error)
	}
	if m := tlsSrv.scrape(t); !strings.Contains(m, "disco_xds_streams 1\n") {
		t.Fatalf("want one stream (the client with a certificate):\n%s", m)
	}
}

// scrape returns the server's /metrics.
func (p *xdsServerProcess) scrape(t *testing.T) string {
	t.Helper()
	res, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate, as PEM files.
type testPKI struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "disco e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER := must(x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey))
	ca := must(x509.ParseCertificate(caDER))
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der := must(x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey))
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(key)))
	}
	p := testPKI{ca: write("ca.pem", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}
