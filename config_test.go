package mq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/coord"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// White-box tests of the configuration contract of docs/config.md: the
// defaults and the merge need the resolved struct.

const (
	cfgEnv      = "dev"
	cfgService  = "im-test"
	cfgPassword = "s3cr3t-Pa55"
	// cfgDefaults is ConfigError.Key for a field no document sets.
	cfgDefaults = "(defaults)"
)

// cfgKeys are the shared and the service keys of cfgEnv and cfgService.
func cfgKeys() (global, service string) { return configKeys(cfgEnv, cfgService) }

func cfgLogger() (clog.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return clog.NewFromZap(zap.New(core)), logs
}

// cfgCenter returns an in-memory config center holding docs, stored as
// they are (text), as an operator writes them.
func cfgCenter(t *testing.T, docs map[string]string) coord.Provider {
	t.Helper()
	p := coord.NewMemoryProvider()
	t.Cleanup(func() { _ = p.Close() })
	for k, v := range docs {
		if err := p.Config().Set(context.Background(), k, v); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// loadDocs stores the shared and the service documents ("" = absent) and
// loads the configuration as the constructors do.
func loadDocs(t *testing.T, global, service string) (*config, *observer.ObservedLogs, error) {
	t.Helper()
	gk, sk := cfgKeys()
	docs := map[string]string{}
	if global != "" {
		docs[gk] = global
	}
	if service != "" {
		docs[sk] = service
	}
	logger, logs := cfgLogger()
	cfg, err := loadConfig(t.Context(), cfgCenter(t, docs).Config(), cfgEnv, cfgService, logger)
	return cfg, logs, err
}

func mustLoad(t *testing.T, global, service string) (*config, *observer.ObservedLogs) {
	t.Helper()
	cfg, logs, err := loadDocs(t, global, service)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return cfg, logs
}

func assertConfig(t *testing.T, got *config, want config) {
	t.Helper()
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("config\n got  %+v\n want %+v", *got, want)
	}
}

func warnings(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.FilterMessage("mq: unknown config field ignored").All() {
		m := e.ContextMap()
		out = append(out, fmt.Sprintf("%s %s %s", e.Level, m["key"], m["field"]))
	}
	sort.Strings(out)
	return out
}

// TestConfigDefaults checks every default of docs/config.md, written out
// here rather than taken from defaultConfig.
func TestConfigDefaults(t *testing.T) {
	want := config{
		Brokers:     []string{"kafka-1:9092"},
		DialTimeout: duration(10 * time.Second),
		Producer: producerConfig{
			Acks:               "all",
			Idempotent:         true,
			Compression:        "snappy",
			Linger:             0,
			BatchMaxBytes:      1000012,
			MaxBufferedRecords: 10000,
			MaxMessageBytes:    1048576,
			DeliveryTimeout:    duration(2 * time.Minute),
			CloseTimeout:       duration(30 * time.Second),
		},
		Consumer: consumerConfig{
			OffsetReset:       "earliest",
			CommitInterval:    duration(time.Second),
			SessionTimeout:    duration(45 * time.Second),
			RebalanceTimeout:  duration(time.Minute),
			HeartbeatInterval: duration(3 * time.Second),
			Concurrency:       64,
			MaxPollRecords:    10000,
			PartitionBuffer:   2000,
			FetchMaxBytes:     52428800,
			CloseTimeout:      duration(30 * time.Second),
		},
	}
	tests := []struct {
		name    string
		global  string
		service string
	}{
		{name: "JSON shared document", global: `{"brokers": ["kafka-1:9092"]}`},
		{name: "YAML shared document", global: "brokers:\n  - kafka-1:9092\n"},
		{name: "JSON service document", service: `{"brokers": ["kafka-1:9092"]}`},
		{name: "YAML service document", service: "brokers: [kafka-1:9092]"},
		{name: "empty objects", global: `{"brokers": ["kafka-1:9092"], "security": {}, "producer": {}}`, service: "consumer: {}"},
		{name: "empty service document", global: `{"brokers": ["kafka-1:9092"]}`, service: " \n"},
		{
			name:   "null fields keep their defaults",
			global: `{"brokers": ["kafka-1:9092"], "client_id": null, "dial_timeout": null, "producer": {"acks": null, "linger": null}, "consumer": null}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, logs := mustLoad(t, tt.global, tt.service)
			assertConfig(t, cfg, want)
			if w := warnings(logs); len(w) > 0 {
				t.Errorf("unexpected warnings %v", w)
			}
		})
	}
}

// TestConfigMerge checks that the service document overrides the shared one
// field by field, over the defaults.
func TestConfigMerge(t *testing.T) {
	tests := []struct {
		name    string
		global  string
		service string
		want    func(c *config) // applied to defaultConfig()
	}{
		{
			name:    "service overrides a shared field, keeps the others",
			global:  `{"brokers": ["g:9092"], "client_id": "shared-id", "dial_timeout": "3s"}`,
			service: `{"client_id": "svc-id"}`,
			want: func(c *config) {
				c.Brokers, c.ClientID, c.DialTimeout = []string{"g:9092"}, "svc-id", duration(3*time.Second)
			},
		},
		{
			name:    "nested objects merge field by field",
			global:  `{"brokers": ["g:9092"], "producer": {"linger": "5ms", "acks": "leader", "idempotent": false}}`,
			service: `{"producer": {"acks": "none"}}`,
			want: func(c *config) {
				c.Brokers = []string{"g:9092"}
				c.Producer.Linger, c.Producer.Acks, c.Producer.Idempotent = duration(5*time.Millisecond), "none", false
			},
		},
		{
			name: "deeply nested objects merge field by field",
			global: `{"brokers": ["g:9093"], "security": {"tls": {"enabled": true},
				"sasl": {"mechanism": "scram-sha-256", "username": "u", "password": "p"}}}`,
			service: "security:\n  tls:\n    server_name: kafka.internal\n  sasl:\n    username: svc-user\n",
			want: func(c *config) {
				c.Brokers = []string{"g:9093"}
				c.Security.TLS = tlsConfig{Enabled: true, ServerName: "kafka.internal"}
				c.Security.SASL = saslConfig{Mechanism: "scram-sha-256", Username: "svc-user", Password: "p"}
			},
		},
		{
			name:    "lists are replaced whole",
			global:  `{"brokers": ["a:9092", "b:9092"]}`,
			service: `{"brokers": ["c:9092"]}`,
			want:    func(c *config) { c.Brokers = []string{"c:9092"} },
		},
		{
			name:    "service null unsets a shared field",
			global:  `{"brokers": ["g:9092"], "producer": {"linger": "5ms"}, "consumer": {"concurrency": 8, "offset_reset": "latest"}}`,
			service: `{"producer": {"linger": null}, "consumer": null}`,
			want:    func(c *config) { c.Brokers = []string{"g:9092"} },
		},
		{
			name:    "reserved field set to null is accepted",
			global:  `{"brokers": ["g:9092"], "producer": {"retry": {"max": 3}}}`,
			service: `{"producer": {"retry": null}}`,
			want: func(c *config) {
				c.Brokers = []string{"g:9092"}
				c.Producer.Retry = json.RawMessage("null")
			},
		},
		{
			name:    "only the service document",
			service: "brokers: [s:9092]\nconsumer:\n  concurrency: 8\n  session_timeout: 10s\n  heartbeat_interval: 1s\n",
			want: func(c *config) {
				c.Brokers = []string{"s:9092"}
				c.Consumer.Concurrency = 8
				c.Consumer.SessionTimeout, c.Consumer.HeartbeatInterval = duration(10*time.Second), duration(time.Second)
			},
		},
		{
			name:    "YAML shared, JSON service",
			global:  "brokers: [g:9092]\nproducer:\n  compression: zstd\n  batch_max_bytes: 2048\n",
			service: `{"producer": {"compression": "lz4"}, "consumer": {"offset_reset": "latest"}}`,
			want: func(c *config) {
				c.Brokers = []string{"g:9092"}
				c.Producer.Compression, c.Producer.BatchMaxBytes = "lz4", 2048
				c.Consumer.OffsetReset = "latest"
			},
		},
		{
			name:    "a cross-field rule holds on the merged values",
			global:  `{"brokers": ["g:9092"], "consumer": {"heartbeat_interval": "10s"}}`,
			service: `{"consumer": {"session_timeout": "20s"}}`,
			want: func(c *config) {
				c.Brokers = []string{"g:9092"}
				c.Consumer.HeartbeatInterval, c.Consumer.SessionTimeout = duration(10*time.Second), duration(20*time.Second)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := mustLoad(t, tt.global, tt.service)
			want := defaultConfig()
			tt.want(&want)
			assertConfig(t, cfg, want)
		})
	}
}

// TestConfigDocsExamples checks that the examples of docs/config.md parse,
// and that YAML and JSON spellings of one document give the same config.
func TestConfigDocsExamples(t *testing.T) {
	md, err := os.ReadFile("docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string][]string{}
	for _, m := range regexp.MustCompile("(?s)```(yaml|json)\n(.*?)```").FindAllStringSubmatch(string(md), -1) {
		blocks[m[1]] = append(blocks[m[1]], m[2])
	}
	if len(blocks["yaml"]) != 2 || len(blocks["json"]) != 1 {
		t.Fatalf("docs/config.md: want 2 yaml and 1 json examples, got %d and %d", len(blocks["yaml"]), len(blocks["json"]))
	}
	full, svc, minimal := blocks["yaml"][0], blocks["yaml"][1], blocks["json"][0]

	fullJSON := `{
		"brokers": ["kafka-1:9093", "kafka-2:9093", "kafka-3:9093"],
		"dial_timeout": "10s",
		"security": {
			"tls": {"enabled": true, "ca_file": "/etc/kafka/ca.pem", "cert_file": "", "key_file": "", "server_name": "", "insecure_skip_verify": false},
			"sasl": {"mechanism": "scram-sha-512", "username": "gochat", "password": "change-me"}
		},
		"producer": {"acks": "all", "idempotent": true, "compression": "snappy", "linger": "5ms", "batch_max_bytes": 1000012,
			"max_buffered_records": 10000, "max_message_bytes": 1048576, "delivery_timeout": "2m", "close_timeout": "30s"},
		"consumer": {"offset_reset": "earliest", "commit_interval": "1s", "session_timeout": "45s", "rebalance_timeout": "1m",
			"heartbeat_interval": "3s", "concurrency": 64, "max_poll_records": 10000, "partition_buffer": 2000,
			"fetch_max_bytes": 52428800, "close_timeout": "30s"}
	}`
	wantFull := defaultConfig()
	wantFull.Brokers = []string{"kafka-1:9093", "kafka-2:9093", "kafka-3:9093"}
	wantFull.Security = securityConfig{
		TLS:  tlsConfig{Enabled: true, CAFile: "/etc/kafka/ca.pem"},
		SASL: saslConfig{Mechanism: "scram-sha-512", Username: "gochat", Password: "change-me"},
	}
	wantFull.Producer.Linger = duration(5 * time.Millisecond)
	wantSvc := wantFull
	wantSvc.ClientID = "im-logic-7"
	wantSvc.Consumer.Concurrency, wantSvc.Consumer.OffsetReset = 16, "latest"
	wantMinimal := defaultConfig()
	wantMinimal.Brokers = []string{"localhost:9092"}

	tests := []struct {
		name    string
		global  string
		service string
		want    config
	}{
		{name: "full YAML example", global: full, want: wantFull},
		{name: "full example as JSON", global: fullJSON, want: wantFull},
		{name: "service example over the full one", global: full, service: svc, want: wantSvc},
		{name: "minimal JSON example", global: minimal, want: wantMinimal},
		{name: "minimal JSON example as service document", service: minimal, want: wantMinimal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, logs := mustLoad(t, tt.global, tt.service)
			assertConfig(t, cfg, tt.want)
			if w := warnings(logs); len(w) > 0 {
				t.Errorf("unexpected warnings %v", w)
			}
		})
	}
}

// TestConfigClientIDDefaultsToServiceName goes through prepare, as the
// constructors do.
func TestConfigClientIDDefaultsToServiceName(t *testing.T) {
	gk, sk := cfgKeys()
	tests := []struct {
		name string
		docs map[string]string
		want string
	}{
		{name: "no client_id", docs: map[string]string{gk: `{"brokers": ["k:9092"]}`}, want: cfgService},
		{name: "empty client_id", docs: map[string]string{gk: `{"brokers": ["k:9092"], "client_id": ""}`}, want: cfgService},
		{name: "shared client_id", docs: map[string]string{gk: `{"brokers": ["k:9092"], "client_id": "gochat"}`}, want: "gochat"},
		{
			name: "service client_id",
			docs: map[string]string{gk: `{"brokers": ["k:9092"], "client_id": "gochat"}`, sk: "client_id: im-test-1"},
			want: "im-test-1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, _ := cfgLogger()
			st, err := prepare(t.Context(), cfgService, []Option{WithCoordProvider(cfgCenter(t, tt.docs)), WithEnv(cfgEnv), WithLogger(logger)})
			cfg := st.cfg
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ClientID != tt.want {
				t.Errorf("client_id = %q, want %q", cfg.ClientID, tt.want)
			}
		})
	}
}

// TestConfigEnvSelection checks which environment's documents are read:
// WithEnv, else $GOCHAT_ENV, else "dev".
func TestConfigEnvSelection(t *testing.T) {
	doc := `{"brokers": ["k:9092"], "client_id": "%s"}`
	docs := map[string]string{
		"dev/global/kafka":     fmt.Sprintf(doc, "from-dev"),
		"staging/global/kafka": fmt.Sprintf(doc, "from-staging"),
		"prod/global/kafka":    fmt.Sprintf(doc, "from-prod"),
	}
	tests := []struct {
		name    string
		giveEnv string   // $GOCHAT_ENV
		opts    []Option // besides the provider and logger
		want    string   // client_id read, or
		wantErr error
	}{
		{name: "default dev", want: "from-dev"},
		{name: "GOCHAT_ENV", giveEnv: "staging", want: "from-staging"},
		{name: "WithEnv overrides GOCHAT_ENV", giveEnv: "staging", opts: []Option{WithEnv("prod")}, want: "from-prod"},
		{name: "environment without documents", opts: []Option{WithEnv("qa")}, wantErr: ErrConfigNotFound},
		{name: "empty WithEnv", opts: []Option{WithEnv("")}, wantErr: ErrInvalidArgument},
		{name: "WithEnv with a slash", opts: []Option{WithEnv("prod/x")}, wantErr: ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvEnvironment, tt.giveEnv)
			logger, _ := cfgLogger()
			opts := append([]Option{WithCoordProvider(cfgCenter(t, docs)), WithLogger(logger)}, tt.opts...)
			st, err := prepare(t.Context(), cfgService, opts)
			cfg := st.cfg
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ClientID != tt.want {
				t.Errorf("client_id = %q, want %q", cfg.ClientID, tt.want)
			}
		})
	}
}

// TestConfigInvalid checks each way a document can be wrong: the error
// matches ErrInvalidConfig, and names the document at fault and the field.
func TestConfigInvalid(t *testing.T) {
	gk, sk := cfgKeys()
	const ok = `{"brokers": ["k:9092"]}`
	tests := []struct {
		name       string
		global     string
		service    string
		wantKey    string
		wantField  string
		wantReason string
	}{
		{name: "no brokers anywhere", global: `{"client_id": "x"}`, wantKey: cfgDefaults, wantField: "brokers", wantReason: "no brokers"},
		{name: "empty broker list", global: ok, service: `{"brokers": []}`, wantKey: sk, wantField: "brokers", wantReason: "no brokers"},
		{name: "broker without port", global: ok, service: `{"brokers": ["kafka-1"]}`, wantKey: sk, wantField: "brokers[0]", wantReason: "want host:port"},
		{name: "broker port out of range", global: `{"brokers": ["k:9092", "k:99999"]}`, wantKey: gk, wantField: "brokers[1]", wantReason: "port"},
		{name: "broker port not a number", service: "brokers: ['k:http']", wantKey: sk, wantField: "brokers[0]", wantReason: "port"},
		{name: "bad acks", global: ok, service: `producer: {acks: "1"}`, wantKey: sk, wantField: "producer.acks", wantReason: "not one of all, leader, none"},
		{name: "bad compression", global: `{"brokers": ["k:9092"], "producer": {"compression": "brotli"}}`, wantKey: gk, wantField: "producer.compression", wantReason: "not one of"},
		{name: "bad offset_reset", global: ok, service: `{"consumer": {"offset_reset": "newest"}}`, wantKey: sk, wantField: "consumer.offset_reset", wantReason: "not one of earliest, latest"},
		{name: "bad sasl mechanism", global: ok, service: `{"security": {"sasl": {"mechanism": "gssapi", "username": "u", "password": "p"}}}`, wantKey: sk, wantField: "security.sasl.mechanism", wantReason: "not one of"},
		{name: "sasl without password", global: ok, service: `{"security": {"sasl": {"mechanism": "plain", "username": "u"}}}`, wantKey: sk, wantField: "security.sasl", wantReason: "needs a username and a password"},
		{name: "tls cert without key", global: `{"brokers": ["k:9092"], "security": {"tls": {"enabled": true, "cert_file": "c.pem"}}}`, wantKey: gk, wantField: "security.tls", wantReason: "go together"},
		{name: "negative duration", global: ok, service: `{"producer": {"linger": "-5ms"}}`, wantKey: sk, wantField: "producer.linger", wantReason: "negative duration"},
		{name: "absurd duration", global: ok, service: `{"producer": {"delivery_timeout": "8760h"}}`, wantKey: sk, wantField: "producer.delivery_timeout", wantReason: "above the maximum"},
		{name: "absurd dial_timeout", global: `{"brokers": ["k:9092"], "dial_timeout": "1h"}`, wantKey: gk, wantField: "dial_timeout", wantReason: "above the maximum"},
		{name: "duration below minimum", global: ok, service: `{"consumer": {"commit_interval": "1ms"}}`, wantKey: sk, wantField: "consumer.commit_interval", wantReason: "below the minimum"},
		{name: "zero duration", global: ok, service: `{"dial_timeout": "0s"}`, wantKey: sk, wantField: "dial_timeout", wantReason: "below the minimum"},
		{name: "duration given as a number", global: ok, service: `{"consumer": {"commit_interval": 1000}}`, wantKey: sk, wantField: "consumer.commit_interval", wantReason: "want a duration string"},
		{name: "duration not parsable", global: ok, service: "consumer:\n  session_timeout: 5 seconds\n", wantKey: sk, wantField: "consumer.session_timeout", wantReason: "want a duration string"},
		{name: "integer given as a string", global: ok, service: `{"consumer": {"concurrency": "64"}}`, wantKey: sk, wantField: "consumer.concurrency", wantReason: "want an integer"},
		{name: "integer given as a fraction", global: ok, service: `{"producer": {"batch_max_bytes": 1.5}}`, wantKey: sk, wantField: "producer.batch_max_bytes", wantReason: "want an integer"},
		{name: "bool given as a string", global: ok, service: `{"producer": {"idempotent": "false"}}`, wantKey: sk, wantField: "producer.idempotent", wantReason: "want true or false"},
		{name: "list given as a string", service: `{"brokers": "k:9092"}`, wantKey: sk, wantField: "brokers", wantReason: "want a list"},
		{name: "object given as a string", global: ok, service: "producer: fast", wantKey: sk, wantField: "producer", wantReason: "want an object"},
		{name: "password given as a number", global: ok, service: `{"security": {"sasl": {"password": 12345}}}`, wantKey: sk, wantField: "security.sasl.password", wantReason: "want a string"},
		{name: "type error in shared document even where service overrides it", global: `{"brokers": ["k:9092"], "consumer": {"concurrency": "64"}}`, service: `{"consumer": {"concurrency": 8}}`, wantKey: gk, wantField: "consumer.concurrency", wantReason: "want an integer"},
		{name: "zero concurrency", global: ok, service: `{"consumer": {"concurrency": 0}}`, wantKey: sk, wantField: "consumer.concurrency", wantReason: "outside [1, 100000]"},
		{name: "negative buffer", global: `{"brokers": ["k:9092"], "consumer": {"partition_buffer": -1}}`, wantKey: gk, wantField: "consumer.partition_buffer", wantReason: "outside"},
		{name: "too large fetch", global: ok, service: `{"consumer": {"fetch_max_bytes": 2147483648}}`, wantKey: sk, wantField: "consumer.fetch_max_bytes", wantReason: "outside"},
		{name: "too small batch", global: ok, service: `{"producer": {"batch_max_bytes": 1023}}`, wantKey: sk, wantField: "producer.batch_max_bytes", wantReason: "outside"},
		{name: "idempotent with acks leader", global: ok, service: `{"producer": {"acks": "leader", "idempotent": true}}`, wantKey: sk, wantField: "producer.idempotent", wantReason: `needs producer.acks "all"`},
		{name: "acks leader with default idempotence", global: ok, service: `{"producer": {"acks": "leader"}}`, wantKey: sk, wantField: "producer.idempotent", wantReason: `needs producer.acks "all"`},
		{name: "heartbeat equal to session timeout", global: ok, service: `{"consumer": {"heartbeat_interval": "45s"}}`, wantKey: sk, wantField: "consumer.heartbeat_interval", wantReason: "must be below consumer.session_timeout"},
		{name: "heartbeat above merged session timeout", global: `{"brokers": ["k:9092"], "consumer": {"heartbeat_interval": "10s"}}`, service: `{"consumer": {"session_timeout": "5s"}}`, wantKey: sk, wantField: "consumer.heartbeat_interval", wantReason: "must be below"},
		{name: "reserved producer.retry", global: ok, service: `{"producer": {"retry": {"max": 3}}}`, wantKey: sk, wantField: "producer.retry", wantReason: "reserved"},
		{name: "reserved consumer.retry", global: `{"brokers": ["k:9092"], "consumer": {"retry": 3}}`, wantKey: gk, wantField: "consumer.retry", wantReason: "reserved"},
		{name: "reserved consumer.dead_letter", global: ok, service: "consumer:\n  dead_letter:\n    topic: dlq\n", wantKey: sk, wantField: "consumer.dead_letter", wantReason: "reserved"},
		{name: "malformed JSON", global: ok, service: `{"brokers": ["k:9092"],`, wantKey: sk, wantReason: "malformed document"},
		{name: "malformed YAML", global: "brokers: [k:9092\nconsumer: {", service: ok, wantKey: gk, wantReason: "malformed document"},
		{name: "bad YAML indentation", global: ok, service: "producer:\n  acks: all\n linger: 5ms\n", wantKey: sk, wantReason: "malformed document"},
		{name: "JSON array document", global: ok, service: `["k:9092"]`, wantKey: sk, wantReason: "want a JSON or YAML object"},
		{name: "number document", global: "9092", service: ok, wantKey: gk, wantReason: "want a JSON or YAML object"},
		{name: "scalar document", global: ok, service: "kafka-1:9092", wantKey: sk, wantReason: "want a JSON or YAML object"},
		{name: "JSON string document", global: ok, service: `"brokers"`, wantKey: sk, wantReason: "want a JSON or YAML object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := loadDocs(t, tt.global, tt.service)
			if err == nil {
				t.Fatalf("no error; config %+v", *cfg)
			}
			if !errors.Is(err, ErrInvalidConfig) || errors.Is(err, ErrConfigNotFound) {
				t.Errorf("err = %v, want ErrInvalidConfig", err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %#v, want a *ConfigError", err)
			}
			if ce.Key != tt.wantKey || ce.Field != tt.wantField {
				t.Errorf("key, field = %q, %q, want %q, %q (%v)", ce.Key, ce.Field, tt.wantKey, tt.wantField, err)
			}
			if !strings.Contains(ce.Reason, tt.wantReason) {
				t.Errorf("reason %q does not say %q", ce.Reason, tt.wantReason)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantKey) || !strings.Contains(msg, tt.wantField) {
				t.Errorf("message %q does not name key %q and field %q", msg, tt.wantKey, tt.wantField)
			}
		})
	}
}

// TestConfigNotFound: with neither document, the error names both keys.
func TestConfigNotFound(t *testing.T) {
	gk, sk := cfgKeys()
	tests := []struct {
		name string
		docs map[string]string
	}{
		{name: "empty config center"},
		{name: "documents of another environment", docs: map[string]string{"prod/global/kafka": `{"brokers": ["k:9092"]}`, "prod/" + cfgService + "/kafka": "{}"}},
		{name: "document of another service", docs: map[string]string{cfgEnv + "/im-other/kafka": `{"brokers": ["k:9092"]}`}},
		{name: "document of another component", docs: map[string]string{cfgEnv + "/global/redis": `{"addr": "r:6379"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, _ := cfgLogger()
			_, err := loadConfig(t.Context(), cfgCenter(t, tt.docs).Config(), cfgEnv, cfgService, logger)
			if !errors.Is(err, ErrConfigNotFound) || errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrConfigNotFound", err)
			}
			if msg := err.Error(); !strings.Contains(msg, gk) || !strings.Contains(msg, sk) {
				t.Errorf("message %q does not name %q and %q", msg, gk, sk)
			}
		})
	}
}

// TestConfigUnknownFieldsWarn: unknown fields are ignored, each logged at
// warn level with the key of its document and its path.
func TestConfigUnknownFieldsWarn(t *testing.T) {
	gk, sk := cfgKeys()
	tests := []struct {
		name    string
		global  string
		service string
		want    []string // "level key field", sorted
	}{
		{name: "none", global: `{"brokers": ["k:9092"], "producer": {"acks": "all"}}`},
		{name: "top-level typo", global: `{"brokers": ["k:9092"]}`, service: `{"brokerz": ["x:1"]}`, want: []string{"warn " + sk + " brokerz"}},
		{
			name:   "nested typos",
			global: "brokers: [k:9092]\nproducer:\n  lingr: 5ms\nconsumer:\n  concurency: 3\nsecurity:\n  sasl:\n    passwd: x\n",
			want:   []string{"warn " + gk + " consumer.concurency", "warn " + gk + " producer.lingr", "warn " + gk + " security.sasl.passwd"},
		},
		{
			name:    "in both documents",
			global:  `{"brokers": ["k:9092"], "kafka": {"brokers": ["x:1"]}}`,
			service: `{"consumer": {"group": "g"}}`,
			want:    []string{"warn " + gk + " kafka", "warn " + sk + " consumer.group"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, logs := mustLoad(t, tt.global, tt.service)
			if got := warnings(logs); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("warnings = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestConfigSecretsNeverLeak: a SASL password never appears in an error,
// a log entry, logFields or a printed config.
func TestConfigSecretsNeverLeak(t *testing.T) {
	gk, _ := cfgKeys()
	sasl := fmt.Sprintf(`"sasl": {"mechanism": "plain", "username": "u", "password": %q}`, cfgPassword)
	tests := []struct {
		name    string
		global  string
		service string
		valid   bool
	}{
		{name: "valid JSON", global: `{"brokers": ["k:9092"], "security": {` + sasl + `}}`, valid: true},
		{name: "valid YAML", global: `{"brokers": ["k:9092"]}`, service: "security:\n  sasl:\n    mechanism: scram-sha-512\n    username: u\n    password: " + cfgPassword + "\n", valid: true},
		{name: "bad mechanism", global: `{"brokers": ["k:9092"], "security": {"sasl": {"mechanism": "gssapi", "password": "` + cfgPassword + `"}}}`},
		{name: "no username", global: `{"brokers": ["k:9092"], "security": {"sasl": {"mechanism": "plain", "password": "` + cfgPassword + `"}}}`},
		{name: "other field invalid", global: `{"brokers": ["k:9092"], "producer": {"acks": "one"}, "security": {` + sasl + `}}`},
		{name: "username of the wrong type", global: `{"brokers": ["k:9092"], "security": {"sasl": {"username": 5, "password": "` + cfgPassword + `"}}}`},
		{name: "malformed JSON", global: `{"brokers": ["k:9092"], "security": {` + sasl},
		{name: "malformed YAML", service: "security:\n  sasl:\n    password: " + cfgPassword + "\n  - " + cfgPassword + "\n"},
		{name: "password in an unknown field", global: `{"brokers": ["k:9092"], "security": {"sasl": {"passwd": "` + cfgPassword + `"}}}`, valid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, logs, err := loadDocs(t, tt.global, tt.service)
			var texts []string
			if err != nil {
				texts = append(texts, err.Error(), fmt.Sprintf("%+v %#v", err, err))
			}
			if tt.valid != (err == nil) {
				t.Fatalf("err = %v, want valid %v", err, tt.valid)
			}
			if cfg != nil {
				if cfg.Security.SASL.Mechanism != "" && string(cfg.Security.SASL.Password) != cfgPassword {
					t.Fatalf("password not read: %q", string(cfg.Security.SASL.Password))
				}
				js, _ := json.Marshal(cfg)
				texts = append(texts, fmt.Sprintf("%v|%+v|%#v|%s|%v", *cfg, *cfg, *cfg, cfg.Security.SASL.Password, cfg), string(js))
				logger, fieldLogs := cfgLogger()
				logger.Info("config", cfg.logFields()...)
				for _, e := range fieldLogs.All() {
					texts = append(texts, fmt.Sprint(e.ContextMap()))
				}
			}
			for _, e := range logs.All() {
				texts = append(texts, e.Message, fmt.Sprint(e.ContextMap()))
			}
			for _, s := range texts {
				if strings.Contains(s, cfgPassword) {
					t.Errorf("password leaked in %q", s)
				}
			}
			if tt.name == "password in an unknown field" && len(warnings(logs)) != 1 {
				t.Errorf("want one warning for %s security.sasl.passwd, got %v", gk, warnings(logs))
			}
		})
	}
}

// TestConfigConstructorErrors checks the errors NewProducer and NewConsumer
// return before any broker is dialled.
func TestConfigConstructorErrors(t *testing.T) {
	gk, sk := cfgKeys()
	good := map[string]string{gk: `{"brokers": ["k:9092"]}`}
	type build func(ctx context.Context, opts ...Option) (any, error)
	producer := func(service string) build {
		return func(ctx context.Context, opts ...Option) (any, error) { return NewProducer(ctx, service, opts...) }
	}
	consumer := func(service, group string) build {
		return func(ctx context.Context, opts ...Option) (any, error) {
			return NewConsumer(ctx, service, group, opts...)
		}
	}
	tests := []struct {
		name     string
		build    build
		docs     map[string]string
		opts     []Option // replace the memory provider when set
		wantIs   error
		wantKey  string // ConfigError.Key when set
		wantText string
	}{
		{name: "producer, nil provider", build: producer(cfgService), opts: []Option{WithCoordProvider(nil)}, wantIs: ErrNoCoordProvider, wantText: "WithCoordProvider(nil)"},
		{name: "consumer, nil provider", build: consumer(cfgService, "g"), opts: []Option{WithCoordProvider(nil)}, wantIs: ErrNoCoordProvider, wantText: "WithCoordProvider(nil)"},
		{name: "producer, empty service", build: producer(""), docs: good, wantIs: ErrInvalidArgument, wantText: "service name"},
		{name: "producer, service with a slash", build: producer("im/test"), docs: good, wantIs: ErrInvalidArgument, wantText: "service name"},
		{name: "consumer, empty service", build: consumer("", "g"), docs: good, wantIs: ErrInvalidArgument, wantText: "service name"},
		{name: "consumer, empty group id", build: consumer(cfgService, ""), docs: good, wantIs: ErrInvalidArgument, wantText: "group id"},
		{name: "consumer, group id with a space", build: consumer(cfgService, "my group"), docs: good, wantIs: ErrInvalidArgument, wantText: "group id"},
		{name: "producer, no documents", build: producer(cfgService), wantIs: ErrConfigNotFound, wantText: sk},
		{name: "consumer, no documents", build: consumer(cfgService, "g"), wantIs: ErrConfigNotFound, wantText: gk},
		{name: "producer, malformed document", build: producer(cfgService), docs: map[string]string{gk: `{"brokers": ["k:9092"]}`, sk: "{"}, wantIs: ErrInvalidConfig, wantKey: sk},
		{name: "consumer, invalid field", build: consumer(cfgService, "g"), docs: map[string]string{gk: `{"brokers": ["k:9092"], "consumer": {"concurrency": 0}}`}, wantIs: ErrInvalidConfig, wantKey: gk, wantText: "consumer.concurrency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, _ := cfgLogger()
			opts := tt.opts
			if opts == nil {
				opts = []Option{WithCoordProvider(cfgCenter(t, tt.docs))}
			}
			opts = append(opts, WithEnv(cfgEnv), WithLogger(logger))
			got, err := tt.build(t.Context(), opts...)
			if !errors.Is(err, tt.wantIs) {
				t.Fatalf("err = %v, want %v", err, tt.wantIs)
			}
			if v := reflect.ValueOf(got); got != nil && !v.IsNil() {
				t.Errorf("got %T %v with the error", got, got)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("message %q does not say %q", err, tt.wantText)
			}
			if tt.wantKey != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) || ce.Key != tt.wantKey {
					t.Errorf("err = %#v, want a *ConfigError for %s", err, tt.wantKey)
				}
			}
		})
	}
}

// TestProviderFromEnvironmentUnreachable: without WithCoordProvider mq dials
// etcd at $COORD_ENDPOINTS; when nothing answers it fails promptly with
// ErrNoCoordProvider and says how to fix it.
//
// It needs the etcd-backed coord.New (infra/coord/etcd.go).
func TestProviderFromEnvironmentUnreachable(t *testing.T) {
	tests := []struct {
		name    string
		build   func(ctx context.Context, opts ...Option) error
		timeout time.Duration // of ctx; 0: none, coord's dial timeout bounds the wait
		within  time.Duration
	}{
		{
			name: "producer, coord's dial timeout",
			build: func(ctx context.Context, opts ...Option) error {
				_, err := NewProducer(ctx, cfgService, opts...)
				return err
			},
			within: 15 * time.Second,
		},
		{
			name: "consumer, ctx deadline",
			build: func(ctx context.Context, opts ...Option) error {
				_, err := NewConsumer(ctx, cfgService, "g", opts...)
				return err
			},
			timeout: time.Second,
			within:  5 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvCoordEndpoints, "127.0.0.1:1")
			ctx := t.Context()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			logger, _ := cfgLogger()
			start := time.Now()
			err := tt.build(ctx, WithLogger(logger))
			elapsed := time.Since(start)
			if !errors.Is(err, ErrNoCoordProvider) {
				t.Fatalf("err = %v, want ErrNoCoordProvider", err)
			}
			for _, want := range []string{EnvCoordEndpoints, "127.0.0.1:1", "WithCoordProvider"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q does not mention %s", err, want)
				}
			}
			if elapsed > tt.within {
				t.Errorf("took %s, want under %s", elapsed, tt.within)
			}
		})
	}
}
