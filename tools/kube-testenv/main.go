// Command kube-testenv runs a real Kubernetes API server on 127.0.0.1 with no cluster around it: an etcd
// embedded in this process, and kube-apiserver (built from the same module, k8s.io/kubernetes at the
// release go.mod names) as a child process. leasecron's tests and benchmarks use it as "a real cluster"
// for everything leasecron talks to (Leases, ConfigMaps, Events, SelfSubjectAccessReviews,
// TokenRequests); there is no kubelet, no controller manager and no scheduler.
//
//	kube-testenv [flags]                     start; print one JSON line when ready; stop on SIGTERM
//	kube-testenv user -dir D -name N [-group G ...]   a kubeconfig for user N (client certificate)
//
// Authentication is by client certificates from a CA made at start (the admin is in system:masters)
// and by real ServiceAccount tokens (TokenRequest); authorization is RBAC. An audit log records every
// request on leases, configmaps, events, jobs, tokens and access reviews at the Metadata level.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "user" {
		if err := userCommand(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "kube-testenv user: %v\n", err)
			os.Exit(2)
		}
		return
	}
	code, err := serve(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-testenv: %v\n", err)
	}
	os.Exit(code)
}

// multiFlag collects a repeated string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// Ready is the JSON line printed on stdout (and written to DIR/ready.json) once the server answers.
type Ready struct {
	Server          string `json:"server"`
	Kubeconfig      string `json:"kubeconfig"`
	Dir             string `json:"dir"`
	CA              string `json:"ca"`
	AuditLog        string `json:"audit_log"`
	APIServerLog    string `json:"apiserver_log"`
	Etcd            string `json:"etcd"`
	Release         string `json:"release"`
	StartupMillis   int64  `json:"startup_ms"`
	EtcdFsync       bool   `json:"etcd_fsync"`
	APIServerPID    int    `json:"apiserver_pid"`
	ServiceAccounts string `json:"service_account_issuer"`
}

// release is the Kubernetes release this module builds (k8s.io/kubernetes in go.mod).
const release = "v1.37.2"

const issuer = "https://kubernetes.default.svc"

