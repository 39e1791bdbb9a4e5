// Package etcdtest runs a real etcd for tests: the etcd binary that `make
// k8s-bins` builds (the version the Kubernetes tests run), on loopback,
// with a data directory of its own, optionally with TLS and client
// certificates; it can be killed, restarted on the same port with the same
// data, compacted, and reached through a proxy that a test can cut.
package etcdtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ErrNoBinary: no etcd binary (run `make k8s-bins`, or set DISCO_ETCD).
var ErrNoBinary = errors.New("etcdtest: no etcd binary (run `make k8s-bins`, or set DISCO_ETCD to one)")

// Binary returns the etcd binary: $DISCO_ETCD, else etcd in
// $DISCO_K8S_BINS, else the newest `make k8s-bins` build under the cache
// ($DISCO_CACHE, default ~/.cache/disco).
func Binary() (string, error) {
	ok := func(p string) bool { fi, err := os.Stat(p); return err == nil && fi.Mode()&0o111 != 0 }
	if p := os.Getenv("DISCO_ETCD"); p != "" {
		if ok(p) {
			return p, nil
		}
		return "", fmt.Errorf("%w: DISCO_ETCD=%s", ErrNoBinary, p)
	}
	if d := os.Getenv("DISCO_K8S_BINS"); d != "" && ok(filepath.Join(d, "etcd")) {
		return filepath.Join(d, "etcd"), nil
	}
	cache := os.Getenv("DISCO_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "disco")
	}
	dirs, _ := filepath.Glob(filepath.Join(cache, "k8s-*"))
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		if ok(filepath.Join(d, "etcd")) {
			return filepath.Join(d, "etcd"), nil
		}
	}
	return "", ErrNoBinary
}

// Server is an etcd process.
type Server struct {
	tb       testing.TB
	bin, dir string
	client   string // client URL
	peer     string
	tls      *TLS

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

// TLS is a server started WithTLS: its CA, and a client certificate it
// accepts (client certificate authentication).
type TLS struct {
	CAFile, CertFile, KeyFile string
	// Config is a client TLS config with the CA and the client certificate.
	Config *tls.Config
}

// Option configures Start.
type Option func(*Server)

// WithTLS serves clients over TLS and requires a client certificate
// signed by the test CA (Server.TLS has the files).
func WithTLS() Option { return func(s *Server) { s.tls = &TLS{} } }

// Start runs etcd until the test ends. Without a binary the test skips,
// unless DISCO_REQUIRE_K8S=1 (CI).
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("DISCO_REQUIRE_K8S") == "1" {
			tb.Fatal(err)
		}
		tb.Skip(err)
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir()}
	for _, o := range opts {
		o(s)
	}
	ports := freePorts(tb, 2)
	scheme := "http"
	if s.tls != nil {
		scheme = "https"
		s.makeTLS()
	}
	s.client = fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[0])
	s.peer = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	s.Start()
	tb.Cleanup(func() { s.Kill() })
	return s
}

// Endpoint is the client URL ("http://127.0.0.1:N").
func (s *Server) Endpoint() string { return s.client }

// Addr is the client address ("127.0.0.1:N").
func (s *Server) Addr() string { u := s.client; return u[len("https://")-boolInt(s.tls == nil):] }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TLS returns the certificate files of a server started WithTLS.
func (s *Server) TLS() *TLS { return s.tls }

// Start starts (or restarts) the process on the same port and data, and
// waits until it serves.
func (s *Server) Start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	args := []string{"--name=etcdtest", "--data-dir=" + filepath.Join(s.dir, "data"),
		"--listen-client-urls=" + s.client, "--advertise-client-urls=" + s.client,
		"--listen-peer-urls=" + s.peer, "--initial-advertise-peer-urls=" + s.peer,
		"--initial-cluster=etcdtest=" + s.peer, "--unsafe-no-fsync", "--log-level=warn"}
	if t := s.tls; t != nil {
		args = append(args, "--cert-file="+filepath.Join(s.dir, "server.pem"), "--key-file="+filepath.Join(s.dir, "server-key.pem"),
			"--client-cert-auth", "--trusted-ca-file="+t.CAFile)
	}
	s.log = &bytes.Buffer{}
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("etcdtest: %v", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(s.done)
	c := s.newClient()
	defer c.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Get(ctx, "etcdtest-probe")
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.done:
			s.tb.Fatalf("etcdtest: etcd exited:\n%s", s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("etcdtest: etcd not serving after 30s: %v\n%s", err, s.log.String())
		}
	}
}

// Kill kills the process (SIGKILL) and waits for it. Idempotent.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

func (s *Server) newClient() *clientv3.Client {
	cfg := clientv3.Config{Endpoints: []string{s.client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if s.tls != nil {
		cfg.TLS = s.tls.Config
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		s.tb.Fatalf("etcdtest: client: %v", err)
	}
	return c
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client() *clientv3.Client {
	c := s.newClient()
	s.tb.Cleanup(func() { c.Close() })
	return c
}

// Compact compacts the keyspace up to the current revision, which it
// returns: watches from older revisions fail with ErrCompacted.
func (s *Server) Compact(ctx context.Context) int64 {
	s.tb.Helper()
	c := s.newClient()
	defer c.Close()
	resp, err := c.Get(ctx, "etcdtest-probe")
	if err != nil {
		s.tb.Fatalf("etcdtest: compact: %v", err)
	}
	if _, err := c.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		s.tb.Fatalf("etcdtest: compact: %v", err)
	}
	return resp.Header.Revision
}

func freePorts(tb testing.TB, n int) []int {
	var out []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// makeTLS writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, and the client's config.
func (s *Server) makeTLS() {
	tb := s.tb
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(s.dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			tb.Fatal(err)
		}
		return p
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcdtest CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64, usage []x509.ExtKeyUsage) (string, string) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		kd, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			tb.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "PRIVATE KEY", kd)
	}
	s.tls.CAFile = write("ca.pem", "CERTIFICATE", caDER)
	leaf("server", 2, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
	s.tls.CertFile, s.tls.KeyFile = leaf("client", 3, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	pair, err := tls.LoadX509KeyPair(s.tls.CertFile, s.tls.KeyFile)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	s.tls.Config = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

// Proxy forwards TCP to the server; Cut drops every connection and refuses
// new ones until Restore, as a network partition does.
type Proxy struct {
	tb     testing.TB
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
}

// Proxy returns a proxy of the server, on loopback, closed when the test
// ends. Point clients at its Addr.
func (s *Server) Proxy() *Proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.tb.Fatal(err)
	}
	p := &Proxy{tb: s.tb, ln: ln, target: s.Addr(), conns: map[net.Conn]bool{}}
	go p.serve()
	s.tb.Cleanup(func() { ln.Close(); p.Cut() })
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close(); c.Close() }()
		go func() { _, _ = io.Copy(c, up); up.Close(); c.Close() }()
	}
}

// Cut drops every connection through the proxy and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Restore lets connections through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}
