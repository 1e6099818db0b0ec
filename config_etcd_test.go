package mq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/coord"
	"go.uber.org/zap"
)

// The configuration read through coord's etcd-backed Provider from a real
// etcd: $COORD_TEST_ETCD_ENDPOINTS, else an etcd this test starts from the
// etcd binary on PATH (Debian: apt-get install etcd-server).

// envTestEtcdEndpoints names an external etcd (comma-separated host:port)
// to test against; coord's own tests read it too.
const envTestEtcdEndpoints = "COORD_TEST_ETCD_ENDPOINTS"

func TestEtcdConfig(t *testing.T) {
	endpoints := testEtcd(t)
	nop := clog.NewFromZap(zap.NewNop())
	p, err := coord.New(t.Context(), &coord.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second}, coord.WithLogger(nop))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	cc := p.Config()

	// A unique environment per run and case, so that reruns on a shared
	// etcd never collide; its keys are deleted at cleanup (before p closes).
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	base := "test-" + hex.EncodeToString(b)
	var envs []string
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, env := range envs {
			keys, err := cc.List(ctx, env)
			if err != nil {
				t.Errorf("cleanup: list %s: %v", env, err)
				continue
			}
			for _, k := range keys {
				if err := cc.Delete(ctx, k); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
	})

	const service = "im-etcd"
	tests := []struct {
		name    string
		global  any // stored with Set: a string as it is, a map as JSON; nil: absent
		service any
		viaEnv  bool          // no WithCoordProvider: $COORD_ENDPOINTS, $GOCHAT_ENV
		want    func(*config) // applied to defaultConfig()
		wantIs  error         // instead of want
		wantKey func(g, s string) string
		wantFld string
	}{
		{
			name: "shared JSON object, service YAML text, merged",
			global: map[string]any{
				"brokers":  []string{"e:9092"},
				"producer": map[string]any{"linger": "5ms", "acks": "leader", "idempotent": false},
			},
			service: "client_id: svc-x\nproducer:\n  acks: none\n",
			want: func(c *config) {
				c.Brokers, c.ClientID = []string{"e:9092"}, "svc-x"
				c.Producer.Linger, c.Producer.Acks, c.Producer.Idempotent = duration(5*time.Millisecond), "none", false
			},
		},
		{
			name:   "YAML document stored raw",
			global: "# shared\nbrokers:\n  - e1:9092\n  - e2:9092\nconsumer:\n  concurrency: 8\n  offset_reset: latest\n",
			want: func(c *config) {
				c.Brokers = []string{"e1:9092", "e2:9092"}
				c.Consumer.Concurrency, c.Consumer.OffsetReset = 8, "latest"
			},
		},
		{
			name:    "only a service document",
			service: `{"brokers": ["s:9092"]}`,
			want:    func(c *config) { c.Brokers = []string{"s:9092"} },
		},
		{
			name:   "default provider from COORD_ENDPOINTS and GOCHAT_ENV",
			global: `{"brokers": ["e:9092"], "dial_timeout": "2s"}`,
			viaEnv: true,
			want:   func(c *config) { c.Brokers, c.DialTimeout = []string{"e:9092"}, duration(2*time.Second) },
		},
		{
			name:    "malformed service document",
			global:  `{"brokers": ["e:9092"]}`,
			service: "brokers: [e:9092\n",
			wantIs:  ErrInvalidConfig,
			wantKey: func(_, s string) string { return s },
		},
		{
			name:    "invalid field in the shared document",
			global:  `{"brokers": ["e:9092"], "consumer": {"offset_reset": "newest"}}`,
			service: `{"client_id": "x"}`,
			wantIs:  ErrInvalidConfig,
			wantKey: func(g, _ string) string { return g },
			wantFld: "consumer.offset_reset",
		},
		{
			name:   "missing documents",
			wantIs: ErrConfigNotFound,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := fmt.Sprintf("%s-%d", base, i)
			envs = append(envs, env)
			gk, sk := configKeys(env, service)
			for key, doc := range map[string]any{gk: tt.global, sk: tt.service} {
				if doc == nil {
					continue
				}
				if err := cc.Set(t.Context(), key, doc); err != nil {
					t.Fatal(err)
				}
				if text, ok := doc.(string); ok {
					var raw string
					if err := cc.Get(t.Context(), key, &raw); err != nil || raw != text {
						t.Fatalf("stored %q, read back %q, %v", text, raw, err)
					}
				}
			}

			logger, _ := cfgLogger()
			opts := []Option{WithLogger(logger)}
			if tt.viaEnv {
				t.Setenv(EnvCoordEndpoints, strings.Join(endpoints, ","))
				t.Setenv(EnvEnvironment, env)
			} else {
				opts = append(opts, WithCoordProvider(p), WithEnv(env))
			}
			st, err := prepare(t.Context(), service, opts)
			cfg := st.cfg

			if tt.wantIs != nil {
				if !errors.Is(err, tt.wantIs) {
					t.Fatalf("err = %v, want %v", err, tt.wantIs)
				}
				if errors.Is(err, ErrConfigNotFound) && (!strings.Contains(err.Error(), gk) || !strings.Contains(err.Error(), sk)) {
					t.Errorf("message %q does not name %s and %s", err, gk, sk)
				}
				if tt.wantKey != nil {
					var ce *ConfigError
					if !errors.As(err, &ce) || ce.Key != tt.wantKey(gk, sk) || ce.Field != tt.wantFld {
						t.Fatalf("err = %v, want a *ConfigError for %s, field %q", err, tt.wantKey(gk, sk), tt.wantFld)
					}
					if !strings.Contains(err.Error(), ce.Key) || !strings.Contains(err.Error(), ce.Field) {
						t.Errorf("message %q does not name key and field", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := defaultConfig()
			tt.want(&want)
			if want.ClientID == "" {
				want.ClientID = service
			}
			assertConfig(t, cfg, want)
		})
	}
}

// testEtcd returns the endpoints of a real etcd, skipping the test when
// there is none.
func testEtcd(t *testing.T) []string {
	t.Helper()
	if env := os.Getenv(envTestEtcdEndpoints); env != "" {
		var eps []string
		for _, ep := range strings.Split(env, ",") {
			if ep = strings.TrimSpace(ep); ep != "" {
				eps = append(eps, ep)
			}
		}
		return eps
	}
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skipf("no etcd: set %s=host:port to use a running one, or put the etcd binary on PATH (Debian: apt-get install etcd-server)", envTestEtcdEndpoints)
	}
	var lastErr error
	for range 3 { // a free port may be taken between picking and binding
		eps, err := startEtcd(t, bin)
		if err == nil {
			return eps
		}
		lastErr = err
	}
	t.Fatalf("start %s: %v", bin, lastErr)
	return nil
}

// startEtcd runs a single-member etcd on free loopback ports with its data
// in a temporary directory, waits until it answers, and stops it at cleanup.
func startEtcd(t *testing.T, bin string) ([]string, error) {
	dir := t.TempDir() // removed after the cleanup below stops etcd
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	logPath := filepath.Join(dir, "etcd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin,
		"--name", "mqtest",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "mqtest="+peer, "--initial-cluster-state", "new",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	for _, kv := range os.Environ() { // ETCD_* variables would clash with the flags
		if !strings.HasPrefix(kv, "ETCD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = logf.Close()
	}
	died := func() error {
		_ = logf.Close()
		out, _ := os.ReadFile(logPath)
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		return fmt.Errorf("etcd exited (%v):\n%s", waitErr, out)
	}

	endpoint := fmt.Sprintf("127.0.0.1:%d", ports[0])
	nop := clog.NewFromZap(zap.NewNop())
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		p, err := coord.New(ctx, &coord.Config{Endpoints: []string{endpoint}, DialTimeout: time.Second}, coord.WithLogger(nop))
		cancel()
		if err == nil {
			_ = p.Close()
			t.Cleanup(stop)
			return []string{endpoint}, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("etcd at %s does not answer after 30s: %w", endpoint, err)
		}
		select {
		case <-exited:
			return nil, died()
		case <-time.After(50 * time.Millisecond): // poll interval
		}
	}
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