func serve(args []string) (int, error) {
	fs := flag.NewFlagSet("kube-testenv", flag.ContinueOnError)
	dir := fs.String("dir", "", "state directory (certificates, kubeconfigs, etcd data, logs); default: a temporary directory removed at exit")
	apiserverPath := fs.String("apiserver", "", "the kube-apiserver binary (default: kube-apiserver beside this program)")
	noFsync := fs.Bool("etcd-unsafe-no-fsync", false, "run etcd without fsync (benchmarks only)")
	compaction := fs.Duration("etcd-compaction-interval", 5*time.Minute, "kube-apiserver's --etcd-compaction-interval (0 turns compaction off)")
	startTimeout := fs.Duration("start-timeout", 5*time.Minute, "how long to wait for the server to become ready")
	stopOnEOF := fs.Bool("stop-on-stdin-eof", false, "also stop when standard input reaches end-of-file (a parent that dies closes it)")
	verbosity := fs.Int("v", 0, "kube-apiserver's log verbosity")
	var users, extra multiFlag
	fs.Var(&users, "user", "NAME[:GROUP,GROUP...] a user to write a kubeconfig for at start (repeatable)")
	fs.Var(&extra, "apiserver-arg", "--flag=value passed on to kube-apiserver (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, nil
	}
	if fs.NArg() > 0 {
		return 2, fmt.Errorf("unexpected argument %q (commands: user)", fs.Arg(0))
	}
	started := time.Now()

	temporary := *dir == ""
	if temporary {
		d, err := os.MkdirTemp("", "kube-testenv-")
		if err != nil {
			return 1, fmt.Errorf("making a state directory: %w", err)
		}
		*dir = d
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return 1, fmt.Errorf("state directory %q: %w", *dir, err)
	}
	*dir = abs
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return 1, fmt.Errorf("state directory %q: %w", *dir, err)
	}
	cleanup := func() {
		if temporary {
			_ = os.RemoveAll(*dir)
		}
	}
	defer cleanup()

	if *apiserverPath == "" {
		self, err := os.Executable()
		if err != nil {
			return 1, fmt.Errorf("finding kube-apiserver beside this program: %w", err)
		}
		*apiserverPath = filepath.Join(filepath.Dir(self), "kube-apiserver")
	}
	if _, err := os.Stat(*apiserverPath); err != nil {
		return 1, fmt.Errorf("kube-apiserver binary: %w (build it: go build -o DIR k8s.io/kubernetes/cmd/kube-apiserver)", err)
	}

	ports, err := freePorts(3)
	if err != nil {
		return 1, err
	}
	secure, etcdClient, etcdPeer := ports[0], ports[1], ports[2]
	server := fmt.Sprintf("https://127.0.0.1:%d", secure)

	p, err := makePKI(*dir)
	if err != nil {
		return 1, err
	}
	admin, err := writeKubeconfig(filepath.Join(*dir, "admin.kubeconfig"), p, server, "admin", []string{"system:masters"})
	if err != nil {
		return 1, err
	}
	for _, spec := range users {
		name, groups := parseUserSpec(spec)
		if _, err := writeUser(*dir, p, server, name, groups); err != nil {
			return 1, err
		}
	}
	policy := filepath.Join(*dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return 1, fmt.Errorf("writing %s: %w", policy, err)
	}

	etcd, etcdURL, err := startEtcd(*dir, etcdClient, etcdPeer, *noFsync)
	if err != nil {
		return 1, err
	}
	defer etcd.Close()

	logPath := filepath.Join(*dir, "kube-apiserver.log")
	auditPath := filepath.Join(*dir, "audit.log")
	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", secure),
		"--advertise-address=127.0.0.1",
		// A loopback address is not a valid Endpoints address; without a reconciler none is written.
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + filepath.Join(*dir, "apiserver"),
		"--tls-cert-file=" + filepath.Join(*dir, "pki", "serving.crt"),
		"--tls-private-key-file=" + filepath.Join(*dir, "pki", "serving.key"),
		"--client-ca-file=" + filepath.Join(*dir, "pki", "ca.crt"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + issuer,
		"--service-account-key-file=" + filepath.Join(*dir, "pki", "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(*dir, "pki", "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		// The ServiceAccount admission plugin waits for a token controller that does not run here.
		"--disable-admission-plugins=ServiceAccount",
		"--audit-log-path=" + auditPath,
		"--audit-policy-file=" + policy,
		"--audit-log-mode=blocking",
		fmt.Sprintf("--etcd-compaction-interval=%s", *compaction),
		"--profiling=false",
		fmt.Sprintf("--v=%d", *verbosity),
	}
	apiArgs = append(apiArgs, extra...)
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 1, fmt.Errorf("kube-apiserver log %s: %w", logPath, err)
	}
	defer logFile.Close()
	child, exited, err := startChild(*apiserverPath, apiArgs, logFile)
	if err != nil {
		return 1, err
	}

	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	eof := make(chan struct{})
	if *stopOnEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(eof)
		}()
	}

	ctx, cancel := context.WithTimeout(context.Background(), *startTimeout)
	readyErr := make(chan error, 1)
	go func() { readyErr <- waitReady(ctx, server, p) }()
	select {
	case err := <-readyErr:
		cancel()
		if err != nil {
			stopChild(child, exited)
			return 1, fmt.Errorf("kube-apiserver did not become ready: %w\n%s", err, tail(logPath, 30))
		}
	case err := <-exited:
		cancel()
		return 1, fmt.Errorf("kube-apiserver exited during start-up: %v\n%s", err, tail(logPath, 30))
	case err := <-etcd.Err():
		cancel()
		stopChild(child, exited)
		return 1, fmt.Errorf("etcd failed: %w", err)
	case sig := <-stop:
		cancel()
		stopChild(child, exited)
		fmt.Fprintf(os.Stderr, "kube-testenv: %s during start-up; stopped\n", sig)
		return 0, nil
	case <-eof:
		cancel()
		stopChild(child, exited)
		return 0, nil
	}

	ready := Ready{
		Server:          server,
		Kubeconfig:      admin,
		Dir:             *dir,
		CA:              filepath.Join(*dir, "pki", "ca.crt"),
		AuditLog:        auditPath,
		APIServerLog:    logPath,
		Etcd:            etcdURL,
		Release:         release,
		StartupMillis:   time.Since(started).Milliseconds(),
		EtcdFsync:       !*noFsync,
		APIServerPID:    child.Process.Pid,
		ServiceAccounts: issuer,
	}
	line, err := json.Marshal(ready)
	if err != nil {
		stopChild(child, exited)
		return 1, err
	}
	if err := os.WriteFile(filepath.Join(*dir, "ready.json"), append(line, '\n'), 0o600); err != nil {
		stopChild(child, exited)
		return 1, err
	}
	fmt.Fprintf(os.Stderr, "kube-testenv: Kubernetes %s ready at %s in %.1f s; admin kubeconfig: %s\n",
		release, server, time.Since(started).Seconds(), admin)
	if _, err := fmt.Println(string(line)); err != nil {
		stopChild(child, exited)
		return 1, fmt.Errorf("writing the ready line: %w", err)
	}

	select {
	case sig := <-stop:
		fmt.Fprintf(os.Stderr, "kube-testenv: %s: stopping kube-apiserver, then etcd\n", sig)
	case <-eof:
		fmt.Fprintln(os.Stderr, "kube-testenv: standard input closed: stopping kube-apiserver, then etcd")
	case err := <-exited:
		return 1, fmt.Errorf("kube-apiserver exited: %v\n%s", err, tail(logPath, 30))
	case err := <-etcd.Err():
		stopChild(child, exited)
		return 1, fmt.Errorf("etcd failed: %w", err)
	}
	stopChild(child, exited)
	return 0, nil
}

