package coord_test

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ceyewan/gochat/im-infra/coord"
)

const secretPassword = "s3cr3t-Pa55w0rd"

// TestNewFailsFast checks that New reports an unusable etcd promptly, names
// the endpoints and never reveals the password.
func TestNewFailsFast(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name        string
		ctx         context.Context
		cfg         *coord.Config
		maxDuration time.Duration
		wantInError string
	}{
		{
			name:        "UnreachableWithCredentials",
			ctx:         context.Background(),
			cfg:         &coord.Config{Endpoints: []string{"127.0.0.1:1"}, Username: "root", Password: secretPassword, DialTimeout: 500 * time.Millisecond},
			maxDuration: 2 * time.Second,
			wantInError: "127.0.0.1:1",
		},
		{
			name:        "UnreachableWithoutCredentials",
			ctx:         context.Background(),
			cfg:         &coord.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: 500 * time.Millisecond},
			maxDuration: 2 * time.Second,
			wantInError: "127.0.0.1:1",
		},
		{
			name:        "CancelledContext",
			ctx:         cancelled,
			cfg:         &coord.Config{Endpoints: []string{"127.0.0.1:1"}, Password: secretPassword, Username: "root", DialTimeout: 5 * time.Second},
			maxDuration: 2 * time.Second,
			wantInError: "127.0.0.1:1",
		},
		{
			name:        "NoEndpoints",
			ctx:         context.Background(),
			cfg:         &coord.Config{Password: secretPassword},
			maxDuration: time.Second,
			wantInError: "endpoints",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			p, err := coord.New(tc.ctx, tc.cfg)
			elapsed := time.Since(start)
			if err == nil {
				_ = p.Close()
				t.Fatal("New succeeded, want an error")
			}
			t.Logf("New failed after %s: %v", elapsed.Round(time.Millisecond), err)
			if elapsed > tc.maxDuration {
				t.Errorf("New took %s, want at most %s", elapsed, tc.maxDuration)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "coord: ") {
				t.Errorf("error %q lacks the \"coord: \" prefix", msg)
			}
			if !strings.Contains(msg, tc.wantInError) {
				t.Errorf("error %q does not mention %q", msg, tc.wantInError)
			}
			if strings.Contains(msg, secretPassword) {
				t.Errorf("error %q reveals the password", msg)
			}
		})
	}
}

// TestNewConnects checks that New reaches the test etcd with the default
// dial timeout (zero DialTimeout) and stores key k at etcd key "/config/k".
func TestNewConnects(t *testing.T) {
	p, err := coord.New(context.Background(), &coord.Config{Endpoints: etcdEndpoints})
	if err != nil {
		t.Fatalf("New(%v): %v", etcdEndpoints, err)
	}
	defer p.Close()
	key := runPrefix + "/connect/ping"
	if err := p.Config().Set(context.Background(), key, "pong"); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := p.Config().Get(context.Background(), key, &got); err != nil || got != "pong" {
		t.Fatalf("Get = %q, %v; want pong", got, err)
	}

	cli, err := clientv3.New(clientv3.Config{Endpoints: etcdEndpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/config/"+key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "pong" {
		t.Fatalf("etcd key /config/%s = %v, want pong", key, resp.Kvs)
	}
}
