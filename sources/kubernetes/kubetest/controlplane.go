package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ErrNoBinaries means kube-apiserver, etcd or kubectl could not be found.
var ErrNoBinaries = errors.New("kubetest: Kubernetes binaries not found (run `make k8s-bins`, or set DISCO_K8S_BINS to a directory holding kube-apiserver, etcd and kubectl)")

// Binaries returns the directory holding kube-apiserver, etcd and kubectl:
// $DISCO_K8S_BINS if set, else the newest build under the cache that `make
// k8s-bins` fills ($DISCO_CACHE, default ~/.cache/disco).
func Binaries() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"kube-apiserver", "etcd", "kubectl"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("DISCO_K8S_BINS"); dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("%w: DISCO_K8S_BINS=%s lacks one of them", ErrNoBinaries, dir)
		}
		return dir, nil
	}
	cache := os.Getenv("DISCO_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrNoBinaries, err)
		}
		cache = filepath.Join(home, ".cache", "disco")
	}
	dirs, _ := filepath.Glob(filepath.Join(cache, "k8s-*"))
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

// Option configures Start.
type Option func(*options)

type options struct {
	watchCache bool
	extraArgs  []string
}

// WithWatchCache turns the API server's watch cache on (the default) or off.
// Off, watches are served from etcd directly, so an etcd compaction makes a
// watch from an older resourceVersion fail with 410 Gone at once.
func WithWatchCache(on bool) Option { return func(o *options) { o.watchCache = on } }

// WithAPIServerArgs appends flags to kube-apiserver's command line.
func WithAPIServerArgs(args ...string) Option {
	return func(o *options) { o.extraArgs = append(o.extraArgs, args...) }
}

// ControlPlane is a real etcd and kube-apiserver on random loopback ports,
// with TLS, token authentication and RBAC, in a temporary directory of its
// own. Stop it with Stop (New does that when the test ends).
type ControlPlane struct {
	dir        string
	bins       string
	pki        *pki
	etcd       *proc
	apiserver  *proc
	etcdURL    string
	apiURL     string
	token      string
	admin      *rest.Config
	kubeconfig string
	stopOnce   sync.Once
}

