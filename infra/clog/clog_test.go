package clog_test

import (
	"context"
	"testing"

	"github.com/ceyewan/gochat/im-infra/clog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestTraceIDThroughContext(t *testing.T) {
	ctx := clog.WithTraceID(context.Background(), "t-1")
	if got := clog.TraceIDFromContext(ctx); got != "t-1" {
		t.Fatalf("TraceIDFromContext = %q", got)
	}
	if got := clog.TraceIDFromContext(context.Background()); got != "" {
		t.Fatalf("TraceIDFromContext of a bare ctx = %q", got)
	}
	//lint:ignore SA1012 a nil ctx must not panic
	if got := clog.TraceIDFromContext(nil); got != "" { //nolint:staticcheck // nil on purpose
		t.Fatalf("TraceIDFromContext(nil) = %q", got)
	}
}

func TestWithContextAddsTraceID(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	clog.SetDefault(clog.NewFromZap(zap.New(core)))
	t.Cleanup(func() { clog.SetDefault(nil) })

	clog.WithContext(clog.WithTraceID(context.Background(), "t-2")).Info("with")
	clog.WithContext(context.Background()).Info("without")
	clog.Namespace("mq").With(clog.String("k", "v")).Warn("named")

	tests := []struct {
		give      string
		wantTrace any
	}{
		{"with", "t-2"},
		{"without", nil},
	}
	for _, tt := range tests {
		e := logs.FilterMessage(tt.give).All()
		if len(e) != 1 || e[0].ContextMap()["trace_id"] != tt.wantTrace {
			t.Errorf("%q: %v", tt.give, e)
		}
	}
	named := logs.FilterMessage("named").All()
	if len(named) != 1 || named[0].LoggerName != "mq" || named[0].ContextMap()["k"] != "v" {
		t.Errorf("named: %v", named)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		give *clog.Config
	}{
		{"level", &clog.Config{Level: "loud"}},
		{"format", &clog.Config{Level: "info", Format: "xml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := clog.New(context.Background(), tt.give); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}
