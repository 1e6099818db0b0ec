// Package fxtest holds the fxtest-based integration tests of mq.Module, on
// the in-process broker (or $MQ_TEST_BROKERS).
package fxtest

import (
	"context"
	"testing"

	"github.com/ceyewan/gochat/im-infra/clog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if err := clog.Init(context.Background(), &clog.Config{Level: "warn", Format: "console", Output: "stderr"}); err != nil {
		panic(err)
	}
	goleak.VerifyTestMain(m)
}