// startChild starts kube-apiserver with its output in logFile. The child gets SIGKILL when this process
// dies (PR_SET_PDEATHSIG is tied to the thread that forks, so that thread stays locked and alive until
// the child has been waited for).
func startChild(path string, args []string, logFile *os.File) (*exec.Cmd, <-chan error, error) {
	cmd := exec.Command(path, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("starting %s: %w", path, err)
			return
		}
		started <- nil
		exited <- cmd.Wait()
		// The thread stays locked: it ends with this goroutine, after the child has.
	}()
	if err := <-started; err != nil {
		return nil, nil, err
	}
	return cmd, exited, nil
}

// stopChild sends SIGTERM, waits up to a minute for kube-apiserver's graceful shutdown, then SIGKILLs.
func stopChild(cmd *exec.Cmd, exited <-chan error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(time.Minute):
		fmt.Fprintln(os.Stderr, "kube-testenv: kube-apiserver still running a minute after SIGTERM: SIGKILL")
		_ = cmd.Process.Kill()
		<-exited
	}
}

func startEtcd(dir string, clientPort, peerPort int, noFsync bool) (*embed.Etcd, string, error) {
	cfg := embed.NewConfig()
	cfg.Name = "kube-testenv"
	cfg.Dir = filepath.Join(dir, "etcd")
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = noFsync
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("starting etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(2 * time.Minute):
		e.Close()
		return nil, "", errors.New("etcd not ready after 2 minutes")
	}
	return e, clientURL.String(), nil
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a moment ago.
func freePorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitReady polls /readyz with the admin's certificate (anonymous requests are refused until RBAC's
// bootstrap roles exist), then waits for the default namespace.
func waitReady(ctx context.Context, server string, p *pki) error {
	cert, err := tls.X509KeyPair(p.adminCertPEM, p.adminKeyPEM)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.caCert)
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs:      roots,
			Certificates: []tls.Certificate{cert},
		}},
	}
	last := "no answer yet"
	for _, path := range []string{"/readyz", "/api/v1/namespaces/default"} {
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+path, nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err == nil {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				last = fmt.Sprintf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
			} else {
				last = err.Error()
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w (last: %s)", ctx.Err(), last)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// tail returns the last n lines of the file at path, for error messages.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		lines = append(lines, scanner.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return fmt.Sprintf("last lines of %s:\n%s", path, strings.Join(lines, "\n"))
}

func parseUserSpec(spec string) (string, []string) {
	name, groups, found := strings.Cut(spec, ":")
	if !found || groups == "" {
		return name, nil
	}
	return name, strings.Split(groups, ",")
}

func userCommand(args []string) error {
	fs := flag.NewFlagSet("kube-testenv user", flag.ContinueOnError)
	dir := fs.String("dir", "", "the state directory of a running kube-testenv")
	name := fs.String("name", "", "the user name (the certificate's CN)")
	var groups multiFlag
	fs.Var(&groups, "group", "a group (the certificate's O; repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *name == "" {
		return errors.New("-dir and -name are required")
	}
	raw, err := os.ReadFile(filepath.Join(*dir, "ready.json"))
	if err != nil {
		return fmt.Errorf("is kube-testenv running with -dir %s? %w", *dir, err)
	}
	var ready Ready
	if err := json.Unmarshal(raw, &ready); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(*dir, "ready.json"), err)
	}
	p, err := loadPKI(*dir)
	if err != nil {
		return err
	}
	path, err := writeUser(*dir, p, ready.Server, *name, groups)
	if err != nil {
		return err
	}
	fmt.Println(path)
	return nil
}

// auditPolicy records, at the Metadata level, the requests leasecron and its peers make; nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  resources:
  - group: coordination.k8s.io
    resources: ["leases"]
  - group: ""
    resources: ["configmaps", "events", "serviceaccounts/token"]
  - group: events.k8s.io
    resources: ["events"]
  - group: batch
    resources: ["jobs"]
  - group: authorization.k8s.io
    resources: ["selfsubjectaccessreviews"]
- level: None
`
