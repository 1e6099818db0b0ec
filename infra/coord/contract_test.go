package coord_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/coord"
)

type kafkaConfig struct {
	Brokers []string `json:"brokers"`
	Retries int      `json:"retries"`
}

// waitTimeout bounds every wait on a watch channel.
const waitTimeout = 10 * time.Second

// contractCase is one behaviour every Provider must show. base is a key
// prefix unique to the case (and to the test run).
type contractCase struct {
	name string
	run  func(t *testing.T, p coord.Provider, base string)
}

var contractCases = []contractCase{
	{"SetGetStruct", func(t *testing.T, p coord.Provider, base string) {
		ctx := context.Background()
		want := kafkaConfig{Brokers: []string{"a:9092", "b:9092"}, Retries: 3}
		key := base + "/global/kafka"
		must(t, p.Config().Set(ctx, key, want))
		var got kafkaConfig
		must(t, p.Config().Get(ctx, key, &got))
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Get = %+v, want %+v", got, want)
		}
	}},
	{"SetGetRawYAMLString", func(t *testing.T, p coord.Provider, base string) {
		ctx := context.Background()
		yaml := "brokers:\n  - a:9092\n  - b:9092\nretries: 3\n"
		key := base + "/global/kafka.yaml"
		must(t, p.Config().Set(ctx, key, yaml))
		var got string
		must(t, p.Config().Get(ctx, key, &got))
		if got != yaml {
			t.Fatalf("Get = %q, want %q", got, yaml)
		}
	}},
	{"JSONObjectIntoStringIsRaw", func(t *testing.T, p coord.Provider, base string) {
		ctx := context.Background()
		value := kafkaConfig{Brokers: []string{"a:9092"}, Retries: 1}
		raw, _ := json.Marshal(value)
		key := base + "/global/kafka"
		must(t, p.Config().Set(ctx, key, value))
		var got string
		must(t, p.Config().Get(ctx, key, &got))
		if got != string(raw) {
			t.Fatalf("Get = %q, want raw %q", got, raw)
		}
	}},
	{"GetMissingIsNotFound", func(t *testing.T, p coord.Provider, base string) {
		var got kafkaConfig
		err := p.Config().Get(context.Background(), base+"/missing", &got)
		if !errors.Is(err, coord.ErrNotFound) {
			t.Fatalf("Get missing: err = %v, want ErrNotFound", err)
		}
		assertPrefixed(t, err)
	}},
	{"GetNonPointerFails", func(t *testing.T, p coord.Provider, base string) {
		ctx := context.Background()
		key := base + "/k"
		must(t, p.Config().Set(ctx, key, kafkaConfig{Retries: 1}))
		for _, target := range []any{kafkaConfig{}, nil, (*kafkaConfig)(nil)} {
			err := p.Config().Get(ctx, key, target)
			if err == nil || errors.Is(err, coord.ErrNotFound) {
				t.Fatalf("Get into %T: err = %v, want a target error", target, err)
			}
			assertPrefixed(t, err)
		}
	}},
	{"Delete", func(t *testing.T, p coord.Provider, base string) {
		ctx := context.Background()
		key := base + "/k"
		must(t, p.Config().Set(ctx, key, "v"))
		must(t, p.Config().Delete(ctx, key))
		var got string
		if err := p.Config().Get(ctx, key, &got); !errors.Is(err, coord.ErrNotFound) {
			t.Fatalf("Get after Delete: err = %v, want ErrNotFound", err)
		}
		if err := p.Config().Delete(ctx, key); !errors.Is(err, coord.ErrNotFound) {
			t.Fatalf("Delete twice: err = %v, want ErrNotFound", err)
		}
	}},
	{"ListPrefix", func(t *testing.T, p coord.Provider, base string) {
		ctx := context.Background()
		for _, k := range []string{"dev/global/kafka", "dev/im-repo/db", "dev", "devx/other", "prod/global/kafka"} {
			must(t, p.Config().Set(ctx, base+"/"+k, "v"))
		}
		for _, tc := range []struct {
			prefix string
			want   []string
		}{
			{"dev", []string{"dev", "dev/global/kafka", "dev/im-repo/db"}},
			{"dev/", []string{"dev", "dev/global/kafka", "dev/im-repo/db"}},
			{"dev/global", []string{"dev/global/kafka"}},
			{"prod", []string{"prod/global/kafka"}},
			{"none", nil},
			{"", []string{"dev", "dev/global/kafka", "dev/im-repo/db", "devx/other", "prod/global/kafka"}},
		} {
			prefix := base
			if tc.prefix != "" {
				prefix += "/" + tc.prefix
			}
			got, err := p.Config().List(ctx, prefix)
			must(t, err)
			var want []string
			for _, k := range tc.want {
				want = append(want, base+"/"+k)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("List(%q) = %q, want %q", tc.prefix, got, want)
			}
		}
	}},
	{"WatchPutThenDelete", func(t *testing.T, p coord.Provider, base string) {
		ctx := context.Background()
		key := base + "/watched"
		w, err := p.Config().Watch(ctx, key, &kafkaConfig{})
		must(t, err)
		defer w.Close()
		want := kafkaConfig{Brokers: []string{"a:9092"}, Retries: 2}
		must(t, p.Config().Set(ctx, base+"/unwatched", "x"))
		must(t, p.Config().Set(ctx, key, want))
		ev := nextEvent(t, w)
		if ev.Type != coord.EventTypePut || ev.Key != key || !reflect.DeepEqual(ev.Value, want) {
			t.Fatalf("first event = %+v, want PUT %s %+v", ev, key, want)
		}
		must(t, p.Config().Delete(ctx, key))
		ev = nextEvent(t, w)
		if ev.Type != coord.EventTypeDelete || ev.Key != key {
			t.Fatalf("second event = %+v, want DELETE %s", ev, key)
		}
		w.Close()
		waitClosed(t, w)
	}},
	{"WatchEndsWithContext", func(t *testing.T, p coord.Provider, base string) {
		ctx, cancel := context.WithCancel(context.Background())
		w, err := p.Config().Watch(ctx, base+"/watched", new(string))
		must(t, err)
		defer w.Close()
		cancel()
		waitClosed(t, w)
	}},
	{"WatchEndsWithProviderClose", func(t *testing.T, p coord.Provider, base string) {
		w, err := p.Config().Watch(context.Background(), base+"/watched", new(string))
		must(t, err)
		defer w.Close()
		must(t, p.Close())
		waitClosed(t, w)
	}},
	{"ClosedProvider", func(t *testing.T, p coord.Provider, base string) {
		ctx := context.Background()
		key := base + "/k"
		must(t, p.Config().Set(ctx, key, "v"))
		must(t, p.Close())
		var s string
		_, watchErr := p.Config().Watch(ctx, key, &s)
		_, listErr := p.Config().List(ctx, base)
		for name, err := range map[string]error{
			"Get":    p.Config().Get(ctx, key, &s),
			"Set":    p.Config().Set(ctx, key, "w"),
			"Delete": p.Config().Delete(ctx, key),
			"List":   listErr,
			"Watch":  watchErr,
		} {
			if !errors.Is(err, coord.ErrClosed) {
				t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
			}
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}},
}