// Start runs etcd and kube-apiserver and returns once /readyz answers. It
// first removes what earlier runs killed mid-way left behind (processes and
// directories whose owning process is gone).
func Start(ctx context.Context, opts ...Option) (*ControlPlane, error) {
	o := options{watchCache: true}
	for _, opt := range opts {
		opt(&o)
	}
	bins, err := Binaries()
	if err != nil {
		return nil, err
	}
	sweepStale()
	var lastErr error
	for range 3 { // a port taken between probing and binding: try fresh ports
		cp, err := start(ctx, bins, o)
		if err == nil {
			return cp, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

const dirPattern = "disco-kubetest-*"

func start(ctx context.Context, bins string, o options) (cp *ControlPlane, err error) {
	dir, err := os.MkdirTemp("", dirPattern)
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	cp = &ControlPlane{dir: dir, bins: bins}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	if cp.pki, err = newPKI(dir); err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	cp.token = hex.EncodeToString(tok)
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(cp.token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	cp.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	cp.apiURL = fmt.Sprintf("https://127.0.0.1:%d", ports[2])

	cp.etcd = &proc{name: "etcd", bin: filepath.Join(bins, "etcd"), dir: dir, args: []string{
		"--name=kubetest", "--data-dir=" + filepath.Join(dir, "etcd-data"),
		"--listen-client-urls=" + cp.etcdURL, "--advertise-client-urls=" + cp.etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=kubetest=" + peerURL, "--unsafe-no-fsync", "--log-level=warn",
	}}
	args := []string{
		"--etcd-servers=" + cp.etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[2]),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--tls-cert-file=" + cp.pki.certFile, "--tls-private-key-file=" + cp.pki.keyFile,
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + cp.pki.saPubFile,
		"--service-account-signing-key-file=" + cp.pki.saKeyFile,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--shutdown-delay-duration=0s",
		// Close watch streams within 2s on SIGTERM; the default waits out the
		// 60s HTTP shutdown timeout while any watch is open.
		"--shutdown-watch-termination-grace-period=2s",
		"--watch-cache=" + strconv.FormatBool(o.watchCache),
		"--profiling=false",
		// The "kubernetes" Service would point at 127.0.0.1, which the API
		// server itself rejects; skip its reconciler instead of logging that.
		"--endpoint-reconciler-type=none",
		"--v=1",
	}
	cp.apiserver = &proc{name: "kube-apiserver", bin: filepath.Join(bins, "kube-apiserver"), dir: dir,
		args: append(args, o.extraArgs...)}

	cp.admin = &rest.Config{
		Host:            cp.apiURL,
		BearerToken:     cp.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.pki.caPEM},
		QPS:             200,
		Burst:           400,
	}
	if err := cp.StartEtcd(ctx); err != nil {
		return nil, err
	}
	if err := cp.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	cp.kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := WriteKubeconfig(cp.admin, "default", cp.kubeconfig); err != nil {
		return nil, err
	}
	return cp, nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("kubetest: free port: %w", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// Dir returns the control plane's temporary directory (logs, certs, kubeconfig).
func (cp *ControlPlane) Dir() string { return cp.dir }

// Binaries returns the directory of kube-apiserver, etcd and kubectl in use.
func (cp *ControlPlane) Binaries() string { return cp.bins }

// EtcdURL returns etcd's client URL.
func (cp *ControlPlane) EtcdURL() string { return cp.etcdURL }

// AdminConfig returns a new copy of the rest.Config of a system:masters user.
func (cp *ControlPlane) AdminConfig() *rest.Config { return rest.CopyConfig(cp.admin) }

// AdminClient returns a clientset for AdminConfig.
func (cp *ControlPlane) AdminClient() (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(cp.AdminConfig())
}

// Kubeconfig returns the path of a kubeconfig file for the admin user, with
// namespace "default" in its context.
func (cp *ControlPlane) Kubeconfig() string { return cp.kubeconfig }

// CAData returns the PEM of the CA that signed the API server's certificate.
func (cp *ControlPlane) CAData() []byte { return bytes.Clone(cp.pki.caPEM) }

// Kubectl runs kubectl with the admin kubeconfig and returns its combined
// output.
func (cp *ControlPlane) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(cp.bins, "kubectl"), append([]string{"--kubeconfig=" + cp.kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubetest: kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// Stop kills both processes, reaps them and removes the directory.
// Idempotent.
func (cp *ControlPlane) Stop() {
	cp.stopOnce.Do(func() {
		if cp.apiserver != nil {
			cp.apiserver.stop(syscall.SIGKILL, 10*time.Second)
		}
		if cp.etcd != nil {
			cp.etcd.stop(syscall.SIGKILL, 10*time.Second)
		}
		os.RemoveAll(cp.dir)
	})
}

// LogTail returns the last bytes of both processes' logs, for test failures.
func (cp *ControlPlane) LogTail(n int) string {
	return "---- etcd\n" + cp.etcd.logTail(n) + "\n---- kube-apiserver\n" + cp.apiserver.logTail(n)
}

func signalFor(graceful bool) syscall.Signal {
	if graceful {
		return syscall.SIGTERM
	}
	return syscall.SIGKILL
}

// StopAPIServer stops kube-apiserver: graceful sends SIGTERM and waits for
// its shutdown (the shutdown delay is 0s), otherwise SIGKILL.
func (cp *ControlPlane) StopAPIServer(graceful bool) error {
	return cp.apiserver.stop(signalFor(graceful), 60*time.Second)
}

// StartAPIServer starts kube-apiserver again with the same flags and port
// and waits for /readyz.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	if err := cp.apiserver.start(); err != nil {
		return err
	}
	return cp.waitReady(ctx)
}

// RestartAPIServer is StopAPIServer followed by StartAPIServer.
func (cp *ControlPlane) RestartAPIServer(ctx context.Context, graceful bool) error {
	if err := cp.StopAPIServer(graceful); err != nil {
		return err
	}
	return cp.StartAPIServer(ctx)
}

// StopEtcd stops etcd (SIGTERM when graceful, else SIGKILL). The API server
// keeps running and fails its requests until StartEtcd.
func (cp *ControlPlane) StopEtcd(graceful bool) error {
	return cp.etcd.stop(signalFor(graceful), 30*time.Second)
}

// StartEtcd starts etcd again on its data directory and waits for /health.
func (cp *ControlPlane) StartEtcd(ctx context.Context) error {
	if err := cp.etcd.start(); err != nil {
		return err
	}
	return poll(ctx, cp.etcd, 60*time.Second, func() bool {
		var h struct{ Health string }
		return getJSON(ctx, http.DefaultClient, cp.etcdURL+"/health", "", &h) == nil && h.Health == "true"
	})
}

func (cp *ControlPlane) waitReady(ctx context.Context) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.pki.caPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	return poll(ctx, cp.apiserver, 90*time.Second, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cp.apiURL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+cp.token)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// poll calls ready every 50ms until it returns true, p exits, ctx ends or
// limit passes.
func poll(ctx context.Context, p *proc, limit time.Duration, ready func() bool) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	exited := p.exited()
	for {
		if ready() {
			return nil
		}
		select {
		case <-exited:
			return p.exitError()
		case <-ctx.Done():
			return fmt.Errorf("kubetest: waiting for %s: %w", p.name, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("kubetest: %s not ready after %v; last log lines:\n%s", p.name, limit, p.logTail(3000))
		case <-tick.C:
		}
	}
}

func getJSON(ctx context.Context, c *http.Client, url, body string, out any) error {
	method := http.MethodGet
	var r io.Reader
	if body != "" {
		method, r = http.MethodPost, strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	return json.Unmarshal(b, out)
}

// CompactEtcd compacts etcd's history up to its current revision and returns
// that revision. A watch or list from an older resourceVersion then fails
// with 410 Gone (at once without the watch cache; with it, once the
// resourceVersion falls out of the cache's window or the API server restarts).
func (cp *ControlPlane) CompactEtcd(ctx context.Context) (int64, error) {
	var rng struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	key := base64.StdEncoding.EncodeToString([]byte("/registry"))
	if err := getJSON(ctx, http.DefaultClient, cp.etcdURL+"/v3/kv/range", `{"key":"`+key+`","limit":1}`, &rng); err != nil {
		return 0, fmt.Errorf("kubetest: etcd revision: %w", err)
	}
	rev, err := strconv.ParseInt(rng.Header.Revision, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("kubetest: etcd revision %q: %w", rng.Header.Revision, err)
	}
	var out struct{}
	body := fmt.Sprintf(`{"revision":"%d","physical":true}`, rev)
	if err := getJSON(ctx, http.DefaultClient, cp.etcdURL+"/v3/kv/compaction", body, &out); err != nil {
		return 0, fmt.Errorf("kubetest: etcd compaction: %w", err)
	}
	return rev, nil
}

// EnsureNamespace creates namespace unless it exists.
func (cp *ControlPlane) EnsureNamespace(ctx context.Context, namespace string) error {
	cs, err := cp.AdminClient()
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubetest: create namespace %s: %w", namespace, err)
	}
	return nil
}

// ServiceAccountConfig creates the ServiceAccount namespace/name (and its
// namespace) unless they exist, and returns a rest.Config that authenticates
// as it with a token from the TokenRequest API, valid for an hour. It has
// only the permissions granted to it (see Grant), none by default.
func (cp *ControlPlane) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	if err := cp.EnsureNamespace(ctx, namespace); err != nil {
		return nil, err
	}
	cs, err := cp.AdminClient()
	if err != nil {
		return nil, err
	}
	_, err = cs.CoreV1().ServiceAccounts(namespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("kubetest: create service account %s/%s: %w", namespace, name, err)
	}
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubetest: token for %s/%s: %w", namespace, name, err)
	}
	return &rest.Config{
		Host:            cp.apiURL,
		BearerToken:     tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.pki.caPEM},
	}, nil
}

// Grant gives the ServiceAccount namespace/sa the rules through a Role and
// RoleBinding named role in namespace (replacing earlier ones of that name).
// With clusterWide, a ClusterRole and ClusterRoleBinding instead.
func (cp *ControlPlane) Grant(ctx context.Context, namespace, sa, role string, clusterWide bool, rules ...rbacv1.PolicyRule) error {
	cs, err := cp.AdminClient()
	if err != nil {
		return err
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: namespace}}
	if clusterWide {
		r := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: rules}
		b := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role}}
		_ = cs.RbacV1().ClusterRoles().Delete(ctx, role, metav1.DeleteOptions{})
		_ = cs.RbacV1().ClusterRoleBindings().Delete(ctx, role, metav1.DeleteOptions{})
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, r, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("kubetest: cluster role %s: %w", role, err)
		}
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("kubetest: cluster role binding %s: %w", role, err)
		}
		return nil
	}
	r := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: namespace}, Rules: rules}
	b := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: namespace}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role}}
	_ = cs.RbacV1().Roles(namespace).Delete(ctx, role, metav1.DeleteOptions{})
	_ = cs.RbacV1().RoleBindings(namespace).Delete(ctx, role, metav1.DeleteOptions{})
	if _, err := cs.RbacV1().Roles(namespace).Create(ctx, r, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("kubetest: role %s/%s: %w", namespace, role, err)
	}
	if _, err := cs.RbacV1().RoleBindings(namespace).Create(ctx, b, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("kubetest: role binding %s/%s: %w", namespace, role, err)
	}
	return nil
}

// WriteKubeconfig writes a kubeconfig file for cfg (server, CA, bearer
// token) whose context uses namespace.
func WriteKubeconfig(cfg *rest.Config, namespace, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["kubetest"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest", Namespace: namespace}
	kc.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("kubetest: write kubeconfig: %w", err)
	}
	return nil
}

// sweepStale removes what control planes of dead test processes left: for
// every directory of ours whose owner.pid is no longer alive, it kills the
// processes recorded there (only if their command line names that
// directory, so a reused pid is never hit) and removes the directory.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPattern))
	for _, dir := range dirs {
		owner, err := readPid(filepath.Join(dir, "owner.pid"))
		if err != nil || alive(owner) {
			continue
		}
		pids, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
		for _, f := range pids {
			pid, err := readPid(f)
			if err != nil || pid == owner || !alive(pid) {
				continue
			}
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if bytes.Contains(cmdline, []byte(dir)) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		os.RemoveAll(dir)
	}
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
