package mq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/coord"
	"sigs.k8s.io/yaml"
)

// configComponent is the last segment of mq's config keys.
const configComponent = "kafka"

// config is the schema of the config documents; docs/config.md is its
// contract. Business code never builds one: it is read from the config
// center, the service document's fields overriding the shared one's.
type config struct {
	Brokers     []string       `json:"brokers"`
	ClientID    string         `json:"client_id"`
	DialTimeout duration       `json:"dial_timeout"`
	Security    securityConfig `json:"security"`
	Producer    producerConfig `json:"producer"`
	Consumer    consumerConfig `json:"consumer"`
}

type securityConfig struct {
	TLS  tlsConfig  `json:"tls"`
	SASL saslConfig `json:"sasl"`
}

type tlsConfig struct {
	Enabled            bool   `json:"enabled"`
	CAFile             string `json:"ca_file"`
	CertFile           string `json:"cert_file"`
	KeyFile            string `json:"key_file"`
	ServerName         string `json:"server_name"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
}

type saslConfig struct {
	Mechanism string `json:"mechanism"`
	Username  string `json:"username"`
	Password  secret `json:"password"`
}

type producerConfig struct {
	Acks               string          `json:"acks"`
	Idempotent         bool            `json:"idempotent"`
	Compression        string          `json:"compression"`
	Linger             duration        `json:"linger"`
	BatchMaxBytes      int             `json:"batch_max_bytes"`
	MaxBufferedRecords int             `json:"max_buffered_records"`
	MaxMessageBytes    int             `json:"max_message_bytes"`
	DeliveryTimeout    duration        `json:"delivery_timeout"`
	CloseTimeout       duration        `json:"close_timeout"`
	Retry              json.RawMessage `json:"retry,omitempty"` // reserved
}

type consumerConfig struct {
	OffsetReset       string          `json:"offset_reset"`
	CommitInterval    duration        `json:"commit_interval"`
	SessionTimeout    duration        `json:"session_timeout"`
	RebalanceTimeout  duration        `json:"rebalance_timeout"`
	HeartbeatInterval duration        `json:"heartbeat_interval"`
	Concurrency       int             `json:"concurrency"`
	MaxPollRecords    int             `json:"max_poll_records"`
	PartitionBuffer   int             `json:"partition_buffer"`
	FetchMaxBytes     int             `json:"fetch_max_bytes"`
	CloseTimeout      duration        `json:"close_timeout"`
	Retry             json.RawMessage `json:"retry,omitempty"`       // reserved
	DeadLetter        json.RawMessage `json:"dead_letter,omitempty"` // reserved
}

// defaultConfig holds the defaults of docs/config.md.
func defaultConfig() config {
	return config{
		DialTimeout: duration(10 * time.Second),
		Producer: producerConfig{
			Acks:               "all",
			Idempotent:         true,
			Compression:        "snappy",
			Linger:             0,
			BatchMaxBytes:      1000012,
			MaxBufferedRecords: 10000,
			MaxMessageBytes:    1 << 20,
			DeliveryTimeout:    duration(2 * time.Minute),
			CloseTimeout:       duration(30 * time.Second),
		},
		Consumer: consumerConfig{
			OffsetReset:       "earliest",
			CommitInterval:    duration(time.Second),
			SessionTimeout:    duration(45 * time.Second),
			RebalanceTimeout:  duration(60 * time.Second),
			HeartbeatInterval: duration(3 * time.Second),
			Concurrency:       64,
			MaxPollRecords:    10000,
			PartitionBuffer:   2000,
			FetchMaxBytes:     50 << 20,
			CloseTimeout:      duration(30 * time.Second),
		},
	}
}

// ConfigError reports a malformed config document or an invalid field. It
// matches ErrInvalidConfig with errors.Is.
type ConfigError struct {
	// Key is the config center key at fault ("dev/im-gateway/kafka"), or
	// "(defaults)" when no document sets the field.
	Key string
	// Field is the dotted field path ("producer.acks"), empty when the
	// whole document is at fault.
	Field string
	// Reason says what is wrong.
	Reason string
}

func (e *ConfigError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("mq: invalid config %s: %s", e.Key, e.Reason)
	}
	return fmt.Sprintf("mq: invalid config %s: %s: %s", e.Key, e.Field, e.Reason)
}

// Unwrap makes a ConfigError match ErrInvalidConfig.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// duration is a time.Duration written as a Go duration string ("250ms", "30s").
type duration time.Duration

func (d duration) D() time.Duration { return time.Duration(d) }

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" { // unset, as encoding/json treats null for other types
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"500ms\" or \"30s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration string such as \"500ms\" or \"30s\", got %q", s)
	}
	*d = duration(v)
	return nil
}

// secret is a string that never prints.
type secret string

func (s secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

func (s secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// GoString keeps %#v from printing the secret too.
func (s secret) GoString() string { return s.String() }

func (s *secret) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return errors.New("want a string")
	}
	*s = secret(v)
	return nil
}

// configKeys returns the shared and the service document keys.
func configKeys(env, service string) (global, svc string) {
	return env + "/global/" + configComponent, env + "/" + service + "/" + configComponent
}

// loadConfig reads the shared and the service documents, merges them over
// the defaults and validates the result.
func loadConfig(ctx context.Context, cc coord.ConfigCenter, env, service string, logger clog.Logger) (*config, error) {
	gkey, skey := configKeys(env, service)
	gdoc, gok, err := readDocument(ctx, cc, gkey)
	if err != nil {
		return nil, err
	}
	sdoc, sok, err := readDocument(ctx, cc, skey)
	if err != nil {
		return nil, err
	}
	if !gok && !sok {
		return nil, fmt.Errorf("%w: neither %q nor %q is in the config center", ErrConfigNotFound, gkey, skey)
	}
	return parseConfig(gkey, gdoc, skey, sdoc, logger)
}

// readDocument returns the document under key as a JSON object, and whether
// the key exists.
func readDocument(ctx context.Context, cc coord.ConfigCenter, key string) (map[string]any, bool, error) {
	var raw string
	if err := cc.Get(ctx, key, &raw); err != nil {
		if errors.Is(err, coord.ErrNotFound) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("mq: read config %s: %w", key, err)
	}
	doc, err := decodeDocument(key, []byte(raw))
	return doc, true, err
}

// decodeDocument parses a JSON or YAML document into a JSON object.
func decodeDocument(key string, raw []byte) (map[string]any, error) {
	if len(strings.TrimSpace(string(raw))) == 0 {
		return map[string]any{}, nil
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, &ConfigError{Key: key, Reason: "malformed document (want a JSON or YAML object): " + err.Error()}
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, &ConfigError{Key: key, Reason: "malformed document (want a JSON or YAML object): " + strings.TrimPrefix(err.Error(), "json: ")}
	}
	if doc == nil {
		doc = map[string]any{}
	}
	return doc, nil
}

// parseConfig checks each document on its own (so that a type error names
// the document it is in), merges the service document over the shared one
// over the defaults, and validates the result.
func parseConfig(gkey string, gdoc map[string]any, skey string, sdoc map[string]any, logger clog.Logger) (*config, error) {
	for _, d := range []struct {
		key string
		doc map[string]any
	}{{gkey, gdoc}, {skey, sdoc}} {
		if d.doc == nil {
			continue
		}
		for _, f := range unknownFields(d.doc, reflect.TypeOf(config{}), "") {
			logger.Warn("mq: unknown config field ignored", clog.String("key", d.key), clog.String("field", f))
		}
		if err := decodeInto(d.key, d.doc, new(config)); err != nil {
			return nil, err
		}
	}
	merged := mergeMaps(gdoc, sdoc)
	cfg := defaultConfig()
	if err := decodeInto(skey, merged, &cfg); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.Key = "(defaults)"
			// A rule between two fields is blamed on the document that
			// set either, the service's first.
			for _, f := range relatedFields(ce.Field) {
				if hasPath(sdoc, f) {
					ce.Key = skey
					break
				}
			}
			if ce.Key == "(defaults)" {
				for _, f := range relatedFields(ce.Field) {
					if hasPath(gdoc, f) {
						ce.Key = gkey
						break
					}
				}
			}
		}
		return nil, err
	}
	return &cfg, nil
}

// relatedFields returns field and the fields whose values may have made it
// invalid.
func relatedFields(field string) []string {
	switch field {
	case "producer.idempotent":
		return []string{field, "producer.acks"}
	case "consumer.heartbeat_interval":
		return []string{field, "consumer.session_timeout"}
	}
	return []string{field}
}

func decodeInto(key string, doc map[string]any, dst *config) error {
	js, err := json.Marshal(doc)
	if err != nil {
		return &ConfigError{Key: key, Reason: err.Error()}
	}
	if err := json.Unmarshal(js, dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &ConfigError{Key: key, Field: te.Field, Reason: fmt.Sprintf("want %s, got %s", jsonKind(te.Type), te.Value)}
		}
		// A custom UnmarshalJSON failed; find the field by decoding field by field.
		field, reason := locateDecodeError(doc, reflect.TypeOf(config{}), "")
		if field == "" {
			reason = err.Error()
		}
		return &ConfigError{Key: key, Field: field, Reason: reason}
	}
	return nil
}

// locateDecodeError finds the first field of doc that does not decode into
// its type t, and why.
func locateDecodeError(doc map[string]any, t reflect.Type, prefix string) (string, string) {
	fields := jsonFields(t)
	names := make([]string, 0, len(doc))
	for name := range doc {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		ft, ok := fields[name]
		if !ok {
			continue
		}
		path := prefix + name
		if sub, ok := doc[name].(map[string]any); ok && ft.Kind() == reflect.Struct {
			if f, r := locateDecodeError(sub, ft, path+"."); f != "" {
				return f, r
			}
			continue
		}
		js, _ := json.Marshal(doc[name])
		if err := json.Unmarshal(js, reflect.New(ft).Interface()); err != nil {
			return path, strings.TrimPrefix(err.Error(), "json: ")
		}
	}
	return "", ""
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Slice:
		return "a list"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return t.String()
}

// jsonFields maps the JSON names of t's fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			m[name] = f.Type
		}
	}
	return m
}

// unknownFields lists the dotted paths in doc that the schema t lacks.
func unknownFields(doc map[string]any, t reflect.Type, prefix string) []string {
	fields := jsonFields(t)
	var out []string
	for name, v := range doc {
		ft, ok := fields[name]
		if !ok {
			out = append(out, prefix+name)
			continue
		}
		if sub, ok := v.(map[string]any); ok && ft.Kind() == reflect.Struct {
			out = append(out, unknownFields(sub, ft, prefix+name+".")...)
		}
	}
	sort.Strings(out)
	return out
}

// mergeMaps returns base with over's fields laid over it, objects merged
// field by field, anything else replaced.
func mergeMaps(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = mergeMaps(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// hasPath reports whether the dotted path is set in doc.
func hasPath(doc map[string]any, path string) bool {
	if doc == nil || path == "" {
		return false
	}
	head, rest, more := strings.Cut(path, ".")
	head, _, _ = strings.Cut(head, "[") // "brokers[0]" is set where "brokers" is
	v, ok := doc[head]
	if !ok {
		return false
	}
	if !more {
		return true
	}
	sub, ok := v.(map[string]any)
	return ok && hasPath(sub, rest)
}

const maxDuration = 24 * time.Hour

func (c *config) validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if len(c.Brokers) == 0 {
		return bad("brokers", "no brokers: list at least one host:port")
	}
	for i, b := range c.Brokers {
		if err := validBroker(b); err != nil {
			return bad(fmt.Sprintf("brokers[%d]", i), "%q: %v", b, err)
		}
	}
	durations := []struct {
		field    string
		d        duration
		min, max time.Duration
	}{
		{"dial_timeout", c.DialTimeout, time.Millisecond, 10 * time.Minute},
		{"producer.linger", c.Producer.Linger, 0, time.Minute},
		{"producer.delivery_timeout", c.Producer.DeliveryTimeout, time.Millisecond, maxDuration},
		{"producer.close_timeout", c.Producer.CloseTimeout, time.Millisecond, time.Hour},
		{"consumer.commit_interval", c.Consumer.CommitInterval, 10 * time.Millisecond, time.Hour},
		{"consumer.session_timeout", c.Consumer.SessionTimeout, 100 * time.Millisecond, time.Hour},
		{"consumer.rebalance_timeout", c.Consumer.RebalanceTimeout, 100 * time.Millisecond, time.Hour},
		{"consumer.heartbeat_interval", c.Consumer.HeartbeatInterval, 10 * time.Millisecond, time.Hour},
		{"consumer.close_timeout", c.Consumer.CloseTimeout, time.Millisecond, time.Hour},
	}
	for _, d := range durations {
		switch {
		case d.d < 0:
			return bad(d.field, "negative duration %s", d.d.D())
		case d.d.D() < d.min:
			return bad(d.field, "%s is below the minimum %s", d.d.D(), d.min)
		case d.d.D() > d.max:
			return bad(d.field, "%s is above the maximum %s", d.d.D(), d.max)
		}
	}
	if c.Consumer.HeartbeatInterval >= c.Consumer.SessionTimeout {
		return bad("consumer.heartbeat_interval", "%s must be below consumer.session_timeout (%s)", c.Consumer.HeartbeatInterval.D(), c.Consumer.SessionTimeout.D())
	}
	ints := []struct {
		field    string
		v        int
		min, max int
	}{
		{"producer.batch_max_bytes", c.Producer.BatchMaxBytes, 1 << 10, 1 << 30},
		{"producer.max_buffered_records", c.Producer.MaxBufferedRecords, 1, 10_000_000},
		{"producer.max_message_bytes", c.Producer.MaxMessageBytes, 1, 1 << 30},
		{"consumer.concurrency", c.Consumer.Concurrency, 1, 100_000},
		{"consumer.max_poll_records", c.Consumer.MaxPollRecords, 1, 10_000_000},
		{"consumer.partition_buffer", c.Consumer.PartitionBuffer, 1, 10_000_000},
		{"consumer.fetch_max_bytes", c.Consumer.FetchMaxBytes, 1 << 10, 1 << 30},
	}
	for _, n := range ints {
		if n.v < n.min || n.v > n.max {
			return bad(n.field, "%d is outside [%d, %d]", n.v, n.min, n.max)
		}
	}
	if !oneOf(c.Producer.Acks, "all", "leader", "none") {
		return bad("producer.acks", "%q is not one of all, leader, none", c.Producer.Acks)
	}
	if c.Producer.Idempotent && c.Producer.Acks != "all" {
		return bad("producer.idempotent", "idempotence needs producer.acks \"all\" (got %q); set idempotent: false to use it", c.Producer.Acks)
	}
	if !oneOf(c.Producer.Compression, "none", "gzip", "snappy", "lz4", "zstd") {
		return bad("producer.compression", "%q is not one of none, gzip, snappy, lz4, zstd", c.Producer.Compression)
	}
	if !oneOf(c.Consumer.OffsetReset, "earliest", "latest") {
		return bad("consumer.offset_reset", "%q is not one of earliest, latest", c.Consumer.OffsetReset)
	}
	if !oneOf(c.Security.SASL.Mechanism, "", "plain", "scram-sha-256", "scram-sha-512") {
		return bad("security.sasl.mechanism", "%q is not one of plain, scram-sha-256, scram-sha-512", c.Security.SASL.Mechanism)
	}
	if c.Security.SASL.Mechanism != "" && (c.Security.SASL.Username == "" || c.Security.SASL.Password == "") {
		return bad("security.sasl", "mechanism %q needs a username and a password", c.Security.SASL.Mechanism)
	}
	if t := c.Security.TLS; (t.CertFile == "") != (t.KeyFile == "") {
		return bad("security.tls", "cert_file and key_file go together")
	}
	for _, r := range []struct {
		field string
		v     json.RawMessage
	}{{"producer.retry", c.Producer.Retry}, {"consumer.retry", c.Consumer.Retry}, {"consumer.dead_letter", c.Consumer.DeadLetter}} {
		if len(r.v) > 0 && string(r.v) != "null" {
			return bad(r.field, "reserved for a later version of mq; remove it")
		}
	}
	return nil
}

func oneOf(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

// validBroker checks a host:port address.
func validBroker(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if host == "" || strings.ContainsAny(host, " /\t\n") {
		return errors.New("bad host")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return errors.New("port is not a number in [1, 65535]")
	}
	return nil
}

// logFields summarises the configuration for a log line, without secrets.
func (c *config) logFields() []clog.Field {
	return []clog.Field{
		clog.Strings("brokers", c.Brokers),
		clog.String("client_id", c.ClientID),
		clog.Bool("tls", c.Security.TLS.Enabled),
		clog.String("sasl", c.Security.SASL.Mechanism),
	}
}
