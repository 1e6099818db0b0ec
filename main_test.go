package mq_test

import (
	"context"
	"testing"

	"github.com/ceyewan/gochat/im-infra/clog"
	"go.uber.org/goleak"
)

// Every goroutine mq starts has an owner that stops it: after each test's
// Close, none may be left.
func TestMain(m *testing.M) {
	// mq logs through clog's default logger unless given one: keep test
	// output to warnings.
	if err := clog.Init(context.Background(), &clog.Config{Level: "warn", Format: "console", Output: "stderr"}); err != nil {
		panic(err)
	}
	goleak.VerifyTestMain(m)
}
