package coord_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

// endpointsEnv names an external etcd (comma-separated host:port list) to
// test against instead of an embedded server, e.g. a Debian etcd-server
// started by CI.
const endpointsEnv = "COORD_TEST_ETCD_ENDPOINTS"

var (
	// etcdEndpoints is the etcd the tests use, set by TestMain.
	etcdEndpoints []string
	// runPrefix makes this run's keys unique, so reruns against a shared
	// etcd do not collide.
	runPrefix = fmt.Sprintf("coordtest-%d-%d", time.Now().UnixNano(), os.Getpid())
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(etcdMain{m})
}

// etcdMain runs the tests between starting and stopping the etcd they use,
// so that goleak checks after the embedded server has shut down.
type etcdMain struct{ m *testing.M }

func (e etcdMain) Run() int {
	if env := os.Getenv(endpointsEnv); env != "" {
		for _, ep := range strings.Split(env, ",") {
			if ep = strings.TrimSpace(ep); ep != "" {
				etcdEndpoints = append(etcdEndpoints, ep)
			}
		}
		fmt.Fprintf(os.Stderr, "coord tests: using external etcd %v, key prefix %s\n", etcdEndpoints, runPrefix)
		defer cleanupKeys()
		return e.m.Run()
	}

	dir, err := os.MkdirTemp("", "coord-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "coord tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	srv, err := startEmbeddedEtcd(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coord tests: start embedded etcd:", err)
		return 1
	}
	defer srv.Close()
	etcdEndpoints = []string{srv.Clients[0].Addr().String()}
	return e.m.Run()
}

// startEmbeddedEtcd starts a single-member etcd on free loopback ports,
// retrying when a port picked was taken meanwhile.
func startEmbeddedEtcd(dir string) (*embed.Etcd, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		cfg := embed.NewConfig()
		cfg.Name = "coordtest"
		cfg.Dir = fmt.Sprintf("%s/member-%d", dir, attempt)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		clientURL, peerURL, err := freeURLs()
		if err != nil {
			return nil, err
		}
		cfg.ListenClientUrls = []url.URL{clientURL}
		cfg.AdvertiseClientUrls = []url.URL{clientURL}
		cfg.ListenPeerUrls = []url.URL{peerURL}
		cfg.AdvertisePeerUrls = []url.URL{peerURL}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
			return e, nil
		case err := <-e.Err():
			e.Close()
			lastErr = err
		case <-time.After(30 * time.Second):
			e.Close()
			lastErr = fmt.Errorf("not ready after 30s")
		}
	}
	return nil, lastErr
}

func freeURLs() (client, peer url.URL, err error) {
	var ports [2]int
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return client, peer, err
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	client = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	peer = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	return client, peer, nil
}

// cleanupKeys removes this run's keys from an external etcd.
func cleanupKeys() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcdEndpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "coord tests: cleanup:", err)
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Delete(ctx, "/config/"+runPrefix+"/", clientv3.WithPrefix()); err != nil {
		fmt.Fprintln(os.Stderr, "coord tests: cleanup:", err)
	}
}