// TestProviderContract runs every contract case against the memory provider
// and against the etcd provider.
func TestProviderContract(t *testing.T) {
	providers := []struct {
		name string
		new  func(t *testing.T) coord.Provider
	}{
		{"memory", func(*testing.T) coord.Provider { return coord.NewMemoryProvider() }},
		{"etcd", newEtcdProvider},
	}
	for _, prov := range providers {
		t.Run(prov.name, func(t *testing.T) {
			for _, tc := range contractCases {
				t.Run(tc.name, func(t *testing.T) {
					p := prov.new(t)
					t.Cleanup(func() { _ = p.Close() })
					tc.run(t, p, runPrefix+"/"+prov.name+"/"+tc.name)
				})
			}
		})
	}
}

func newEtcdProvider(t *testing.T) coord.Provider {
	t.Helper()
	cfg := &coord.Config{Endpoints: etcdEndpoints, DialTimeout: 5 * time.Second}
	p, err := coord.New(context.Background(), cfg, coord.WithLogger(clog.NewFromZap(zap.NewNop())))
	if err != nil {
		t.Fatalf("coord.New(%v): %v", etcdEndpoints, err)
	}
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func assertPrefixed(t *testing.T, err error) {
	t.Helper()
	if !strings.HasPrefix(err.Error(), "coord: ") {
		t.Errorf("error %q lacks the \"coord: \" prefix", err)
	}
}

func nextEvent(t *testing.T, w coord.Watcher[any]) coord.ConfigEvent[any] {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case ev, ok := <-w.Chan():
		if !ok {
			t.Fatal("watch channel closed while waiting for an event")
		}
		return ev
	case <-timer.C:
		t.Fatalf("no watch event within %s", waitTimeout)
	}
	panic("unreachable")
}

// waitClosed drains the watch channel until it is closed.
func waitClosed(t *testing.T, w coord.Watcher[any]) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-w.Chan():
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("watch channel not closed within %s", waitTimeout)
		}
	}
}
